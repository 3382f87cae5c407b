"""Converse2D with torch features users combine it with: torch.compile, autocast, channels_last."""
from __future__ import annotations

import pytest
import torch

from converse_plugin import ConverseBlock, Converse2D


def test_compiled_block_equals_eager():
    torch.manual_seed(0)
    block = ConverseBlock(8, 8, kernel_size=3, padding=2).eval()
    x = torch.rand(2, 8, 20, 24)
    with torch.no_grad():
        eager = block(x)
        compiled = torch.compile(block)(x)
    assert compiled.shape == eager.shape
    assert torch.allclose(compiled, eager, atol=1e-5, rtol=1e-5), (compiled - eager).abs().max()


@pytest.mark.slow
def test_compiled_block_trains_like_eager():
    torch.manual_seed(0)
    block = ConverseBlock(4, 4, kernel_size=3, padding=2)
    x = torch.rand(1, 4, 16, 16)
    block(x).square().mean().backward()
    eager = [p.grad.clone() for p in block.parameters()]
    block.zero_grad()
    torch.compile(block)(x).square().mean().backward()
    for a, b in zip(eager, [p.grad for p in block.parameters()]):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('scale', [1, 2])
def test_bf16_autocast_computes_the_operator_in_float32(scale):
    torch.manual_seed(0)
    layer = Converse2D(4, 4, kernel_size=3, scale=scale, padding=2)
    x = torch.rand(2, 4, 12, 12)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = layer(x.to(torch.bfloat16))
    assert out.dtype == torch.float32
    ref = layer(x.to(torch.bfloat16).float())  # the same input, no autocast: identical float32 computation
    assert torch.allclose(out, ref, atol=1e-6)


def test_block_under_bf16_autocast_is_finite_and_close():
    torch.manual_seed(0)
    block = ConverseBlock(8, 8, kernel_size=3, padding=2)
    x = torch.rand(1, 8, 16, 16)
    ref = block(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = block(x)
    assert torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()  # bf16 convolutions around it


@pytest.mark.parametrize('scale', [1, 3])
def test_channels_last_input_gives_the_same_output(scale):
    torch.manual_seed(0)
    layer = Converse2D(6, 6, kernel_size=4, scale=scale, padding=3, padding_mode='reflect')
    x = torch.rand(2, 6, 10, 14)
    xc = x.to(memory_format=torch.channels_last)
    xg, xcg = x.clone().requires_grad_(), xc.clone().requires_grad_()
    out, outc = layer(xg), layer(xcg)
    assert torch.allclose(out, outc, atol=1e-6)
    out.sum().backward()
    outc.sum().backward()
    assert torch.allclose(xg.grad, xcg.grad, atol=1e-6)


def test_training_after_inference_mode_use():
    """Tables cached while a caller ran the operator under torch.inference_mode (spandrel does) must not
    break a later training step (inference tensors cannot be saved for backward)."""
    from converse_plugin.ops import Converse2D
    layer = Converse2D(3, 3, kernel_size=3, scale=2, padding=2)
    x = torch.rand(1, 3, 11, 13)
    with torch.inference_mode():
        layer.eval()(x)
    layer.train()
    out = layer(x.clone().requires_grad_(True))
    out.sum().backward()
    assert layer.weight.grad is not None and torch.isfinite(layer.weight.grad).all()
