"""Converse2D against the mathematics of spec §1, with no reference code."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from converse_plugin.ops import Converse2D, converse2d

MODES = ('circular', 'replicate', 'reflect', 'zeros')


def circular_forward_model(x: torch.Tensor, kernel: torch.Tensor, s: int) -> torch.Tensor:
    """(X (*) K) down s with a true circular convolution, kernel centre at k // 2, written in the
    spatial domain (independent of the FFT code under test)."""
    k = kernel.shape[-1]
    c = k // 2
    out = torch.zeros_like(x)
    for a in range(k):
        for b in range(k):
            out = out + kernel[..., a:a + 1, b:b + 1] * torch.roll(x, shifts=(a - c, b - c), dims=(-2, -1))
    return out[..., ::s, ::s]


@pytest.mark.parametrize('s,k,mode', list(itertools.product((1, 2, 3), (2, 3, 5, 7), MODES)))
def test_normal_equations(s, k, mode):
    """X* minimises ||(X (*) K) down s - Y||^2 + lam ||X - X0||^2 on the padded grid: gradient ~ 0."""
    torch.manual_seed(s * 100 + k)
    p = k - 1
    x = torch.randn(2, 3, 8, 9, dtype=torch.float64)
    weight = torch.randn(1, 3, k, k, dtype=torch.float64)
    lam = torch.tensor([0.05, 0.3, 1.0], dtype=torch.float64).view(1, 3, 1, 1)
    out = converse2d(x, weight, lam, scale=s, padding=p, padding_mode=mode)
    assert out.shape == (2, 3, s * 8, s * 9)
    # rebuild the full solution on the padded grid to check optimality there
    y = F.pad(x, (p, ) * 4, mode='constant' if mode == 'zeros' else mode)
    x0 = F.interpolate(y, scale_factor=s, mode='nearest') if s > 1 else y
    full = converse2d(y, weight, lam, scale=s, padding=0)
    assert torch.allclose(full[..., p * s:-p * s, p * s:-p * s], out)
    xs = full.clone().requires_grad_(True)
    objective = 0.5 * (circular_forward_model(xs, weight, s) - y).pow(2).sum() \
        + 0.5 * (lam * (xs - x0).pow(2)).sum()
    grad, = torch.autograd.grad(objective, xs)
    assert grad.abs().max() < 1e-9 * max(1.0, y.abs().max().item())
    # and it is not trivially so: a perturbed X has a clearly non-zero gradient
    xs2 = (full + 0.01 * torch.randn_like(full)).requires_grad_(True)
    objective2 = 0.5 * (circular_forward_model(xs2, weight, s) - y).pow(2).sum() \
        + 0.5 * (lam * (xs2 - x0).pow(2)).sum()
    assert torch.autograd.grad(objective2, xs2)[0].abs().max() > 1e-4


@pytest.mark.parametrize('mode', MODES)
def test_delta_kernel_returns_input(mode):
    layer = Converse2D(4, 4, kernel_size=5, scale=1, padding=4, padding_mode=mode).double()
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[..., 2, 2] = 1.0
    x = torch.randn(2, 4, 10, 12, dtype=torch.float64)
    assert torch.allclose(layer(x), x, atol=1e-12)


def test_small_lambda_inverts_circular_convolution():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 16, 16, dtype=torch.float64)
    kernel = torch.tensor([[0.05, 0.1, 0.05], [0.1, 0.4, 0.1], [0.05, 0.1, 0.05]], dtype=torch.float64)
    kernel = kernel.expand(1, 2, 3, 3).contiguous()
    y = circular_forward_model(x, kernel, 1)
    lam = torch.full((1, 2, 1, 1), 1e-10, dtype=torch.float64)
    assert torch.allclose(converse2d(y, kernel, lam, padding=0), x, atol=1e-6)


@pytest.mark.parametrize('s', (1, 2, 3, 4))
@pytest.mark.parametrize('dtype', (torch.float32, torch.float64))
def test_shapes_dtypes_and_gradients(s, dtype):
    layer = Converse2D(3, 3, kernel_size=3, scale=s, padding=2).to(dtype)
    x = torch.randn(3, 3, 7, 6, dtype=dtype, requires_grad=True)
    out = layer(x)
    assert out.shape == (3, 3, 7 * s, 6 * s) and out.dtype == dtype
    out.square().mean().backward()
    for g in (x.grad, layer.weight.grad, layer.bias.grad):
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


def test_parameters_layout_and_init():
    layer = Converse2D(6, 6, kernel_size=4, scale=2)
    assert dict((n, tuple(p.shape)) for n, p in layer.named_parameters()) == {
        'weight': (1, 6, 4, 4), 'bias': (1, 6, 1, 1)}
    assert (layer.weight > 0).all()
    assert torch.allclose(layer.weight.sum(dim=(-2, -1)), torch.ones(1, 6))
    assert (layer.bias == 0).all()


def test_eval_cache_follows_weight_changes():
    layer = Converse2D(2, 2, kernel_size=3, padding=2).eval()
    x = torch.randn(1, 2, 8, 8)
    with torch.no_grad():
        first = layer(x)
        assert torch.equal(layer(x), first)  # cached
        layer.weight.mul_(2.0)
        changed = layer(x)
        layer.train()
    assert not torch.allclose(changed, first)
    assert torch.allclose(changed, layer(x), atol=1e-6)  # uncached path agrees with the cache


@pytest.mark.parametrize('dtype', (torch.bfloat16, ))
def test_autocast_cpu_runs_in_float32(dtype):
    layer = Converse2D(4, 4, kernel_size=3, padding=2)
    x = torch.randn(2, 4, 9, 9)
    ref = layer(x)
    with torch.autocast('cpu', dtype=dtype):
        out = layer(x.to(dtype))
    assert out.dtype == torch.float32
    assert torch.allclose(out, ref, atol=0.05 * ref.abs().max().item())
    out.sum().backward()
    assert torch.isfinite(layer.weight.grad).all()


def test_channels_last_input():
    layer = Converse2D(4, 4, kernel_size=3, padding=2, scale=2)
    x = torch.randn(2, 4, 9, 9)
    assert torch.allclose(layer(x.to(memory_format=torch.channels_last)), layer(x), atol=1e-6)


def test_per_sample_kernels():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    w = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    lam = torch.full((1, 3, 1, 1), 0.1, dtype=torch.float64)
    both = converse2d(x, w, lam, padding=2)
    for i in range(2):
        assert torch.allclose(both[i:i + 1], converse2d(x[i:i + 1], w[i:i + 1], lam, padding=2))


@pytest.mark.parametrize('kwargs,match', [
    (dict(in_channels=3, out_channels=4, kernel_size=3), 'in_channels .*3.* must equal out_channels .*4'),
    (dict(in_channels=3, out_channels=3, kernel_size=3, scale=0), 'scale must be an integer >= 1'),
    (dict(in_channels=3, out_channels=3, kernel_size=0), 'kernel_size must be'),
    (dict(in_channels=3, out_channels=3, kernel_size=3, padding_mode='mirror'), 'padding_mode must be one of'),
])
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Converse2D(**kwargs)


def test_forward_errors():
    layer = Converse2D(3, 3, kernel_size=3, padding=4, padding_mode='reflect')
    with pytest.raises(ValueError, match='4-D input'):
        layer(torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match='expects 3 channels'):
        layer(torch.randn(1, 2, 8, 8))
    with pytest.raises(ValueError, match=r"'reflect' needs padding < input size: padding 4 for an input of 3x8"):
        layer(torch.randn(1, 3, 3, 8))
    with pytest.raises(ValueError, match=r"'reflect'.*padding 4 for an input of 3x8"):
        layer.eval()(torch.randn(1, 3, 3, 8))
    circ = Converse2D(3, 3, kernel_size=3, padding=5, padding_mode='circular')
    with pytest.raises(ValueError, match=r"'circular'.*padding 5 for an input of 4x4"):
        circ(torch.randn(1, 3, 4, 4))
