"""Property-based tests of Converse2D over random shapes, scales, kernel sizes, padding modes and dtypes:
a finite output of the documented shape and dtype, or the documented ValueError, exactly when expected."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from converse_plugin.ops import Converse2D, converse2d, converse_lambda
from converse_plugin.ops.functional import PADDING_MODES

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


def expected_error(h: int, w: int, k: int, scale: int, padding: int, mode: str) -> str | None:
    """The documented ValueError for this configuration (a regex of its message), or None."""
    if mode == 'reflect' and padding > 0 and padding >= min(h, w):
        return "padding_mode 'reflect' needs padding < input size"
    if mode == 'circular' and padding > 0 and padding > min(h, w):
        return "padding_mode 'circular' needs padding <= input size"
    if k > scale * (min(h, w) + 2 * padding):
        return 'larger than the padded grid'
    return None


def _check(out: torch.Tensor, x: torch.Tensor, scale: int) -> None:
    b, c, h, w = x.shape
    assert out.shape == (b, c, scale * h, scale * w)
    assert out.dtype == (torch.float64 if x.dtype == torch.float64 else torch.float32)
    assert torch.isfinite(out).all()


configs = st.fixed_dictionaries({
    'b': st.integers(1, 2), 'c': st.integers(1, 3), 'h': st.integers(1, 10), 'w': st.integers(1, 10),
    'k': st.integers(1, 6), 'scale': st.integers(1, 3), 'padding': st.integers(0, 6),
    'mode': st.sampled_from(PADDING_MODES), 'dtype': st.sampled_from(DTYPES), 'seed': st.integers(0, 2**16),
})


@SETTINGS
@given(configs, st.booleans())
def test_module_output_is_finite_with_the_right_shape_or_the_documented_error(cfg, training):
    torch.manual_seed(cfg['seed'])
    layer = Converse2D(cfg['c'], cfg['c'], kernel_size=cfg['k'], scale=cfg['scale'], padding=cfg['padding'],
                       padding_mode=cfg['mode']).train(training)
    x = torch.randn(cfg['b'], cfg['c'], cfg['h'], cfg['w']).to(cfg['dtype'])
    error = expected_error(cfg['h'], cfg['w'], cfg['k'], cfg['scale'], cfg['padding'], cfg['mode'])
    if error is not None:
        with pytest.raises(ValueError, match=error):
            layer(x)
        return
    out = layer(x)
    _check(out, x, cfg['scale'])
    if training and cfg['dtype'] in (torch.float32, torch.float64):
        out.square().mean().backward()
        assert torch.isfinite(layer.weight.grad).all() and torch.isfinite(layer.bias.grad).all()


@SETTINGS
@given(configs, st.booleans(), st.floats(-20.0, 20.0))
def test_functional_with_per_sample_kernels(cfg, per_sample, bias):
    gen = torch.Generator().manual_seed(cfg['seed'])
    x = torch.randn(cfg['b'], cfg['c'], cfg['h'], cfg['w'], generator=gen).to(cfg['dtype'])
    weight = torch.randn(cfg['b'] if per_sample else 1, cfg['c'], cfg['k'], cfg['k'], generator=gen)
    lam = converse_lambda(torch.full((1, cfg['c'], 1, 1), bias), 1e-5)
    error = expected_error(cfg['h'], cfg['w'], cfg['k'], cfg['scale'], cfg['padding'], cfg['mode'])
    call = lambda: converse2d(x, weight, lam, cfg['scale'], cfg['padding'], cfg['mode'])  # noqa: E731
    if error is not None:
        with pytest.raises(ValueError, match=error):
            call()
        return
    _check(call(), x, cfg['scale'])


@SETTINGS
@given(st.sampled_from(['kernel_size', 'scale', 'padding', 'padding_mode', 'out_channels']),
       st.sampled_from([0, -1, 2.5, 'mirror', None]))
def test_invalid_constructor_arguments_raise_a_value_error_naming_them(name, bad):
    args = {'in_channels': 2, 'out_channels': 2, 'kernel_size': 3, 'scale': 1, 'padding': 2, 'padding_mode': 'zeros'}
    valid = {'kernel_size': lambda v: isinstance(v, int) and v >= 1, 'scale': lambda v: isinstance(v, int) and v >= 1,
             'padding': lambda v: isinstance(v, int) and v >= 0, 'padding_mode': lambda v: v in PADDING_MODES,
             'out_channels': lambda v: v == 2}
    if valid[name](bad):
        return
    args[name] = bad
    with pytest.raises(ValueError, match=name.split('_')[0] if name != 'out_channels' else 'depthwise'):
        Converse2D(**args)
