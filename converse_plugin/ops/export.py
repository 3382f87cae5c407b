"""The export form of Converse2D: real arithmetic only, FFTs as ``torch.fft`` calls, symbolic sizes.

ONNX has no complex tensors, and the operator's default path multiplies complex spectra inside a custom
operator (``torch.ops.converse.apply_filter``), which the exporter cannot translate. ``impl='real'`` of
:func:`converse_plugin.ops.functional.converse2d` writes the same closed form,

    X* = irfft2( tile_s(FFT(Y)) * G ),   G = Bhat + conj(F_K) * tile_s((1 - E) / (D + lam))

with every complex quantity held as a pair (real, imag) of real tensors; only the forward FFT
(``rfft2``/``fft2`` of a real tensor) and the inverse (``irfft2``) see complex values, through
``view_as_real``/``view_as_complex``, which the dynamo ONNX exporter maps to ONNX ``DFT``. The filter G
is recomputed from the kernel for the input's size, so the exported graph accepts any height and width.
By default the exported operator computes in float64 (inputs and outputs stay float32): onnxruntime's
DFT for sizes that are not powers of two is a direct sum, whose float32 round-off the small
regularisation (lam ~ 1e-3) of the upsampling layers amplifies past 1e-4; in float64 the exported model
matches PyTorch's float32 model to ~1e-5.

:func:`export_mode` selects that form on the layers of a model (every module with the attributes ``impl``
and ``compute_dtype``: :class:`~converse_plugin.ops.Converse2D` and ConverseUSRNet's data step) for the
duration of a ``with`` block and restores them after. No class is patched.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from converse_plugin.ops.functional import AMBIENT_IMPL, converse2d_real

__all__ = ['export_mode', 'converse2d_real']


def _selectable(module: nn.Module) -> bool:
    return hasattr(module, 'impl') and hasattr(module, 'compute_dtype')


@contextlib.contextmanager
def export_mode(model: nn.Module | torch.dtype | None = None,
                compute_dtype: torch.dtype = torch.float64) -> Iterator[None]:
    """Within the block, the Converse2D layers and data steps of ``model`` compute with ``impl='real'`` in
    ``compute_dtype`` (inputs and outputs stay float32); restored on exit (also on error).

    ``model=None`` (or a dtype as the only argument, ``export_mode(torch.float64)``) selects the export form
    for every layer that does not name one itself, process-wide for the block (not thread-safe).
    """
    if isinstance(model, torch.dtype):
        model, compute_dtype = None, model
    if model is None:
        saved = list(AMBIENT_IMPL)
        AMBIENT_IMPL[:] = ['real', compute_dtype]
        try:
            yield
        finally:
            AMBIENT_IMPL[:] = saved
        return
    layers = [m for m in model.modules() if _selectable(m)]
    saved_attrs = [(m.impl, m.compute_dtype) for m in layers]
    for m in layers:
        m.impl, m.compute_dtype = 'real', compute_dtype
    try:
        yield
    finally:
        for m, (impl, dtype) in zip(layers, saved_attrs):
            m.impl, m.compute_dtype = impl, dtype
