"""The training-step benchmark's time breakdown (benchmarks/bench_train_step.py --breakdown)."""
import pytest
import torch

from benchmarks import bench_train_step as bts


@pytest.mark.parametrize('name, expected', [
    ('aten::mm', 'GEMM/conv'),
    ('aten::bmm', 'GEMM/conv'),
    ('aten::mkldnn_convolution', 'GEMM/conv'),
    ('aten::convolution_backward', 'GEMM/conv'),
    ('aten::_slow_conv2d_backward', 'GEMM/conv'),
    ('aten::_fft_r2c', 'FFT'),
    ('aten::_fft_c2r', 'FFT'),
    ('aten::copy_', 'copies'),
    ('## Call CompiledFxGraph fabc123 ##', 'fused kernels'),
    ('graph_0_cpp_fused_add_gelu_0', 'fused kernels'),
    ('aten::gelu', 'other'),
    ('converse::apply_filter', 'other'),
    ('aten::mul', 'other'),
])
def test_category(name, expected):
    assert bts.category(name) == expected


def test_breakdown_splits_a_step_by_category():
    a, b = torch.rand(256, 256), torch.rand(256, 256)
    x = torch.rand(8, 64, 64)

    def step():
        for _ in range(4):
            a @ b
        torch.fft.irfft2(torch.fft.rfft2(x), s=(64, 64))
        b.t().contiguous()
        torch.nn.functional.gelu(a)

    parts = bts.breakdown(step)
    assert set(parts) == set(bts.BREAKDOWN)
    for key in ('GEMM/conv', 'FFT', 'copies', 'other'):
        assert parts[key] > 0, (key, parts)
    assert parts['fused kernels'] == 0
