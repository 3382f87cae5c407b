"""FLOP counting: FFTs and Converse2D's filter counted under the documented convention."""
from __future__ import annotations

import math

import pytest
import torch
from mmengine.analysis import FlopAnalyzer
from torch import nn

from converse_plugin.engine.complexity import analyze, example_inputs, parse_input_size
from converse_plugin.ops import Converse2D
from converse_plugin.cli import flops as flops_cli


def nlogn(n: int) -> float:
    return n * math.log2(n)


@pytest.mark.parametrize('scale', [1, 2, 3])
def test_converse2d_fft_count_matches_formula(scale):
    b, c, size, pad = 2, 3, 12, 2
    layer = Converse2D(c, c, kernel_size=3, scale=scale, padding=pad)
    report = analyze(layer, (torch.rand(b, c, size, size), ))
    h = w = size + 2 * pad
    sh, sw = scale * h, scale * w
    # forward transform of the padded input: real (5/4 N log2 N) for s = 1, complex (5/2 N log2 N) for s > 1
    forward = (1.25 if scale == 1 else 2.5) * nlogn(h * w)
    inverse = 1.25 * nlogn(sh * sw)  # real inverse transform on the output grid
    assert report.by_operator['fft'] == pytest.approx(b * c * (forward + inverse), rel=1e-12)
    # spectrum x filter on the half spectrum, per image and channel; the kernel-only filter (its DFT-matrix
    # products, complex elementwise products) does not depend on the batch
    single = analyze(layer, (torch.rand(1, c, size, size), ))
    assert report.by_operator['complex_mul'] - single.by_operator['complex_mul'] == 4 * c * sh * (sw // 2 + 1)
    assert report.by_operator['matmul'] == single.by_operator['matmul'] > 0
    assert report.macs == pytest.approx(sum(report.by_operator.values()))
    assert report.by_type['Converse2D'].params == c * 9 + c  # weight (1, C, k, k) and bias (1, C, 1, 1)


class FFTNet(nn.Module):
    def forward(self, x):
        y = torch.fft.irfft2(torch.fft.rfft2(x), s=x.shape[-2:])
        return y + torch.fft.fft2(x).real + torch.fft.ifft(torch.fft.fft(x, dim=2), dim=2).real


def test_plain_fft_ops_counted():
    report = analyze(FFTNet(), (torch.rand(1, 2, 8, 16), ))
    n2 = 8 * 16
    expected = 2 * (1.25 * nlogn(n2) * 2 + 2.5 * nlogn(n2)) + 2 * 16 * 2 * 2.5 * nlogn(8)
    assert report.by_operator['fft'] == pytest.approx(expected, rel=1e-12)


def test_conv_only_net_matches_mmengine():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 5, padding=2), nn.Linear(20, 6))
    x = torch.rand(2, 3, 10, 20)
    report = analyze(net, (x, ))
    plain = FlopAnalyzer(net, (x, ))
    plain.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    assert report.macs == plain.total() == 2 * 10 * 20 * (8 * 27 + 4 * 8 * 25) + 2 * 4 * 10 * 20 * 6
    assert report.by_type['Conv2d'].params == 3 * 8 * 9 + 8 + 8 * 4 * 25 + 4
    assert sum(sum(r.macs.values()) for r in report.by_type.values()) == report.macs


def test_kernel_input_for_non_blind_networks():
    from converse_plugin.archs import ConverseUSRNet
    net = ConverseUSRNet(num_feat=8, num_block=1, num_iter=1)
    x, kernel = example_inputs(net, (1, 3, 16, 16))
    assert kernel.shape == (1, 1, 7, 7) and kernel.sum().item() == pytest.approx(1.0)


def test_cli(capsys):
    assert flops_cli.main(['--arch', 'DnCNN', '--kwargs', '{"num_in_ch": 1, "num_out_ch": 1, "num_feat": 8, '
                           '"num_conv": 3}', '--input', '1x1x16x16']) == 0
    out = capsys.readouterr().out
    macs = 16 * 16 * (8 * 9 + 8 * 8 * 9 + 8 * 9)
    assert f'MACs {macs / 1e3:.3f}K ({macs:,})' in out and '| Conv2d | 3 |' in out
    assert flops_cli.main(['--zoo', 'converse_dncnn', '--input', '1x1x32x32']) == 0
    assert '| Converse2D | 20 |' in capsys.readouterr().out
    assert flops_cli.main(['--arch', 'DnCNN', '--input', '1x1x16']) == 2
    assert 'input size must look like BxCxHxW' in capsys.readouterr().err
    assert flops_cli.main(['--arch', 'NoSuchNet']) == 2
    assert "unknown network type 'NoSuchNet'" in capsys.readouterr().err
    assert parse_input_size('1x3x64x48') == (1, 3, 64, 48)
