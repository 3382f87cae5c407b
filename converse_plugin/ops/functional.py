"""Reverse convolution (Converse2D), functional core. No BasicSR imports (nothing outside torch and this
package): usable in any PyTorch code.

Notation (spec §1): per channel, X* = argmin_X ||Y - (X (*) K)|s||^2 + lam ||X - X0||^2 with circular
boundary on the padded grid, X0 the nearest-neighbour upsampling of Y (Y itself for s = 1).

Everything that depends only on the kernel, lam and the grid collapses into one transfer function G
(derivation in ``docs``-style comments below), so that the whole operator is

    X* = irfft2( tile_s(FFT(Y)) * G ),    G = Bhat + conj(F_K) * tile_s( (1 - E) / (D + lam) )

with F_K the kernel's optical transfer function on the (sH, sW) grid, Bhat the transform of the s x s
box that nearest-neighbour upsampling applies, D = mean_blocks(|F_K|^2), E = mean_blocks(F_K * Bhat).
For s = 1 this is G = (conj(F_K) + lam) / (|F_K|^2 + lam). Derivation: with L = FFT(Y up) (conj F_K +
lam Bhat) and FFT(Y up) the small spectrum tiled, (F_K L)|s = FFT(Y) (D + lam E); substituting into
the spec's closed form and simplifying gives the expression for G, without any division by lam.

Two formulations of the same function, chosen by the ``impl`` argument of :func:`converse2d`:

- ``'fft'`` (default): the filter G is computed from k x k kernels by two small DFT matrix products (no
  batch dimension, ordinary differentiable torch code that torch.compile fuses); applying it to the batch is
  the custom operator ``torch.ops.converse.apply_filter`` (:mod:`converse_plugin.ops.library`) with its
  analytic backward, so the network compiles with ``fullgraph=True`` and dynamic shapes.
- ``'real'``: the export form. Every complex quantity is a pair of real tensors; only the forward FFT of
  the input and the inverse see complex values, through ``view_as_real``/``view_as_complex`` (ONNX ``DFT``);
  the DFT tables accept symbolic sizes; it computes in ``compute_dtype`` (float64 makes onnxruntime's direct
  DFT as accurate as PyTorch's float32 FFT). See :mod:`converse_plugin.ops.export`.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from converse_plugin.ops import library as _library  # noqa: F401  (registers torch.ops.converse.*)
from converse_plugin.ops.library import apply_filter_impl, is_interleaved, is_paired, pairable

IMPLS = ('fft', 'real')
PADDING_MODES = ('circular', 'replicate', 'reflect', 'zeros')


def converse_lambda(bias: torch.Tensor, eps: float) -> torch.Tensor:
    """lam_c = sigmoid(b_c - 9) + eps, the per-channel regularisation weight of spec §1."""
    return torch.sigmoid(bias - 9.0) + eps


def result_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The operator's output dtype (and that of its 'fft' computation): float64 if the input or the kernel is
    float64, else float32, whatever autocast says."""
    return torch.float64 if torch.float64 in (x.dtype, weight.dtype) else torch.float32


def check_padding(height: int, width: int, padding: int, padding_mode: str) -> None:
    """Raise ValueError when ``padding_mode`` cannot pad an (height, width) input by ``padding``."""
    if padding_mode not in PADDING_MODES:
        raise ValueError(f'padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}')
    if padding < 0:
        raise ValueError(f'padding must be >= 0, got {padding}')
    if padding == 0:
        return
    if padding_mode == 'reflect' and (padding >= height or padding >= width):
        raise ValueError(f"padding_mode 'reflect' needs padding < input size: padding {padding} "
                         f'for an input of {height}x{width} (needs height and width >= {padding + 1})')
    if padding_mode == 'circular' and (padding > height or padding > width):
        raise ValueError(f"padding_mode 'circular' needs padding <= input size: padding {padding} "
                         f'for an input of {height}x{width} (needs height and width >= {padding})')


def pad_input(x: torch.Tensor, padding: int, padding_mode: str, pairs: bool = False) -> torch.Tensor:
    """Pad (B, C, H, W) by ``padding`` on every side with ``padding_mode`` (checked first). ``pairs``: x is
    the interleaved pair layout (m, C, H, 2 W) of :func:`to_pairs`, padded as the images it holds."""
    step = 2 if pairs else 1  # real columns per pixel
    check_padding(x.shape[-2], x.shape[-1] // step, padding, padding_mode)
    if padding == 0:
        return x
    mode = 'constant' if padding_mode == 'zeros' else padding_mode
    if mode in ('replicate', 'reflect') and (pairs or torch.compiler.is_compiling()):
        # as a gather: inductor may lay the input out channels-last, and the CPU backward of aten's
        # replication/reflection pads then returns a channels-last gradient where their meta function
        # promises a contiguous one (a stride assertion at run time); a gather also fuses
        return x.index_select(-2, _pad_index(x.shape[-2], padding, mode, x.device)).index_select(
            -1, _pad_index(x.shape[-1] // step, padding, mode, x.device, step))
    cols = step * padding  # the pair layout's circular and zero pads are those of its real columns
    if mode == 'circular' and torch.compiler.is_compiling():
        # as two concatenations: inductor lowers aten's circular pad to one loop whose every element picks
        # its source region through masked loads (recomputing what is fused before it per region); a
        # concatenation writes each region with plain loads (2x faster forward and backward on the CPU)
        x = torch.cat((x[..., -padding:, :], x, x[..., :padding, :]), dim=-2)
        return torch.cat((x[..., -cols:], x, x[..., :cols]), dim=-1)
    return F.pad(x, (cols, cols, padding, padding), mode=mode)


def _pad_index(n: int, padding: int, mode: str, device: torch.device, step: int = 1) -> torch.Tensor:
    """Source index of each of the n + 2 p padded positions ('replicate' or 'reflect'); ``step`` = 2: of each
    real column of the pair layout (both members of a pixel's pair)."""
    i = torch.arange(-padding, n + padding, device=device)
    if mode == 'replicate':
        i = i.clamp(0, n - 1)
    else:
        i = i.abs()
        i = torch.where(i > n - 1, 2 * (n - 1) - i, i)
    return i if step == 1 else (step * i[:, None] + torch.arange(step, device=device)).flatten()


# ----------------------------------------------------------------------------------------------------
# The interleaved pair layout (the CPU's fastest form for runs of s = 1 layers under torch.compile)
# ----------------------------------------------------------------------------------------------------
def to_pairs(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W), B even -> (B / 2, C, H, 2 W): samples i and i + B / 2 interleaved pixel by pixel, the
    real and imaginary parts of one complex image. Per-pixel layers (1x1 convolutions, channel norms,
    activations) treat it as a batch of B / 2 images of width 2 W; :func:`converse2d` with ``pairs=True``
    transforms it without packing or unpacking pairs (see :mod:`converse_plugin.ops.library`)."""
    b, c, h, w = x.shape
    return x.view(2, b // 2, c, h, w).permute(1, 2, 3, 4, 0).reshape(b // 2, c, h, 2 * w)


def from_pairs(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_pairs`: (m, C, H, 2 W) -> (2 m, C, H, W)."""
    m, c, h, w2 = x.shape
    return x.view(m, c, h, w2 // 2, 2).permute(4, 0, 1, 2, 3).reshape(2 * m, c, h, w2 // 2)


def is_exporting() -> bool:
    """Whether torch.export is tracing: False in eager mode and under torch.compile. Reads the flag torch.export
    sets before it traces: on some torch releases (2.11 among them; 2.14.1 is fixed) dynamo folds
    ``torch.compiler.is_exporting()`` to True in every compiled region. Torch older than the flag: its function."""
    flag = getattr(torch.compiler, '_is_exporting_flag', None)
    return torch.compiler.is_exporting() if flag is None else flag


def pairs_layout_pays(x: torch.Tensor) -> bool:
    """Whether a run of s = 1 layers should work on :func:`to_pairs` of ``x``: the paired form pays on this
    device and batch (:func:`paired_form_pays`), the batch is even, and torch.compile is tracing (in eager
    mode, callers would see the layout; under compile the caller decides for the layers in between, e.g.
    ``ConverseBlock.takes_pairs`` keeps blocks with hooks out), not torch.export (a program for any batch size
    must not depend on its parity)."""
    return (torch.compiler.is_compiling() and not is_exporting() and x.shape[0] % 2 == 0
            and _pairs_pay(x))


# ----------------------------------------------------------------------------------------------------
# The transfer function G (kernel-only; no batch of images involved)
# ----------------------------------------------------------------------------------------------------
Pair = tuple[torch.Tensor, torch.Tensor]  # (real part, imaginary part) of a complex quantity


def _dft_tables(n: int, rows: int, offset: int, count: int, dtype: torch.dtype, device: torch.device) -> Pair:
    u = torch.arange(rows, device=device, dtype=torch.int64)[:, None]
    a = torch.arange(count, device=device, dtype=torch.int64)[None, :] - offset
    phase = torch.remainder(u * a, n).to(torch.float64) * (2.0 * math.pi / n)  # exact: integer mod n first
    return torch.cos(phase).to(dtype), torch.sin(phase).to(dtype)


@functools.lru_cache(maxsize=256)
def _dft_cos_sin_cached(n: int, rows: int, offset: int, count: int, dtype: torch.dtype,
                        device: torch.device) -> Pair:
    # built outside inference mode: a table first made under torch.inference_mode (e.g. by a caller such as
    # spandrel) would be an inference tensor, which later training steps cannot save for backward
    with torch.inference_mode(False), torch.no_grad():
        return _dft_tables(n, rows, offset, count, dtype, device)


def dft_cos_sin(n: int, rows: int, offset: int, count: int, like: torch.Tensor) -> Pair:
    """cos and sin of theta[u, a] = 2 pi u (a - offset) / n, each (rows, count), in ``like``'s dtype and
    device: the DFT matrix is exp(-i theta) = cos - i sin. Cached in eager mode (the tables depend only on
    the sizes); under torch.compile computed in the graph (the sizes may be symbolic; inductor fuses it)."""
    if torch.compiler.is_compiling():
        return _dft_tables(n, rows, offset, count, like.dtype, like.device)
    return _dft_cos_sin_cached(n, rows, offset, count, like.dtype, like.device)


def dft_cos_sin_symbolic(n: int, rows: int, offset: int, count: int, like: torch.Tensor) -> Pair:
    """:func:`dft_cos_sin` for the ONNX exporter: ``n`` and ``rows`` may be symbolic (traced sizes); n enters
    as a tensor and the phase is reduced modulo n in integers before the conversion to floating point, so it
    stays exact for any grid size."""
    u = torch.arange(rows, device=like.device, dtype=torch.int64)[:, None]
    a = torch.arange(count, device=like.device, dtype=torch.int64)[None, :] - offset
    ua = u * a
    nt = torch.ones_like(ua[:1, :1]) * n  # n as a tensor: traces for a symbolic n
    phase = (ua - torch.div(ua, nt, rounding_mode='floor') * nt).to(like.dtype) * (2.0 * math.pi) / nt.to(like.dtype)
    return torch.cos(phase), torch.sin(phase)


def _dft2_pair(x: torch.Tensor, height: int, width: int, off_h: int, off_w: int, half: bool = False,
               cos_sin=dft_cos_sin) -> Pair:
    """The 2-D DFT on a (height, width) grid of small arrays x (..., m, n) whose entry (a, b) sits at
    position (a - off_h, b - off_w) (wrapping around the grid), as (real, imag), in real matmuls:
    (Ch - i Sh) x (Cw - i Sw)^T.

    With A = x Cw^T and B = x Sw^T (small, m x W'), real = Ch A - Sh B and imag = -(Ch B + Sh A), so two
    matmuls with the same [Ch, Sh] give both as whole tensors (no slices of large tensors: their backward
    would allocate and zero-fill, and under torch.compile a saved view of symbolic strides cannot be laid out).
    ``half``: only the first width // 2 + 1 columns (the rfft2 layout).
    """
    m, n = x.shape[-2:]
    ch, sh = cos_sin(height, height, off_h, m, x)
    cw, sw = cos_sin(width, width // 2 + 1 if half else width, off_w, n, x)
    cols = cw.shape[0]
    ab = x @ torch.cat((cw, sw)).transpose(0, 1)  # (..., m, 2 W'): A and B from one matmul
    a, b = ab[..., :cols], ab[..., cols:]
    lhs, nb = torch.cat((ch, sh), dim=1), -b
    return lhs @ torch.cat((a, nb), dim=-2), lhs @ torch.cat((nb, -a), dim=-2)  # (..., H, W') each


def kernel_otf_pair(weight: torch.Tensor, height: int, width: int, half: bool = False,
                    cos_sin=dft_cos_sin) -> Pair:
    """psf2otf as (real, imag): the DFT of each k x k kernel zero-padded to (height, width) with its centre
    (k // 2, k // 2) rolled to (0, 0). See :func:`_dft2_pair`.

    Args:
        weight: (..., k, k) real kernels.
        half: only the first width // 2 + 1 columns (the rfft2 layout).
        cos_sin: the table function (:func:`dft_cos_sin`; the ONNX export passes a traceable one).
    Returns:
        two (..., height, width or width // 2 + 1) real tensors.
    """
    kh, kw = weight.shape[-2:]
    if kh > height or kw > width:
        raise ValueError(f'kernel {kh}x{kw} is larger than the padded grid {height}x{width}; '
                         'use a larger input or padding')
    return _dft2_pair(weight, height, width, kh // 2, kw // 2, half, cos_sin)


def kernel_otf(weight: torch.Tensor, height: int, width: int, half: bool = False) -> torch.Tensor:
    """psf2otf, complex: (..., k, k) -> (..., height, width or width // 2 + 1). See :func:`kernel_otf_pair`."""
    return torch.complex(*kernel_otf_pair(weight, height, width, half))


def _depthwise_correlate(x: torch.Tensor, kernel: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """Cross-correlation of each (..., m, n) array, zero-padded by (pad_h, pad_w), with its own kernel
    (same leading shape): out[..., i, j] = sum_ab xpad[..., i + a, j + b] kernel[..., a, b].

    Patches and a product over them, not a grouped convolution: these arrays are kernel-sized, and a
    convolution in the graph makes inductor prefer channels-last layouts for its neighbours, whose symbolic
    strides it then cannot order under dynamic shapes (ConverseUSRNet with sf > 1 failed to compile). Plain
    products and sums are exact float32 on GPUs too (cuDNN's TF32 convolutions, on by default, were not)."""
    lead, (m, n), (kh, kw) = x.shape[:-2], x.shape[-2:], kernel.shape[-2:]
    flat = F.pad(x.reshape(-1, 1, m, n), (pad_w, pad_w, pad_h, pad_h))
    patches = F.unfold(flat, (kh, kw))  # (N, kh * kw, L)
    out = (patches * kernel.reshape(-1, kh * kw, 1)).sum(1)
    return out.reshape(*lead, m + 2 * pad_h - kh + 1, n + 2 * pad_w - kw + 1)


def _aliased_spectra(weight: torch.Tensor, scale: int, height: int, width: int, cos_sin=dft_cos_sin) -> tuple:
    """D = mean_blocks(|F_K|^2) (real) and E = mean_blocks(F_K Bhat) (real, imag) on the small (h, w) grid.

    The mean of a spectrum over its s x s aliases (u + a h, v + b w) is the small-grid DFT of the spatial
    signal decimated by s. |F_K|^2 is the transform of the kernel's autocorrelation R (support 2k - 1,
    centred), F_K Bhat that of the kernel convolved with the s x s box at [0, s)^2 (support k + s - 1,
    origin at k // 2). So D and E come from k-sized arrays, with no output-grid intermediates.
    """
    kh, kw = weight.shape[-2:]
    auto = _depthwise_correlate(weight, weight, kh - 1, kw - 1)  # R, (2k - 1) x (2k - 1)
    # R[d] sits at index d + k - 1; keep d = s m: first index (k - 1) mod s, position offset (k - 1) // s
    r0 = auto[..., (kh - 1) % scale::scale, (kw - 1) % scale::scale]
    d_real, _ = _dft2_pair(r0, height, width, (kh - 1) // scale, (kw - 1) // scale, cos_sin=cos_sin)
    box = torch.ones(scale, scale, dtype=weight.dtype, device=weight.device).expand(*weight.shape[:-2], scale, scale)
    conv = _depthwise_correlate(weight, box, scale - 1, scale - 1)  # index t = position + k // 2, size k + s - 1
    c0 = conv[..., (kh // 2) % scale::scale, (kw // 2) % scale::scale]
    e_real, e_imag = _dft2_pair(c0, height, width, (kh // 2) // scale, (kw // 2) // scale, cos_sin=cos_sin)
    return d_real, e_real, e_imag


def converse_filter_pair(weight: torch.Tensor, lam: torch.Tensor, scale: int, height: int, width: int,
                         cos_sin=dft_cos_sin, conj: bool = False, full: bool = False) -> Pair:
    """The transfer function G of the operator as (real, imag), in rfft2 layout, in real arithmetic
    (``conj``: those of conj(G), the form :func:`converse_filter_conj` hands to the custom operator; ``full``:
    all s*w columns instead of the rfft2 half).

    Args:
        weight: (Bk, C, k, k) kernels (Bk = 1 for a shared kernel, or the batch size).
        lam: broadcastable to (Bk, C, 1, 1), positive.
        scale: integer s >= 1.
        height, width: the padded input size (h, w); the output grid is (s*h, s*w).
        cos_sin: the DFT table function (see :func:`kernel_otf_pair`).
    Returns:
        two (Bk, C, s*h, s*w // 2 + 1) real tensors (s*w columns if ``full``).
    """
    sh, sw = scale * height, scale * width
    fr, fi = kernel_otf_pair(weight, sh, sw, half=not full, cos_sin=cos_sin)
    if scale == 1:
        # G = 1 + conj(F)(1 - F) / (|F|^2 + lam)  ==  (conj F + lam) / (|F|^2 + lam)
        inv = torch.reciprocal(fr * fr + fi * fi + lam)
        return (fr + lam) * inv, (fi * inv if conj else -fi * inv)
    # Bhat, the transform of the s x s box at [0, s)^2, separable: (sum_a e^{-i th_u a}) (sum_b e^{-i th_v b})
    cols = sw if full else sw // 2 + 1  # <= s * w: tiling s x s and cutting covers the half spectrum
    ch, sh_ = cos_sin(sh, sh, 0, scale, weight)
    cw, sw_ = cos_sin(sw, cols, 0, scale, weight)
    bhr, bhi = ch.sum(-1)[:, None], -sh_.sum(-1)[:, None]
    bwr, bwi = cw.sum(-1)[None, :], -sw_.sum(-1)[None, :]
    br, bi = bhr * bwr - bhi * bwi, bhr * bwi + bhi * bwr
    d, er, ei = _aliased_spectra(weight, scale, height, width, cos_sin)
    inv = torch.reciprocal(d + lam)  # 1 / (D + lam), small grid
    rr, ri = (1 - er) * inv, -ei * inv  # (1 - E) / (D + lam)
    rr = rr.repeat(*([1] * (rr.dim() - 2)), scale, scale)[..., :cols]
    ri = ri.repeat(*([1] * (ri.dim() - 2)), scale, scale)[..., :cols]
    # G = Bhat + conj(F) * ratio
    if conj:
        return br + fr * rr + fi * ri, fi * rr - fr * ri - bi
    return br + fr * rr + fi * ri, bi + fr * ri - fi * rr


def converse_filter(weight: torch.Tensor, lam: torch.Tensor, scale: int, height: int,
                    width: int) -> torch.Tensor:
    """The transfer function G, complex, (Bk, C, s*h, s*w // 2 + 1). See :func:`converse_filter_pair`."""
    return torch.complex(*converse_filter_pair(weight, lam, scale, height, width))


def converse_filter_conj(weight: torch.Tensor, lam: torch.Tensor, scale: int, height: int, width: int,
                         cos_sin=dft_cos_sin, full: bool = False) -> torch.Tensor:
    """conj(G) as its real and imaginary planes, (2, Bk, C, s*h, s*w // 2 + 1): the filter argument of
    ``torch.ops.converse.apply_filter`` (see :mod:`converse_plugin.ops.library`). ``full``: all s*w columns,
    (2, Bk, C, s*h, s*w), which selects the operator's paired form for s = 1 and Bk = 1."""
    return torch.stack(converse_filter_pair(weight, lam, scale, height, width, cos_sin, conj=True, full=full))


# ----------------------------------------------------------------------------------------------------
# The export form: real arithmetic, symbolic sizes
# ----------------------------------------------------------------------------------------------------
def _input_spectrum_real(y: torch.Tensor, scale: int) -> Pair:
    """Half spectrum of the zero-inserted input as (real, imag), (B, C, s*h, s*w//2+1)."""
    if scale == 1:
        spec = torch.view_as_real(torch.fft.rfft2(y))
        return spec[..., 0], spec[..., 1]
    w = y.shape[-1]
    spec = torch.view_as_real(torch.fft.fft2(y))
    spec = spec.repeat(1, 1, scale, scale, 1)[..., :scale * w // 2 + 1, :]
    return spec[..., 0], spec[..., 1]


def _converse2d_real(y: torch.Tensor, weight: torch.Tensor, lam: torch.Tensor, scale: int) -> torch.Tensor:
    """The operator on the padded input ``y`` in real arithmetic (``impl='real'``), uncropped."""
    h, w = y.shape[-2:]
    gr, gi = converse_filter_pair(weight, lam, scale, h, w, cos_sin=dft_cos_sin_symbolic)
    sr, si = _input_spectrum_real(y, scale)
    spec = torch.stack((sr * gr - si * gi, sr * gi + si * gr), dim=-1)
    return torch.fft.irfft2(torch.view_as_complex(spec), s=(scale * h, scale * w))


# ----------------------------------------------------------------------------------------------------
# The operator
# ----------------------------------------------------------------------------------------------------
# The formulation used where neither the call nor the module names one: [impl, compute dtype]. Only
# ``converse_plugin.ops.export.export_mode(None)`` changes it (model-wide export without a model at hand).
AMBIENT_IMPL: list = ['fft', None]


def converse2d(x: torch.Tensor,
               weight: torch.Tensor,
               lam: torch.Tensor,
               scale: int = 1,
               padding: int = 2,
               padding_mode: str = 'circular',
               filt: torch.Tensor | None = None,
               impl: str | None = None,
               compute_dtype: torch.dtype | None = None,
               pairs: bool = False) -> torch.Tensor:
    """Reverse convolution of ``x`` (spec §1).

    Args:
        x: (B, C, H, W) input Y (``pairs``: the (m, C, H, 2 W) pair layout of :func:`to_pairs`).
        weight: (1 or B, C, k, k) kernels K (per channel, optionally per sample).
        lam: positive regularisation, broadcastable to (1 or B, C, 1, 1).
        scale: integer upscaling factor s >= 1.
        padding: pixels padded on every side before the transform (cropped as p * s after).
        padding_mode: 'circular', 'replicate', 'reflect' or 'zeros'.
        filt: a precomputed filter for this grid, :func:`converse_filter` (complex G) or
            :func:`converse_filter_conj` (the planes of conj G); used by the module's inference cache.
            Ignored by ``impl='real'``.
        impl: 'fft' (the custom operator; default) or 'real' (the export form: real arithmetic, DFT tables
            for symbolic sizes, no custom operator). None: 'fft', unless
            :func:`converse_plugin.ops.export.export_mode` was entered without a model.
        compute_dtype: dtype of the transforms of ``impl='real'`` (default float32, float64 for float64
            inputs); 'fft' computes in float32, or float64 for float64 inputs.
        pairs: ``x`` is the interleaved pair layout (s = 1, a shared (1, C, k, k) kernel, 'fft'); the result
            is too, equal to ``to_pairs(converse2d(from_pairs(x), ...))`` with no packing in between.
    Returns:
        (B, C, s*H, s*W) (``pairs``: x's shape), dtype :func:`result_dtype`.
    """
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f'scale must be an integer >= 1, got {scale!r}')
    if x.dim() != 4:
        raise ValueError(f'Converse2D expects a 4-D input (B, C, H, W), got shape {tuple(x.shape)}')
    if weight.dim() != 4 or weight.shape[1] != x.shape[1] or weight.shape[0] not in (1, x.shape[0]):
        raise ValueError(f'kernel shape {tuple(weight.shape)} does not fit input {tuple(x.shape)}: '
                         f'expected (1 or {x.shape[0]}, {x.shape[1]}, k, k)')
    if impl is None:
        impl, ambient_dtype = AMBIENT_IMPL
        compute_dtype = compute_dtype or ambient_dtype
    if impl not in IMPLS:
        raise ValueError(f'impl must be one of {IMPLS}, got {impl!r}')
    if pairs and (x.shape[-1] % 2 or weight.shape[0] != 1 or scale != 1 or impl != 'fft'):
        raise ValueError(f'the pair layout needs an input (m, C, H, 2W), a (1, C, k, k) kernel, scale 1 and impl '
                         f"'fft', got input {tuple(x.shape)}, kernel {tuple(weight.shape)}, scale {scale}, "
                         f'impl {impl!r}')
    with torch.autocast(device_type=x.device.type, enabled=False):
        out_dtype = result_dtype(x, weight)
        dtype = out_dtype if impl == 'fft' else (compute_dtype or out_dtype)
        if x.dtype != dtype:
            x = x.to(dtype)
        y = pad_input(x, padding, padding_mode, pairs)
        if impl == 'real':
            out = _converse2d_real(y, weight.to(dtype), lam.to(dtype), scale)
        else:
            out = _apply(y, weight, lam, scale, filt, dtype, pairs)
        if padding:
            c = padding * scale
            cols = 2 * c if pairs else c  # real columns
            out = out[..., c:out.shape[-2] - c, cols:out.shape[-1] - cols]
        return out if out.dtype == out_dtype else out.to(out_dtype)


def _apply(y: torch.Tensor, weight: torch.Tensor, lam: torch.Tensor, scale: int, filt: torch.Tensor | None,
           dtype: torch.dtype, pairs: bool = False) -> torch.Tensor:
    """``impl='fft'`` on the padded input: the filter (differentiable torch code), then the custom operator
    (inference in eager mode: the same computation, multiplying in place). ``pairs``: y is the pair layout,
    whose filter has all w / 2 columns of the complex images (the operator's interleaved form)."""
    h, w = y.shape[-2], y.shape[-1] // 2 if pairs else y.shape[-1]
    compiling = torch.compiler.is_compiling()
    if filt is None:
        weight = weight if weight.dtype == dtype else weight.to(dtype)
        lam = lam if lam.dtype == dtype else lam.to(dtype)
        if (scale > 1 and not compiling and torch.is_grad_enabled()
                and (weight.requires_grad or lam.requires_grad)):
            # recompute the filter's half-spectrum intermediates (F, the tiled ratio, their products) in
            # the backward pass instead of keeping them beside the activations (cheap next to the FFTs)
            filt = checkpoint(converse_filter_conj, weight, lam, scale, h, w, use_reentrant=False)
        else:
            filt = converse_filter_conj(weight, lam, scale, h, w, full=pairs or paired_form_pays(y, weight, scale))
    elif filt.is_complex():  # G from converse_filter
        filt = torch.stack((filt.real, -filt.imag))
    cols = scale * w // 2 + 1
    if pairs:
        if not is_interleaved(filt, scale, y.shape[-1]):
            raise ValueError(f'filt has {filt.shape[-1]} columns for the pair layout of {h}x{w} padded images: '
                             f'expected {w} (converse_filter_conj with full=True and a shared kernel)')
    elif filt.shape[-1] != cols and not is_paired(filt, scale, w):
        raise ValueError(f'filt has {filt.shape[-1]} columns for a {h}x{w} padded input at scale {scale}: expected '
                         f'{cols} (converse_filter_conj), or {w} (full=True, for scale 1 and a shared kernel only)')
    if compiling or (torch.is_grad_enabled() and (y.requires_grad or filt.requires_grad)):
        return torch.ops.converse.apply_filter(y, filt, scale)[0]
    return apply_filter_impl(y, filt, scale, keep_spectrum=False)[0]


def paired_form_pays(y: torch.Tensor, weight: torch.Tensor, scale: int) -> bool:
    """Whether the custom operator's paired form (two samples per complex FFT, see
    :mod:`converse_plugin.ops.library`) is used: on the CPU, for s = 1, a shared kernel and a batch of two or
    more. On the CPU, MKL's real transforms and PyTorch's inverse real 2-D transform (two layout copies) cost
    more than complex ones on half as many images; on CUDA, cuFFT's real transforms do not. Not while
    torch.jit traces (FLOP counting, old exporters): a traced graph is one formulation for every batch size."""
    return _pairs_pay(y) and pairable(scale, weight.shape[0], y.shape[-1])


def _pairs_pay(x: torch.Tensor) -> bool:
    """The device and batch rule of both pair forms: on the CPU, two or more samples, not while torch.jit traces
    (see :func:`paired_form_pays`)."""
    return x.device.type == 'cpu' and x.shape[0] >= 2 and not torch.jit.is_tracing()


def converse2d_real(x: torch.Tensor, weight: torch.Tensor, lam: torch.Tensor, scale: int = 1, padding: int = 2,
                    padding_mode: str = 'circular', filt: torch.Tensor | None = None,
                    compute_dtype: torch.dtype | None = None) -> torch.Tensor:
    """:func:`converse2d` with ``impl='real'`` (the export form; ``filt`` is ignored)."""
    return converse2d(x, weight, lam, scale, padding, padding_mode, impl='real', compute_dtype=compute_dtype)
