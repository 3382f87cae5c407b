"""Reverse convolution (Converse2D), functional core. No BasicSR imports: usable in any PyTorch code.

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

Cost: one real FFT of the (small) input, one inverse real FFT of the output, and a filter computed from
k x k kernels by two small DFT matrix products (no batch dimension). A custom autograd Function keeps
only the input spectrum and G for the backward pass, with the analytic adjoints.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

PADDING_MODES = ('circular', 'replicate', 'reflect', 'zeros')


def converse_lambda(bias: torch.Tensor, eps: float) -> torch.Tensor:
    """lam_c = sigmoid(b_c - 9) + eps, the per-channel regularisation weight of spec §1."""
    return torch.sigmoid(bias - 9.0) + eps


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


def pad_input(x: torch.Tensor, padding: int, padding_mode: str) -> torch.Tensor:
    """Pad (B, C, H, W) by ``padding`` on every side with ``padding_mode`` (checked first)."""
    check_padding(x.shape[-2], x.shape[-1], padding, padding_mode)
    if padding == 0:
        return x
    mode = 'constant' if padding_mode == 'zeros' else padding_mode
    return F.pad(x, (padding, ) * 4, mode=mode)


# ----------------------------------------------------------------------------------------------------
# The transfer function G (kernel-only; no batch of images involved)
# ----------------------------------------------------------------------------------------------------
Pair = tuple[torch.Tensor, torch.Tensor]  # (real part, imaginary part) of a complex quantity


@functools.lru_cache(maxsize=256)
def _dft_cos_sin_cached(n: int, rows: int, offset: int, count: int, dtype: torch.dtype,
                        device: torch.device) -> Pair:
    # built outside inference mode: a table first made under torch.inference_mode (e.g. by a caller such as
    # spandrel) would be an inference tensor, which later training steps cannot save for backward
    with torch.inference_mode(False), torch.no_grad():
        u = torch.arange(rows, device=device, dtype=torch.int64)[:, None]
        a = torch.arange(count, device=device, dtype=torch.int64)[None, :] - offset
        phase = torch.remainder(u * a, n).to(torch.float64) * (2.0 * math.pi / n)  # exact: integer mod n first
        return torch.cos(phase).to(dtype), torch.sin(phase).to(dtype)


def dft_cos_sin(n: int, rows: int, offset: int, count: int, like: torch.Tensor) -> Pair:
    """cos and sin of theta[u, a] = 2 pi u (a - offset) / n, each (rows, count), in ``like``'s dtype and
    device: the DFT matrix is exp(-i theta) = cos - i sin. Cached (the tables depend only on the sizes)."""
    return _dft_cos_sin_cached(n, rows, offset, count, like.dtype, like.device)


def _dft2_pair(x: torch.Tensor, height: int, width: int, off_h: int, off_w: int, half: bool = False,
               cos_sin=dft_cos_sin) -> Pair:
    """The 2-D DFT on a (height, width) grid of small arrays x (..., m, n) whose entry (a, b) sits at
    position (a - off_h, b - off_w) (wrapping around the grid), as (real, imag), in real matmuls:
    (Ch - i Sh) x (Cw - i Sw)^T.

    With A = x Cw^T and B = x Sw^T (small, m x W'), real = Ch A - Sh B and imag = -(Ch B + Sh A), so one
    batched matmul [Ch, Sh] @ [[A; -B], [-B; -A]] gives both, laid out (2, ..., H, W') so that the parts
    are whole tensors (no slicing of large tensors, whose backward would allocate and zero-fill).
    ``half``: only the first width // 2 + 1 columns (the rfft2 layout).
    """
    m, n = x.shape[-2:]
    ch, sh = cos_sin(height, height, off_h, m, x)
    cw, sw = cos_sin(width, width // 2 + 1 if half else width, off_w, n, x)
    a, b = x @ cw.transpose(0, 1), x @ sw.transpose(0, 1)  # (..., m, W')
    rhs = torch.stack((torch.cat((a, -b), dim=-2), torch.cat((-b, -a), dim=-2)))  # (2, ..., 2m, W')
    real, imag = (torch.cat((ch, sh), dim=1) @ rhs).unbind(0)  # (2, ..., H, W')
    return real, imag


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
    """Cross-correlation of each (..., m, n) array, zero-padded by (pad_h, pad_w), with its own kernel."""
    lead = x.shape[:-2]
    flat = x.reshape(1, -1, *x.shape[-2:])
    cudnn = torch.backends.cudnn
    # exact float32 on GPUs too: cuDNN's TF32 convolutions (on by default) would cost the filter 3 digits
    with cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                     allow_tf32=False):
        out = F.conv2d(F.pad(flat, (pad_w, pad_w, pad_h, pad_h)), kernel.reshape(-1, 1, *kernel.shape[-2:]),
                       groups=flat.shape[1])
    return out.reshape(*lead, *out.shape[-2:])


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
                         cos_sin=dft_cos_sin) -> Pair:
    """The transfer function G of the operator as (real, imag), in rfft2 layout, in real arithmetic.

    Args:
        weight: (Bk, C, k, k) kernels (Bk = 1 for a shared kernel, or the batch size).
        lam: broadcastable to (Bk, C, 1, 1), positive.
        scale: integer s >= 1.
        height, width: the padded input size (h, w); the output grid is (s*h, s*w).
        cos_sin: the DFT table function (see :func:`kernel_otf_pair`).
    Returns:
        two (Bk, C, s*h, s*w // 2 + 1) real tensors.
    """
    sh, sw = scale * height, scale * width
    fr, fi = kernel_otf_pair(weight, sh, sw, half=True, cos_sin=cos_sin)
    if scale == 1:
        # G = 1 + conj(F)(1 - F) / (|F|^2 + lam)  ==  (conj F + lam) / (|F|^2 + lam)
        inv = torch.reciprocal(fr * fr + fi * fi + lam)
        return (fr + lam) * inv, -fi * inv
    # Bhat, the transform of the s x s box at [0, s)^2, separable: (sum_a e^{-i th_u a}) (sum_b e^{-i th_v b})
    cols = sw // 2 + 1  # <= s * w: tiling s x s and cutting covers the half spectrum
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
    return br + fr * rr + fi * ri, bi + fr * ri - fi * rr


def converse_filter(weight: torch.Tensor, lam: torch.Tensor, scale: int, height: int,
                    width: int) -> torch.Tensor:
    """The transfer function G, complex, (Bk, C, s*h, s*w // 2 + 1). See :func:`converse_filter_pair`."""
    return torch.complex(*converse_filter_pair(weight, lam, scale, height, width))


# ----------------------------------------------------------------------------------------------------
# Applying G to a batch: custom autograd with analytic adjoints
# ----------------------------------------------------------------------------------------------------
def _input_spectrum(y: torch.Tensor, scale: int) -> torch.Tensor:
    """rfft2 of the zero-inserted input (B, C, s*h, s*w // 2 + 1), from a transform of the small input."""
    if scale == 1:
        return torch.fft.rfft2(y)
    h, w = y.shape[-2:]
    spec = torch.fft.fft2(y)  # (B, C, h, w): the spectrum of Y up is this, tiled s x s
    cols = scale * w // 2 + 1
    reps = -(-cols // w)
    # repeat, then cut to the half spectrum: contiguous, so that autograd saves only the half spectrum
    return spec.repeat(1, 1, scale, reps)[..., :cols].contiguous()


def _sum_to(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum broadcast dimensions of ``t`` so it has ``shape`` (the reverse of broadcasting)."""
    dims = [i for i, (a, b) in enumerate(zip(t.shape, shape)) if b == 1 and a != 1]
    return t.sum(dim=dims, keepdim=True) if dims else t


class _ApplyFilter(torch.autograd.Function):
    """out = irfft2(S(y) * g) where S(y) is the zero-inserted input's half spectrum (see above)."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, g: torch.Tensor, scale: int) -> torch.Tensor:
        sh, sw = scale * y.shape[-2], scale * y.shape[-1]
        spec = _input_spectrum(y, scale)
        out = torch.fft.irfft2(spec * g, s=(sh, sw))
        ctx.scale = scale
        ctx.grid = (sh, sw)
        ctx.save_for_backward(spec if g.requires_grad else None, g)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        spec, g = ctx.saved_tensors
        scale, (sh, sw) = ctx.scale, ctx.grid
        grad_spec = torch.fft.rfft2(grad_out)
        grad_y = grad_g = None
        if ctx.needs_input_grad[1]:
            # adjoint of irfft2 on a half spectrum (PyTorch's convention): rfft2 / N, interior
            # columns counted twice (they stand for their conjugate twins).
            weight = torch.full((grad_spec.shape[-1], ), 2.0 / (sh * sw), dtype=grad_out.dtype,
                                device=grad_out.device)
            weight[0] = 1.0 / (sh * sw)
            if sw % 2 == 0:
                weight[-1] = 1.0 / (sh * sw)
            grad_g = _sum_to(grad_spec * spec.conj(), g.shape).mul_(weight)
        if ctx.needs_input_grad[0]:
            # the map y -> out is a real circular convolution of (y up) with irfft2(g): its adjoint is the
            # correlation with the same kernel, followed by taking the pixels (0::s, 0::s).
            grad_y = torch.fft.irfft2(grad_spec.mul_(g.conj()), s=(sh, sw))
            if scale > 1:
                grad_y = grad_y[..., ::scale, ::scale].contiguous()
        return grad_y, grad_g, None


# torch.compile runs this eagerly (a graph break): with the automatic dynamic shapes a second input size
# switches on, inductor fails on the symbolic FFT sizes ("cannot determine truth value of Relational"),
# and the FFTs themselves gain nothing from compilation. Everything around the operator still compiles.
@torch.compiler.disable
def converse2d(x: torch.Tensor,
               weight: torch.Tensor,
               lam: torch.Tensor,
               scale: int = 1,
               padding: int = 2,
               padding_mode: str = 'circular',
               filt: torch.Tensor | None = None) -> torch.Tensor:
    """Reverse convolution of ``x`` (spec §1), computed in float32 or float64.

    Args:
        x: (B, C, H, W) input Y.
        weight: (1 or B, C, k, k) kernels K (per channel, optionally per sample).
        lam: positive regularisation, broadcastable to (1 or B, C, 1, 1).
        scale: integer upscaling factor s >= 1.
        padding: pixels padded on every side before the transform (cropped as p * s after).
        padding_mode: 'circular', 'replicate', 'reflect' or 'zeros'.
        filt: a precomputed :func:`converse_filter` for this grid (used by the module's eval cache).
    Returns:
        (B, C, s*H, s*W), dtype float32 (or float64 for float64 inputs), whatever autocast says.
    """
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f'scale must be an integer >= 1, got {scale!r}')
    if x.dim() != 4:
        raise ValueError(f'Converse2D expects a 4-D input (B, C, H, W), got shape {tuple(x.shape)}')
    if weight.dim() != 4 or weight.shape[1] != x.shape[1] or weight.shape[0] not in (1, x.shape[0]):
        raise ValueError(f'kernel shape {tuple(weight.shape)} does not fit input {tuple(x.shape)}: '
                         f'expected (1 or {x.shape[0]}, {x.shape[1]}, k, k)')
    with torch.autocast(device_type=x.device.type, enabled=False):
        dtype = torch.float64 if torch.float64 in (x.dtype, weight.dtype) else torch.float32
        x = x.to(dtype)
        y = pad_input(x, padding, padding_mode)
        h, w = y.shape[-2:]
        if filt is None:
            weight, lam = weight.to(dtype), lam.to(dtype)
            if scale > 1 and torch.is_grad_enabled() and (weight.requires_grad or lam.requires_grad):
                # recompute the filter's half-spectrum intermediates (F, the tiled ratio, their products) in
                # the backward pass instead of keeping them beside the activations (cheap next to the FFTs)
                filt = checkpoint(converse_filter, weight, lam, scale, h, w, use_reentrant=False)
            else:
                filt = converse_filter(weight, lam, scale, h, w)
        if torch.is_grad_enabled() and (y.requires_grad or filt.requires_grad):
            out = _ApplyFilter.apply(y.contiguous(), filt, scale)
        else:  # inference: multiply in place (a fresh spectrum-sized buffer costs more than the product)
            out = torch.fft.irfft2(_input_spectrum(y, scale).mul_(filt), s=(scale * h, scale * w))
        if padding:
            c = padding * scale
            out = out[..., c:out.shape[-2] - c, c:out.shape[-1] - c]
        return out
