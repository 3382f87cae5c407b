"""Converse2D and the ConverseNets on CUDA: the same numbers as on the CPU. Skipped without a GPU (run on
the project's GPU machine with ``pytest tests/ops/test_cuda.py``)."""
from __future__ import annotations

import itertools

import pytest
import torch
from basicsr.archs import build_network

from converse_plugin.ops import Converse2D
from tests.ops.oracle import oracle_module_forward

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
              pytest.mark.usefixtures('no_tf32')]  # full float32 arithmetic (conftest.py)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double().cpu() - b.double().cpu()).abs().max() / b.double().abs().max().cpu()).item()


@pytest.mark.parametrize('s,k,mode,dtype', list(itertools.product(
    (1, 2, 3), (2, 3, 7), ('circular', 'replicate', 'reflect', 'zeros'), (torch.float32, torch.float64))))
def test_cuda_matches_float64_oracle(s, k, mode, dtype):
    torch.manual_seed(7 * s + k)
    layer = Converse2D(4, 4, kernel_size=k, scale=s, padding=k - 1, padding_mode=mode).double()
    with torch.no_grad():  # as in test_oracle_equivalence: lam from ~1e-5 to ~1e-3, kernels not summing to 1
        layer.bias.copy_(torch.randn_like(layer.bias) * 2)
        layer.weight.copy_(torch.randn_like(layer.weight) * 0.3 + layer.weight)
    x = torch.randn(2, 4, 9, 11, dtype=torch.float64, requires_grad=True)
    ref = oracle_module_forward(layer, x)
    upstream = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, (x, layer.weight, layer.bias), upstream)

    cuda = Converse2D(4, 4, kernel_size=k, scale=s, padding=k - 1, padding_mode=mode).to('cuda', dtype)
    cuda.load_state_dict(layer.state_dict())
    xc = x.detach().to('cuda', dtype).requires_grad_(True)
    out = cuda(xc)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    assert out.device.type == 'cuda' and rel(out, ref) < tol
    grads = torch.autograd.grad(out, (xc, cuda.weight, cuda.bias), upstream.to('cuda', dtype))
    for name, g, r in zip(('input', 'weight', 'bias'), grads, ref_grads):
        # as in test_oracle_equivalence: the oracle itself loses digits in the float64 bias gradient
        bound = tol if (name != 'bias' or dtype == torch.float32) else 1e-6
        assert rel(g, r) < bound, name
    cuda.eval()
    with torch.no_grad():
        assert rel(cuda(xc), ref) < tol  # the cached-filter inference path


@pytest.mark.parametrize('s', (2, 3))
def test_cuda_filter_stays_float32_exact_with_cudnn_tf32_on(s):
    """PyTorch's default (cuDNN TF32 on) must not reach the s > 1 filter's small convolutions."""
    torch.backends.cudnn.allow_tf32 = True  # the autouse fixture restores it
    torch.manual_seed(s)
    layer = Converse2D(8, 8, kernel_size=3, scale=s, padding=2, padding_mode='replicate').double()
    x = torch.randn(1, 8, 10, 12, dtype=torch.float64)
    ref = oracle_module_forward(layer, x)
    cuda = Converse2D(8, 8, kernel_size=3, scale=s, padding=2, padding_mode='replicate').cuda()
    cuda.load_state_dict(layer.state_dict())
    assert rel(cuda(x.float().cuda()), ref) < 1e-4


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_cuda_autocast_runs_the_operator_in_float32(dtype):
    layer = Converse2D(8, 8, kernel_size=3, scale=2, padding=2).cuda()
    x = torch.rand(2, 8, 16, 16, device='cuda')
    with torch.autocast('cuda', dtype=dtype):
        out = layer(x.to(dtype))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert rel(out, layer(x.to(dtype).float())) < 1e-6


@pytest.mark.parametrize('name,kwargs', [
    ('ConverseDnCNN', {'num_feat': 16, 'num_block': 3}),
    ('ConverseMSRResNet', {'num_feat': 16, 'num_block': 2}),
    ('ConverseNet', {}),
])
def test_cuda_network_equals_cpu(name, kwargs):
    torch.manual_seed(0)
    net = build_network(dict(kwargs, type=name)).eval()
    channels = 1 if name == 'ConverseDnCNN' else 3
    x = torch.rand(1, channels, 40, 48)
    with torch.no_grad():
        cpu = net(x)
        gpu = net.cuda()(x.cuda())
    assert rel(gpu, cpu) < 1e-4


def test_cuda_usrnet_batch_of_kernels_equals_cpu():
    torch.manual_seed(0)
    net = build_network({'type': 'ConverseUSRNet'}).eval()
    x = torch.rand(2, 3, 32, 32)
    kernels = torch.rand(2, 1, 7, 7)
    kernels = kernels / kernels.sum(dim=(-2, -1), keepdim=True)
    with torch.no_grad():
        cpu = net(x, kernels)
        gpu = net.cuda()(x.cuda(), kernels.cuda())
    assert rel(gpu, cpu) < 1e-4
