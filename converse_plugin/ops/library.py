"""Converse2D's batch work as PyTorch custom operators (``torch.ops.converse.*``), so that torch.compile and
torch.export see one opaque node with known output shapes instead of FFTs (which inductor cannot lower with
symbolic sizes) or a Python autograd Function (a graph break).

    converse::apply_filter(y, filt_conj, scale) -> (out, spec_conj)
    converse::apply_filter_backward(grad_out, spec_conj, filt_conj, scale, need_input, need_filter)
        -> (grad_y, grad_filt_conj)

``y`` (B, C, h, w) real is the padded input; ``filt_conj`` (2, Bk, C, s*h, s*w // 2 + 1) holds the real and
imaginary parts of the conjugate of the transfer function G (or (2, 1, C, h, w), all columns: the paired form
below)
(:func:`converse_plugin.ops.functional.converse_filter_conj`), Bk = 1 or B. Planar, not interleaved pairs:
the gradient flows back into the kernel-sized filter code as two contiguous planes, which inductor reduces
with plain vector loads (interleaved pairs made it transpose 16 x 16 tiles: 4.5 instead of 0.36 ms a layer).
``out`` (B, C, s*h, s*w) = irfft2(S(y) * G) with S(y) the half spectrum of the zero-inserted input;
``spec_conj`` (B * C * h * (s*w // 2 + 1) * 2, flat) = conj(S(y)) with the s x s row tiling left implicit (it is the
input's spectrum, columns wrapped around), the only tensor the backward keeps besides the filter.

Why the conjugates: the backward needs grad_spec * conj(G) and sum_b grad_spec * conj(S(y)); a product with a
lazily conjugated operand costs PyTorch a full copy, so the conjugates are formed where they are free (the
filter is kernel-sized; S(y) is conjugated in place, or inside the column tiling for s > 1).

Passes over full-size (s*h, s*w) data per call: forward one inverse real FFT; backward one forward real
FFT, the two products the adjoints need, and for s > 1 an inverse FFT on the row-folded (h, s*w) grid
instead of the (s*h, s*w) one (taking pixels (0::s, 0::s) is a fold of the spectrum's s row aliases).

The paired form (s = 1, a shared kernel, a full-width filter (2, 1, C, h, w)): samples i and i + m of the batch,
m = ceil(B / 2), travel as the real and imaginary parts of one complex image (a zero image pads an odd batch).
Both see the same filter, which is Hermitian, so one complex FFT pair on m images gives both outputs, and the
backward works on the same pairs (the filter gradient's cross terms between the two samples are anti-Hermitian
and vanish in the kernel-sized code that made the full filter). Same arithmetic, half the transforms, all of
them complex to complex: on the CPU, MKL's real transforms of sizes with a large prime factor and the copies
PyTorch's inverse real 2-D transform makes cost more than that (ConverseDnCNN's 76 = 4 * 19 grid, B4 x 128
channels: fft2 + ifft2 of the pairs 17 ms, rfft2 + irfft2 29 ms). ``spec_conj`` is then the conjugated pair
spectrum, (m * C * h * w * 2,).

The interleaved form (the same arithmetic, for callers that keep the pairs interleaved, see
:func:`converse_plugin.ops.functional.to_pairs`): ``y`` (m, C, h, 2 w) real holds the pairs as the real and
imaginary parts of (m, C, h, w) complex numbers, and ``filt_conj`` is (2, 1, C, h, w). ``out`` comes back
in the same layout (m, C, h, 2 w), ``spec_conj`` as in the paired form. Its tensors are the complex ones,
viewed: no packing or unpacking pass (those were ~140 ms of a 2.3 s ConverseDnCNN CPU training step).
The filter's width selects the form: s*w // 2 + 1 columns the half spectrum, w (the input's width) the
paired form, w / 2 the interleaved one.
Nothing here imports anything outside torch.
"""
from __future__ import annotations

import functools

import torch
from torch import Tensor


def _cols(scale: int, width: int):
    return scale * width // 2 + 1


def spectrum_conj(y: Tensor, scale: int) -> Tensor:
    """conj of the half spectrum of the zero-inserted input, without its s x s row tiling: (B, C, h, cols)
    complex, cols = s*w // 2 + 1 (the spectrum of Y up at (u + a h, v) is the small one at (u, v mod w))."""
    if scale == 1:
        return torch.fft.rfft2(y).conj_physical_()
    w = y.shape[-1]
    full = torch.fft.fft2(y).conj()  # lazy: the concatenation below writes the conjugate
    q, r = divmod(int(_cols(scale, w)), int(w))  # int(): sizes are tensors under torch.jit.trace
    return torch.cat([full] * q + ([full[..., :r]] if r else []), dim=-1)


def _as_complex(filt: Tensor) -> Tensor:
    """The complex filter from its (2, ...) planes (a kernel-sized copy)."""
    return torch.complex(filt[0], filt[1])


def pairable(scale: int, kernel_batch: int, width: int) -> bool:
    """Whether the paired form can run: s = 1 and one kernel for the whole batch (both images of a pair see the
    same filter), on a grid wider than 2 (narrower, the half spectrum is all columns)."""
    return scale == 1 and kernel_batch == 1 and width > 2


def is_paired(filt_conj: Tensor, scale: int, width: int) -> bool:
    """Whether a filter argument selects the paired form: :func:`pairable`, with all ``width`` columns."""
    return pairable(scale, filt_conj.shape[1], width) and filt_conj.shape[-1] == width


def is_interleaved(filt_conj: Tensor, scale: int, width: int) -> bool:
    """Whether a filter argument selects the interleaved form: :func:`pairable` on an input of ``width`` real
    columns holding ``width / 2`` complex ones, the filter's width."""
    return pairable(scale, filt_conj.shape[1], filt_conj.shape[-1]) and 2 * filt_conj.shape[-1] == width


def _as_pairs(x: Tensor) -> Tensor:
    """(m, C, h, 2 w) real, pairs interleaved -> (m, C, h, w) complex, a view (a copy only for a layout that
    cannot be viewed so)."""
    if not x.is_contiguous() or x.storage_offset() % 2:
        x = x.clone(memory_format=torch.contiguous_format)
    return torch.view_as_complex(x.view(*x.shape[:-1], x.shape[-1] // 2, 2))


def _pair(x: Tensor) -> Tensor:
    """(B, C, h, w) real -> (m, C, h, w) complex, samples i and i + m as real and imaginary parts."""
    m = (x.shape[0] + 1) // 2
    hi = x[m:]
    if hi.shape[0] < m:
        hi = torch.cat((hi, hi.new_zeros(1, *hi.shape[1:])))
    return torch.complex(x[:m], hi)


def _unpair(z: Tensor, batch: int) -> Tensor:
    """Inverse of :func:`_pair` on (m, C, h, w) complex: the real parts, then the imaginary parts, as
    (batch, C, h, w) real (one pass of copies)."""
    m = z.shape[0]
    out = z.real.new_empty(batch, *z.shape[1:])
    out[:m].copy_(z.real)
    out[m:].copy_(z.imag[:batch - m])
    return out


def _sum_of_products(a: Tensor, b: Tensor) -> Tensor:
    """sum_i a[i] * b[i] over the first dimension, keeping it (size 1), without a batch-sized product."""
    out = a[:1] * b[:1]
    for i in range(1, a.shape[0]):
        out[0].addcmul_(a[i], b[i])
    return out


def _apply_paired(y: Tensor, filt_conj: Tensor, keep_spectrum: bool):
    out, spec = _filter_pairs(_pair(y), filt_conj, keep_spectrum)
    return _unpair(out, y.shape[0]), spec


def _apply_interleaved(y: Tensor, filt_conj: Tensor, keep_spectrum: bool):
    out, spec = _filter_pairs(_as_pairs(y), filt_conj, keep_spectrum)
    return torch.view_as_real(out).view(y.shape), spec


def _filter_pairs(z: Tensor, filt_conj: Tensor, keep_spectrum: bool) -> tuple[Tensor, Tensor | None]:
    """Both pair forms' forward on the complex pairs z (m, C, h, w): ifft2(Z G) (complex, m, C, h, w) and, if
    ``keep_spectrum``, conj(Z) as flat real pairs (else Z is multiplied in place)."""
    zy = torch.fft.fft2(z)  # the pair spectrum Z
    g = _as_complex(filt_conj).conj_physical_()  # G (kernel-sized)
    out = torch.fft.ifft2(zy * g if keep_spectrum else zy.mul_(g))
    return out, (torch.view_as_real(zy.conj_physical_()).view(-1) if keep_spectrum else None)


def _backward_paired(grad_out: Tensor, spec_conj: Tensor, filt_conj: Tensor, need_input: bool,
                     need_filter: bool, interleaved: bool = False) -> tuple[Tensor, Tensor]:
    """Both pair forms' backward (``interleaved``: grad_out (m, C, h, 2 w), else (B, C, h, w))."""
    # _pair reads any strides into a fresh complex tensor; _as_pairs views the interleaved pairs
    gz = torch.fft.fft2(_as_pairs(grad_out) if interleaved else _pair(grad_out))
    c, h, w = gz.shape[1:]
    grad_y = grad_h = grad_out.new_empty(0)
    if need_filter:
        czy = torch.view_as_complex(spec_conj.view(-1, c, h, w, 2))
        # d/dG = sum over pairs of conj(Z) FFT(g) / N; the planes of conj(G) get (real, -imag)
        grad = _sum_of_products(gz, czy)
        grad_h = torch.stack((grad.real, grad.imag)).mul_(_paired_adjoint(grad_out.dtype, grad_out.device, h * w))
    if need_input:
        grad_z = torch.fft.ifft2(gz.mul_(_as_complex(filt_conj)))
        grad_y = torch.view_as_real(grad_z).view(grad_out.shape) if interleaved else _unpair(grad_z, grad_out.shape[0])
    return grad_y, grad_h


@functools.lru_cache(maxsize=64)
def _paired_adjoint(dtype: torch.dtype, device: torch.device, numel: int) -> Tensor:
    """(2, 1, 1, 1, 1) factors (1 / N, -1 / N): the gradient of the planes of conj(G), paired form."""
    with torch.inference_mode(False), torch.no_grad():  # cached: never an inference tensor (see functional.py)
        return torch.tensor([1.0 / numel, -1.0 / numel], dtype=dtype, device=device).view(2, 1, 1, 1, 1)


def apply_filter_impl(y: Tensor, filt_conj: Tensor, scale: int, keep_spectrum: bool = True):
    """The forward (see the module docstring). ``keep_spectrum=False`` (inference) multiplies in place and
    returns (out, None)."""
    if is_paired(filt_conj, scale, y.shape[-1]):
        return _apply_paired(y, filt_conj, keep_spectrum)
    if is_interleaved(filt_conj, scale, y.shape[-1]):
        return _apply_interleaved(y, filt_conj, keep_spectrum)
    b, c, h, w = y.shape
    sh, sw = scale * h, scale * w
    hc = _as_complex(filt_conj)  # (Bk, C, sh, cols)
    cs = spectrum_conj(y if y.is_contiguous() else y.contiguous(), scale)
    if scale == 1:
        prod = cs * hc if keep_spectrum else cs.mul_(hc)
    else:
        cols = cs.shape[-1]
        prod = (hc.view(hc.shape[0], c, scale, h, cols) * cs.unsqueeze(2)).view(b, c, sh, cols)
    # irfft2 of conj(cs * conj G) = S(y) * G. cuFFT's inverse real transform copies its input anyway, so
    # hfft2(W, norm='forward') = irfft2(conj(W)) conjugates inside that copy; MKL's (CPU) reads its input as it
    # is, and the copy a lazily conjugated input would cost is dearer than conjugating the fresh product in place
    if prod.is_cuda:
        out = torch.fft.hfft2(prod, s=(sh, sw), norm='forward')
    else:
        out = torch.fft.irfft2(prod.conj_physical_(), s=(sh, sw))
    # flat: inductor cannot order the strides of a symbolic (..., s*w // 2 + 1, 2) layout
    return out, (torch.view_as_real(cs).view(-1) if keep_spectrum else None)


@functools.lru_cache(maxsize=64)
def _half_spectrum_adjoint(cols: int, width: int, numel: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(2, 1, 1, 1, cols) factors that turn sum_b grad_spec * conj(S) into the gradient of the planes of
    conj(G): the adjoint of irfft2 on a half spectrum is rfft2 / N with the interior columns counted twice
    (they stand for their conjugate twins); the sign flips the imaginary part (d/d conj(G) = conj(d/dG))."""
    with torch.inference_mode(False), torch.no_grad():  # cached: never an inference tensor (see functional.py)
        weight = torch.full((2, 1, 1, 1, cols), 2.0 / numel, dtype=dtype, device=device)
        weight[..., 0] = 1.0 / numel
        if width % 2 == 0:
            weight[..., -1] = 1.0 / numel
        weight[1].neg_()
    return weight


def apply_filter_backward_impl(grad_out: Tensor, spec_conj: Tensor, filt_conj: Tensor, scale: int,
                               need_input: bool, need_filter: bool) -> tuple[Tensor, Tensor]:
    if is_paired(filt_conj, scale, grad_out.shape[-1]):
        return _backward_paired(grad_out, spec_conj, filt_conj, need_input, need_filter)
    if is_interleaved(filt_conj, scale, grad_out.shape[-1]):
        return _backward_paired(grad_out, spec_conj, filt_conj, need_input, need_filter, interleaved=True)
    b, c, sh, sw = grad_out.shape
    h, w = sh // scale, sw // scale
    hc = _as_complex(filt_conj)
    bk = hc.shape[0]
    gs = torch.fft.rfft2(grad_out if grad_out.is_contiguous() else grad_out.contiguous())  # (B, C, sh, cols)
    cols = gs.shape[-1]
    cs = torch.view_as_complex(spec_conj.view(b, c, h, cols, 2))
    grad_y = grad_h = grad_out.new_empty(0)
    if need_filter:
        g5 = gs.view(b, c, scale, h, cols)
        prod = g5.mul_(cs.unsqueeze(2)) if not need_input and bk == b else g5 * cs.unsqueeze(2)
        prod = prod.view(b, c, sh, cols)
        grad = prod.sum(0, keepdim=True) if bk == 1 and b > 1 else prod
        grad_h = torch.stack((grad.real, grad.imag)).mul_(_half_spectrum_adjoint(cols, sw, sh * sw, grad_out.dtype,
                                                                                 grad_out.device))
    if need_input:
        if scale == 1:
            grad_y = torch.fft.irfft2(gs.mul_(hc), s=(h, w))
        else:
            # pixels (0::s, 0::s) of irfft2(T) on the (sh, sw) grid: the rows are those of the inverse of the
            # spectrum folded over its s row aliases (a transform on (h, sw)), scaled 1/s; then every s-th column
            folded = gs.view(b, c, scale, h, cols).mul_(hc.view(bk, c, scale, h, cols)).sum(2)
            grad_y = torch.fft.irfft2(folded, s=(h, sw))[..., ::scale].mul(1.0 / scale)
    return grad_y, grad_h


# ----------------------------------------------------------------------------------------------------
# Registration
# ----------------------------------------------------------------------------------------------------
@torch.library.custom_op('converse::apply_filter', mutates_args=())
def apply_filter(y: Tensor, filt_conj: Tensor, scale: int) -> tuple[Tensor, Tensor]:
    """out = irfft2(S(y) * G) (B, C, s*h, s*w) and conj(S(y)) as real pairs (B, C, h, s*w//2+1, 2), flat (the
    paired and interleaved forms: the conjugated pair spectrum; the interleaved form's out is (m, C, h, 2 w))."""
    return apply_filter_impl(y, filt_conj, scale)


@apply_filter.register_fake
def _(y, filt_conj, scale):
    b, c, h, w = y.shape
    out = y.new_empty(b, c, scale * h, scale * w)
    if is_paired(filt_conj, scale, w):
        return out, y.new_empty((b + 1) // 2 * c * h * w * 2)
    if is_interleaved(filt_conj, scale, w):
        return out, y.new_empty(b * c * h * w)
    return out, y.new_empty(b * c * h * (scale * w // 2 + 1) * 2)


@torch.library.custom_op('converse::apply_filter_backward', mutates_args=())
def apply_filter_backward(grad_out: Tensor, spec_conj: Tensor, filt_conj: Tensor, scale: int, need_input: bool,
                          need_filter: bool) -> tuple[Tensor, Tensor]:
    """(grad_y (B, C, h, w), grad_filt_conj shaped like filt_conj); an empty tensor for one not needed."""
    return apply_filter_backward_impl(grad_out, spec_conj, filt_conj, scale, need_input, need_filter)


@apply_filter_backward.register_fake
def _(grad_out, spec_conj, filt_conj, scale, need_input, need_filter):
    b, c, sh, sw = grad_out.shape
    grad_y = grad_out.new_empty(b, c, sh // scale, sw // scale) if need_input else grad_out.new_empty(0)
    grad_h = grad_out.new_empty(filt_conj.shape) if need_filter else grad_out.new_empty(0)
    return grad_y, grad_h


def _setup_context(ctx, inputs, output):
    _, filt_conj, scale = inputs
    ctx.scale = scale
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(output[1], filt_conj)


def _backward(ctx, grad_out, _grad_spec):
    spec_conj, filt_conj = ctx.saved_tensors
    need_y, need_h = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    grad_y, grad_h = torch.ops.converse.apply_filter_backward(grad_out, spec_conj, filt_conj, ctx.scale,
                                                              need_y, need_h)
    return (grad_y if need_y else None), (grad_h if need_h else None), None


apply_filter.register_autograd(_backward, setup_context=_setup_context)
