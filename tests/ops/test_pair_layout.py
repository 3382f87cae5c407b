"""The interleaved pair layout: two samples per complex image, kept interleaved between layers
(converse_plugin.ops.functional.to_pairs, converse2d with pairs=True; the operator's interleaved form), and its use by
run_blocks under torch.compile on the CPU."""
from __future__ import annotations

import pytest
import torch
from torch.library import opcheck

from converse_plugin.archs import converse_block
from converse_plugin.archs.converse_block import ConverseBlock, run_blocks
from converse_plugin.ops import Converse2D, converse2d, converse_filter_conj
from converse_plugin.ops import library
from converse_plugin.ops.functional import PADDING_MODES, from_pairs, is_exporting, pairs_layout_pays, to_pairs
from tests.parametrize import BACKENDS


def test_to_pairs_interleaves_samples_i_and_i_plus_half_and_from_pairs_inverts_it():
    x = torch.arange(4 * 2 * 3 * 5, dtype=torch.float32).view(4, 2, 3, 5)
    p = to_pairs(x)
    assert p.shape == (2, 2, 3, 10)
    assert torch.equal(p[..., 0::2], x[:2]) and torch.equal(p[..., 1::2], x[2:])
    assert torch.equal(torch.view_as_complex(p.view(2, 2, 3, 5, 2)), torch.complex(x[:2], x[2:]))
    assert torch.equal(from_pairs(p), x)


@pytest.mark.parametrize('padding_mode', PADDING_MODES)
@pytest.mark.parametrize('padding', (0, 3))
def test_converse2d_on_pairs_equals_converse2d_with_all_gradients(padding_mode, padding):
    """float64: outputs and the gradients of the input, kernel and lambda equal the plain layout's to 1e-12."""
    g = torch.Generator().manual_seed(padding)
    x = torch.randn(4, 3, 8, 9, dtype=torch.float64, generator=g)
    weight = torch.randn(1, 3, 5, 5, dtype=torch.float64, generator=g)
    bias = torch.randn(1, 3, 1, 1, dtype=torch.float64, generator=g)
    up = torch.randn(4, 3, 8, 9, dtype=torch.float64, generator=g)
    results = []
    for pairs in (False, True):
        xs, ws, bs = (t.clone().requires_grad_(True) for t in (x, weight, bias))
        lam = torch.sigmoid(bs) + 1e-2
        if pairs:
            out = from_pairs(converse2d(to_pairs(xs), ws, lam, 1, padding, padding_mode, pairs=True))
        else:
            out = converse2d(xs, ws, lam, 1, padding, padding_mode)
        results.append((out, *torch.autograd.grad(out, (xs, ws, bs), up)))
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-12)


def test_interleaved_form_opcheck_and_gradcheck():
    """Schema, fake tensors (same-shaped output, a spectrum of the input's size), autograd registration, and
    the analytic backward in float64."""
    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 3, 6, 14, generator=g, requires_grad=True)
    filt = converse_filter_conj(torch.randn(1, 3, 3, 3, generator=g), torch.full((1, 3, 1, 1), 0.1), 1, 6, 7,
                                full=True).detach().requires_grad_(True)
    assert library.is_interleaved(filt, 1, 14) and not library.is_paired(filt, 1, 14)
    opcheck(torch.ops.converse.apply_filter.default, (y, filt, 1))
    out, spec = torch.ops.converse.apply_filter(y, filt, 1)
    assert out.shape == y.shape and spec.numel() == y.numel()
    for need_y, need_h in ((True, True), (True, False), (False, True)):
        opcheck(torch.ops.converse.apply_filter_backward.default,
                (torch.randn_like(out), spec.detach(), filt.detach(), 1, need_y, need_h))
    y64, f64 = y.detach().double().requires_grad_(True), filt.detach().double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: torch.ops.converse.apply_filter(a, b, 1)[0], (y64, f64))


def test_interleaved_form_reads_any_strides():
    """A non-contiguous or odd-offset input is copied into a layout that views as complex, not an error."""
    g = torch.Generator().manual_seed(1)
    filt = converse_filter_conj(torch.rand(1, 2, 3, 3, generator=g), torch.full((1, 2, 1, 1), 0.1), 1, 5, 6, full=True)
    y = torch.randn(2, 2, 5, 12, generator=g)
    ref = torch.ops.converse.apply_filter(y, filt, 1)[0]
    odd = torch.randn(y.numel() + 1)[1:].view_as(y).copy_(y)
    transposed = y.transpose(-1, -2).contiguous().transpose(-1, -2)
    for variant in (odd, transposed):
        torch.testing.assert_close(torch.ops.converse.apply_filter(variant, filt, 1)[0], ref, rtol=0, atol=0)


def test_converse2d_on_pairs_rejects_what_it_cannot_pair():
    x = torch.zeros(2, 3, 8, 10)
    w, lam = torch.ones(1, 3, 3, 3), torch.ones(1, 3, 1, 1)
    with pytest.raises(ValueError, match=r'pair layout needs an input \(m, C, H, 2W\).*got input \(2, 3, 8, 9\)'):
        converse2d(x[..., :9], w, lam, pairs=True)  # odd width
    with pytest.raises(ValueError, match=r'\(1, C, k, k\) kernel.*kernel \(2, 3, 3, 3\)'):
        converse2d(x, torch.ones(2, 3, 3, 3), lam, pairs=True)  # per-sample kernels
    with pytest.raises(ValueError, match='scale 1.*scale 2'):
        converse2d(x, w, lam, 2, pairs=True)
    with pytest.raises(ValueError, match="impl 'real'"):
        converse2d(x, w, lam, impl='real', pairs=True)
    with pytest.raises(ValueError, match='scale 1'):
        Converse2D(3, 3, 3, scale=2).forward_pairs(x)
    with pytest.raises(ValueError, match='expects 3 channels'):
        Converse2D(3, 3, 3).forward_pairs(x[:, :2])
    with pytest.raises(ValueError, match="padding_mode 'reflect' needs padding < input size"):
        converse2d(x, w, lam, 1, 8, 'reflect', pairs=True)
    with pytest.raises(ValueError, match='filt has 10 columns for the pair layout'):
        converse2d(x, w, lam, 1, 0, filt=converse_filter_conj(w, lam, 1, 8, 10, full=True), pairs=True)


def test_forward_pairs_in_eval_uses_the_cached_filter_and_equals_forward():
    """Eager inference on the pair layout: the module's filter cache keyed by layout, the same result."""
    layer = Converse2D(3, 3, 5, padding=4, padding_mode='reflect').eval()
    x = torch.rand(4, 3, 9, 11, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        plain = layer(x)
        paired = from_pairs(layer.forward_pairs(to_pairs(x)))
        assert layer._cache[0][3] is True and layer._cache[1].shape[-1] == 11 + 8
    torch.testing.assert_close(paired, plain, rtol=1e-5, atol=1e-5)


def test_the_pair_layout_is_only_for_compiled_cpu_even_batches():
    x = torch.zeros(4, 3, 8, 8)
    assert not pairs_layout_pays(x)  # eager: hooks and callers would see the layout
    # a branch taken at trace time, guarded: recompiles (dynamic batch) must re-decide
    compiled = torch.compile(lambda t: t.sum() + (1 if pairs_layout_pays(t) else 0), fullgraph=True)
    torch._dynamo.reset()
    assert compiled(x).item() == 1.0
    assert compiled(torch.zeros(3, 3, 8, 8)).item() == 0.0  # odd: the per-layer paired form instead
    assert compiled(torch.zeros(6, 3, 8, 8)).item() == 1.0
    assert compiled(torch.zeros(1, 3, 8, 8)).item() == 0.0
    # the device rule is the paired form's (CPU only): test_custom_op.py::test_paired_form_is_chosen_where_it_pays


def test_is_exporting_only_under_torch_export():
    """torch 2.11's dynamo folds torch.compiler.is_exporting() to True in every compiled region, so that the
    pair layout never ran under torch.compile there; functional.is_exporting reads torch.export's flag."""

    class Probe(torch.nn.Module):
        def forward(self, t):
            return t + (1 if is_exporting() else 0)

    x = torch.zeros(2)
    assert Probe()(x).tolist() == [0.0, 0.0]
    torch._dynamo.reset()
    assert torch.compile(Probe(), fullgraph=True, backend='eager')(x).tolist() == [0.0, 0.0]
    assert torch.export.export(Probe(), (x, )).module()(x).tolist() == [1.0, 1.0]
    assert torch.compile(Probe(), fullgraph=True, backend='eager')(torch.zeros(3)).tolist() == [0.0] * 3


def _blocks(count: int = converse_block.PAIRS_MIN_BLOCKS, **kwargs):
    torch.manual_seed(0)
    return torch.nn.Sequential(*[ConverseBlock(4, 4, 3, 2, **kwargs) for _ in range(count)])


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('batch, checkpoint_blocks', [(2, False), (3, False), (4, True)])
def test_compiled_run_blocks_uses_pairs_for_even_batches_and_equals_eager(batch, checkpoint_blocks, backend,
                                                                           monkeypatch):
    """run_blocks under torch.compile: the pair layout for an even batch (counted at trace time), the
    per-layer form for an odd one; outputs and gradients equal eager ones. float64, so that 1e-10 separates a
    layout mistake from rounding (float32 differs by ~1e-5 relative in either layout: reordered sums)."""
    torch._dynamo.reset()
    blocks = _blocks().double()
    traced = []  # outside the blocks: a side effect inside checkpoint() would be a graph break
    monkeypatch.setattr(converse_block, 'to_pairs', lambda x: traced.append(x.shape) or to_pairs(x))
    x = torch.rand(batch, 4, 9, 10, generator=torch.Generator().manual_seed(batch), dtype=torch.float64)
    fn = torch.compile(lambda t: run_blocks(blocks, t, checkpoint_blocks), fullgraph=True, backend=backend)
    out = fn(x)
    assert traced == ([(batch, 4, 9, 10)] if batch % 2 == 0 else [])
    fn_short = torch.compile(lambda t: run_blocks(blocks[1:], t, checkpoint_blocks), fullgraph=True,
                             backend=backend)
    torch.testing.assert_close(fn_short(x), run_blocks(blocks[1:], x, checkpoint_blocks), rtol=1e-10, atol=1e-10)
    assert len(traced) == (batch % 2 == 0)  # a shorter run does not pay for the interleavings
    ref = run_blocks(blocks, x, checkpoint_blocks)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    grads = torch.autograd.grad(out.square().sum(), list(blocks.parameters()))
    ref_grads = torch.autograd.grad(ref.square().sum(), list(blocks.parameters()))
    for g, r in zip(grads, ref_grads):
        assert (g - r).abs().max().item() <= 1e-10 * max(1.0, r.abs().max().item())


@pytest.mark.slow
def test_blocks_with_hooks_or_other_operators_keep_the_plain_layout():
    """A hook inside a block would see the pair layout, and a depthwise convolution cannot work on it."""
    assert all(b.takes_pairs() for b in _blocks())
    assert not any(b.takes_pairs() for b in _blocks(operator='conv'))
    blocks = _blocks()
    seen = []
    blocks[1].conv1[0].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    assert blocks[0].takes_pairs() and not blocks[1].takes_pairs()
    torch._dynamo.reset()
    x = torch.rand(2, 4, 9, 10)
    torch.testing.assert_close(torch.compile(lambda t: run_blocks(blocks, t), fullgraph=True)(x),
                               run_blocks(blocks, x), rtol=1e-5, atol=1e-5)
    assert seen and all(s == (2, 4, 9, 10) for s in seen)  # eager and compiled calls saw the plain layout
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: None)
    try:
        assert not _blocks()[0].takes_pairs()  # a global hook sees every module
    finally:
        handle.remove()
    block = _blocks()[0]
    block.conv2[1].register_full_backward_hook(lambda m, gi, go: None)  # would see pair-layout gradients
    assert not block.takes_pairs()


def test_torch_export_with_a_dynamic_batch_keeps_the_plain_layout():
    """An exported program serves every batch size: its graph must not depend on the batch's parity."""
    blocks = _blocks()
    x = torch.rand(4, 4, 9, 10)
    program = torch.export.export(_Run(blocks), (x, ), dynamic_shapes=({0: torch.export.Dim('batch', min=1)}, ))
    for batch in (3, 4):
        y = torch.rand(batch, 4, 9, 10)
        torch.testing.assert_close(program.module()(y), run_blocks(blocks, y), rtol=1e-5, atol=1e-5)


class _Run(torch.nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.blocks = blocks

    def forward(self, x):
        return run_blocks(self.blocks, x)
