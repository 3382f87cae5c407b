"""An export-friendly formulation of Converse2D: real arithmetic only, FFTs as ``torch.fft`` calls.

ONNX has no complex tensors, and the operator's reference path (:mod:`converse_plugin.ops.functional`)
multiplies complex spectra, builds its DFT matrices with ``torch.polar`` and runs the transform through
a custom autograd Function (``_ApplyFilter``), which the exporter cannot see into. Here the same
closed form,

    X* = irfft2( tile_s(FFT(Y)) * G ),   G = Bhat + conj(F_K) * tile_s((1 - E) / (D + lam))

is written with every complex quantity held as a pair (real, imag) of real tensors; only the forward
FFT (``rfft2``/``fft2`` of a real tensor) and the inverse (``irfft2``) see complex values, through
``view_as_real``/``view_as_complex``, which the dynamo ONNX exporter maps to ONNX ``DFT``. The filter G
is recomputed from the kernel for the input's size, so the exported graph accepts any height and width.
By default the exported operator computes in float64 (inputs and outputs stay float32): onnxruntime's
DFT for sizes that are not powers of two is a direct sum, whose float32 round-off the small
regularisation (lam ~ 1e-3) of the upsampling layers amplifies past 1e-4; in float64 the exported model
matches PyTorch's float32 model to ~1e-5.

:func:`export_mode` swaps this path in for every Converse2D layer and the ConverseUSRNet data step, for
the duration of a ``with`` block; outside it nothing changes. The two paths agree to float32 round-off
(``tests/tools/test_export.py`` checks it).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

from converse_plugin.ops.functional import Pair, converse_filter_pair, kernel_otf_pair, pad_input



def _dft_cos_sin(n: int, rows: int, offset: int, count: int, like: torch.Tensor) -> Pair:
    """cos and sin of theta[u, a] = 2 pi u (a - offset) / n, shape (rows, count): exp(-i theta) = cos - i sin.

    ``n`` and ``rows`` may be symbolic (traced sizes). The phase is reduced modulo n in integers before the
    conversion to floating point, so it stays exact for any grid size.
    """
    u = torch.arange(rows, device=like.device, dtype=torch.int64)[:, None]
    a = torch.arange(count, device=like.device, dtype=torch.int64)[None, :] - offset
    ua = u * a
    nt = torch.ones_like(ua[:1, :1]) * n  # n as a tensor: traces for a symbolic n
    phase = (ua - torch.div(ua, nt, rounding_mode='floor') * nt).to(like.dtype) * (2.0 * math.pi) / nt.to(like.dtype)
    return torch.cos(phase), torch.sin(phase)


def kernel_otf_real(weight: torch.Tensor, height: int, width: int, half: bool = False) -> Pair:
    """:func:`converse_plugin.ops.functional.kernel_otf_pair` with traceable DFT tables."""
    return kernel_otf_pair(weight, height, width, half, cos_sin=_dft_cos_sin)


def converse_filter_real(weight: torch.Tensor, lam: torch.Tensor, scale: int, height: int, width: int) -> Pair:
    """:func:`converse_plugin.ops.functional.converse_filter_pair` with traceable DFT tables:
    (real, imag), each (Bk, C, s*h, s*w//2+1)."""
    return converse_filter_pair(weight, lam, scale, height, width, cos_sin=_dft_cos_sin)


def _input_spectrum_real(y: torch.Tensor, scale: int) -> Pair:
    """Half spectrum of the zero-inserted input as (real, imag), (B, C, s*h, s*w//2+1)."""
    if scale == 1:
        spec = torch.view_as_real(torch.fft.rfft2(y))
        return spec[..., 0], spec[..., 1]
    w = y.shape[-1]
    spec = torch.view_as_real(torch.fft.fft2(y))
    spec = spec.repeat(1, 1, scale, scale, 1)[..., :scale * w // 2 + 1, :]
    return spec[..., 0], spec[..., 1]


# dtype of the transforms inside the exported operator (set by export_mode): float64 makes onnxruntime's
# DFT (a plain O(n^2) sum for sizes that are not powers of two) as accurate as PyTorch's float32 FFT.
_COMPUTE_DTYPE: list[torch.dtype] = [torch.float32]


def converse2d_real(x: torch.Tensor, weight: torch.Tensor, lam: torch.Tensor, scale: int = 1, padding: int = 2,
                    padding_mode: str = 'circular', filt: torch.Tensor | None = None,
                    compute_dtype: torch.dtype | None = None) -> torch.Tensor:
    """:func:`converse_plugin.ops.functional.converse2d` in real arithmetic (same arguments; ``filt`` is
    ignored: the filter is always recomputed, so that it follows the traced input size).

    Computes in ``compute_dtype`` (default: float32, or the one :func:`export_mode` sets) and returns
    float32 (float64 for float64 inputs), as the reference does.
    """
    out_dtype = torch.float64 if torch.float64 in (x.dtype, weight.dtype) else torch.float32
    dtype = compute_dtype or (torch.float64 if out_dtype == torch.float64 else _COMPUTE_DTYPE[0])
    x = x.to(dtype)
    y = pad_input(x, padding, padding_mode)
    h, w = y.shape[-2:]
    gr, gi = converse_filter_real(weight.to(dtype), lam.to(dtype), scale, h, w)
    sr, si = _input_spectrum_real(y, scale)
    spec = torch.stack((sr * gr - si * gi, sr * gi + si * gr), dim=-1)
    out = torch.fft.irfft2(torch.view_as_complex(spec), s=(scale * h, scale * w))
    if padding:
        c = padding * scale
        out = out[..., c:out.shape[-2] - c, c:out.shape[-1] - c]
    return out.to(out_dtype)


def _converse2d_module_forward(self, x: torch.Tensor) -> torch.Tensor:
    """Converse2D.forward through :func:`converse2d_real` (no filter cache: the filter follows the input size)."""
    from converse_plugin.ops.functional import converse_lambda
    if x.dim() != 4 or x.shape[1] != self.in_channels:
        raise ValueError(f'Converse2D expects a (B, {self.in_channels}, H, W) input, got {tuple(x.shape)}')
    return converse2d_real(x, self.weight, converse_lambda(self.bias, self.eps), self.scale, self.padding,
                           self.padding_mode)


@contextlib.contextmanager
def export_mode(compute_dtype: torch.dtype = torch.float64) -> Iterator[None]:
    """Within the block, Converse2D layers and ConverseUSRNet's data step use :func:`converse2d_real`,
    computing the operator in ``compute_dtype`` (inputs and outputs stay float32).

    Restores the originals on exit (also on error). Not thread-safe: it patches the classes/modules.
    """
    from converse_plugin.archs import converse_deblur_arch
    from converse_plugin.ops.converse2d import Converse2D

    saved = Converse2D.forward, converse_deblur_arch.converse2d, _COMPUTE_DTYPE[0]
    Converse2D.forward = _converse2d_module_forward
    converse_deblur_arch.converse2d = converse2d_real
    _COMPUTE_DTYPE[0] = compute_dtype
    try:
        yield
    finally:
        Converse2D.forward, converse_deblur_arch.converse2d, _COMPUTE_DTYPE[0] = saved
