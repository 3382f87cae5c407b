"""The torch.ops.converse custom operators: opcheck (schema, fake tensors, autograd registration, AOT dispatch),
gradcheck of the analytic backward, the functional core on them, checkpoint_blocks, no BasicSR in ops/."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch.library import opcheck

from converse_plugin.ops import Converse2D, converse2d, converse_filter_conj
from converse_plugin.ops import library  # noqa: F401  (registers the operators)
from tests.parametrize import BACKENDS, DEVICES


def _args(scale: int, bk: int, dtype=torch.float64, batch: int = 2, size=(6, 7), full: bool = False):
    g = torch.Generator().manual_seed(10 * scale + bk)
    y = torch.randn(batch, 3, *size, dtype=dtype, generator=g, requires_grad=True)
    weight = torch.randn(bk, 3, 3, 3, dtype=dtype, generator=g)
    lam = torch.rand(1, 3, 1, 1, dtype=dtype, generator=g) + 0.05
    filt = converse_filter_conj(weight, lam, scale, *size, full=full).detach().requires_grad_(True)
    return y, filt


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('scale', (1, 2, 3))
@pytest.mark.parametrize('bk', (1, 2))
def test_opcheck_apply_filter(scale, bk, device):
    y, filt = (t.detach().to(device).requires_grad_(True) for t in _args(scale, bk, torch.float32))
    opcheck(torch.ops.converse.apply_filter.default, (y, filt, scale))
    grad_out = torch.randn(2, 3, 6 * scale, 7 * scale, device=device)
    spec = torch.ops.converse.apply_filter(y, filt, scale)[1].detach()
    for need_y, need_h in ((True, True), (True, False), (False, True)):
        opcheck(torch.ops.converse.apply_filter_backward.default,
                (grad_out, spec, filt.detach(), scale, need_y, need_h))


@pytest.mark.parametrize('scale', (1, 2, 3))
@pytest.mark.parametrize('bk', (1, 2))
def test_gradcheck_apply_filter(scale, bk):
    y, filt = _args(scale, bk, size=(4, 5))
    assert torch.autograd.gradcheck(lambda a, b: torch.ops.converse.apply_filter(a, b, scale)[0], (y, filt))


@pytest.mark.parametrize('batch', (2, 3))
def test_opcheck_and_gradcheck_paired_form(batch):
    """The paired form (a full-width filter; odd batches padded with a zero image): schema, fake tensors (its
    spectrum has another size), autograd registration and the analytic backward."""
    y, filt = _args(1, 1, torch.float32, batch=batch, full=True)
    assert library.is_paired(filt, 1, y.shape[-1])
    opcheck(torch.ops.converse.apply_filter.default, (y, filt, 1))
    out, spec = torch.ops.converse.apply_filter(y, filt, 1)
    assert spec.numel() == (batch + 1) // 2 * 3 * 6 * 7 * 2
    for need_y, need_h in ((True, True), (True, False), (False, True)):
        opcheck(torch.ops.converse.apply_filter_backward.default,
                (torch.randn_like(out), spec.detach(), filt.detach(), 1, need_y, need_h))
    y, filt = _args(1, 1, batch=batch, size=(4, 5), full=True)
    assert torch.autograd.gradcheck(lambda a, b: torch.ops.converse.apply_filter(a, b, 1)[0], (y, filt))


@pytest.mark.parametrize('batch', (2, 3, 5))
def test_paired_form_equals_the_real_transform_form(batch):
    """Same outputs and gradients (input, kernel, lambda) from the half filter (real FFTs, one image each)
    and the full one (complex FFTs, two images each), through the filter code, float64."""
    g = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 4, 9, 10, dtype=torch.float64, generator=g)
    weight = torch.randn(1, 4, 5, 5, dtype=torch.float64, generator=g)
    bias = torch.randn(1, 4, 1, 1, dtype=torch.float64, generator=g)
    up = torch.randn(batch, 4, 9, 10, dtype=torch.float64, generator=g)
    results = []
    for full in (False, True):
        xs, ws, bs = (t.clone().requires_grad_(True) for t in (x, weight, bias))
        filt = converse_filter_conj(ws, torch.sigmoid(bs) + 1e-3, 1, 9, 10, full=full)
        assert library.is_paired(filt, 1, 10) == full
        out = torch.ops.converse.apply_filter(xs, filt, 1)[0]
        results.append((out, *torch.autograd.grad(out, (xs, ws, bs), up)))
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-11)


def test_paired_form_is_chosen_where_it_pays():
    from converse_plugin.ops.functional import paired_form_pays
    shared, per_sample = torch.ones(1, 3, 3, 3), torch.ones(4, 3, 3, 3)
    assert paired_form_pays(torch.zeros(2, 3, 8, 8), shared, 1)
    assert not paired_form_pays(torch.zeros(1, 3, 8, 8), shared, 1)  # one image: a real transform is cheaper
    assert not paired_form_pays(torch.zeros(4, 3, 8, 8), per_sample, 1)  # two kernels per pair
    assert not paired_form_pays(torch.zeros(4, 3, 8, 8), shared, 2)
    assert not paired_form_pays(torch.zeros(4, 3, 8, 8, device='meta'), shared, 1)  # CPU only


@pytest.mark.parametrize('scale', (1, 2))
def test_frozen_kernel_and_frozen_input_paths(scale):
    """Only the needed gradient is computed (the backward op's need_* flags), and it equals the full one."""
    torch.manual_seed(scale)
    layer = Converse2D(3, 3, 3, scale=scale).double()
    x = torch.randn(3, 3, 8, 9, dtype=torch.float64, requires_grad=True)  # batch 3: the paired form for s = 1
    up = torch.randn(3, 3, 8 * scale, 9 * scale, dtype=torch.float64)
    gx, gw = torch.autograd.grad(layer(x), (x, layer.weight), up)
    layer.requires_grad_(False)
    gx_only, = torch.autograd.grad(layer(x), x, up)
    layer.requires_grad_(True)
    gw_only, = torch.autograd.grad(layer(x.detach()), layer.weight, up)
    torch.testing.assert_close(gx_only, gx, rtol=0, atol=1e-12)
    torch.testing.assert_close(gw_only, gw, rtol=0, atol=1e-12)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('scale,mode', [(1, 'circular'), (2, 'replicate'), (3, 'reflect'), (1, 'zeros'),
                                        (2, 'circular'), (1, 'replicate')])
def test_layer_compiles_fullgraph_with_dynamic_shapes(scale, mode, backend, device):
    """Every padding mode (compiled code pads with gathers and concatenations, eager with F.pad)."""
    torch._dynamo.reset()
    torch.manual_seed(scale)
    layer = Converse2D(4, 4, 3, scale=scale, padding=2, padding_mode=mode).to(device)
    compiled = torch.compile(layer, fullgraph=True, dynamic=True, backend=backend)
    for size in ((9, 10), (12, 7)):
        x = torch.rand(2, 4, *size, requires_grad=True, device=device)
        out = compiled(x)
        ref = layer(x)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        g, = torch.autograd.grad(out.sum(), x)
        r, = torch.autograd.grad(ref.sum(), x)
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)


def test_complex_filter_argument_is_accepted():
    """``filt`` may be converse_filter's complex G (public API) or the operator's conj(G) pairs."""
    from converse_plugin.ops import converse_filter
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    w = torch.randn(1, 3, 3, 3, dtype=torch.float64)
    lam = torch.full((1, 3, 1, 1), 0.1, dtype=torch.float64)
    ref = converse2d(x, w, lam, scale=2, padding=2)
    for filt in (converse_filter(w, lam, 2, 12, 12), converse_filter_conj(w, lam, 2, 12, 12)):
        torch.testing.assert_close(converse2d(x, w, lam, scale=2, padding=2, filt=filt), ref, rtol=0, atol=1e-12)


def test_impl_argument_is_checked():
    x = torch.randn(1, 2, 6, 6)
    with pytest.raises(ValueError, match="impl must be one of \\('fft', 'real'\\), got 'complex'"):
        converse2d(x, torch.ones(1, 2, 3, 3) / 9, torch.full((1, 2, 1, 1), 0.1), impl='complex')


def test_ops_imports_no_basicsr():
    code = ('import sys, converse_plugin.ops, converse_plugin.ops.export, converse_plugin.ops.library; '
            'bad = sorted(m for m in sys.modules if m == "basicsr" or m.startswith("basicsr.") '
            'or (m.startswith("converse_plugin") and not m.startswith("converse_plugin.ops") '
            'and m != "converse_plugin")); print(bad)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    # converse_plugin/__init__ itself may still pull in the rest; ops/ must not, once it stops doing so
    init_pulls = subprocess.run([sys.executable, '-c', 'import sys, converse_plugin; print("basicsr" in sys.modules)'],
                                capture_output=True, text=True, check=True).stdout.strip() == 'True'
    if init_pulls:
        pytest.skip('converse_plugin/__init__.py imports BasicSR itself; checked ops/ sources instead')
    assert out.strip() == '[]', out


def test_ops_sources_import_only_torch_and_ops():
    import ast
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[2] / 'converse_plugin' / 'ops'
    for path in root.glob('*.py'):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ''] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                top = name.split('.')[0]
                assert top in ('torch', '__future__', 'functools', 'math', 'contextlib', 'collections',
                               'typing') or name.startswith('converse_plugin.ops'), f'{path.name} imports {name}'


def test_inference_cache_keeps_one_filter_per_form():
    """Eval mode caches the filter; a batch of one (real transforms) and of three (paired form) each get
    the right width and the same numbers as the uncached computation."""
    torch.manual_seed(0)
    layer = Converse2D(3, 3, 5, padding=4).double().eval()
    x = torch.randn(3, 3, 10, 11, dtype=torch.float64)
    with torch.no_grad():
        for batch, width in ((1, 19 // 2 + 1), (3, 19), (1, 19 // 2 + 1)):
            out = layer(x[:batch])
            assert layer._cache[1].shape[-1] == width
            ref = converse2d(x[:batch], layer.weight, torch.sigmoid(layer.bias - 9) + layer.eps, 1, 4)
            torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


def test_a_full_filter_where_the_paired_form_cannot_run_is_a_clear_error():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    lam = torch.full((1, 3, 1, 1), 0.1, dtype=torch.float64)
    w2 = torch.randn(2, 3, 3, 3, dtype=torch.float64)  # per-sample kernels: two filters per pair
    with pytest.raises(ValueError, match=r'filt has 12 columns .* expected 7 \(converse_filter_conj\), or 12'):
        converse2d(x, w2, lam, padding=2, filt=converse_filter_conj(w2, lam, 1, 12, 12, full=True))
    w1 = w2[:1]
    with pytest.raises(ValueError, match='at scale 2: expected 13'):
        converse2d(x, w1, lam, scale=2, padding=2, filt=converse_filter_conj(w1, lam, 2, 12, 12, full=True))
    full = converse2d(x, w1, lam, padding=2, filt=converse_filter_conj(w1, lam, 1, 12, 12, full=True))
    torch.testing.assert_close(full, converse2d(x, w1, lam, padding=2), rtol=0, atol=1e-12)
