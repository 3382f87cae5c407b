"""The Converse2D module: owns the parameters, calls :func:`converse_plugin.ops.functional.converse2d`."""
from __future__ import annotations

import torch
from torch import nn

from converse_plugin.ops.functional import (AMBIENT_IMPL, PADDING_MODES, converse2d, converse_filter_conj,
                                            converse_lambda, pad_input, paired_form_pays, result_dtype)


class Converse2D(nn.Module):
    """Reverse convolution: a depthwise, optionally upscaling, closed-form deconvolution layer.

    Args:
        in_channels, out_channels: must be equal (the operator is depthwise).
        kernel_size: k, any integer >= 1 (odd or even).
        scale: integer upscaling factor s >= 1.
        padding: p, padded before the transform, p * s cropped after (the authors recommend k - 1).
        padding_mode: 'circular', 'replicate', 'reflect' or 'zeros'.
        eps: added to lam = sigmoid(bias - 9).

    Parameters: ``weight`` (1, C, k, k), initialised as a per-channel softmax of N(0, 1) samples;
    ``bias`` (1, C, 1, 1), zeros.

    Shapes: (B, C, H, W) -> (B, C, s*H, s*W).

    Example:
        >>> layer = Converse2D(8, 8, kernel_size=3, scale=2, padding=2)
        >>> layer(torch.rand(1, 8, 16, 16)).shape
        torch.Size([1, 8, 32, 32])

    In eval mode (or under ``torch.no_grad``), in eager mode, the kernel-dependent filter is cached per
    input size and recomputed whenever ``weight`` or ``bias`` change, including changes made through
    ``.data`` (BasicSR's EMA update), which PyTorch's version counters do not see: the cache keeps a copy of
    both and compares them (C·k² + C numbers; on a GPU the comparison waits for the device). Under
    torch.compile the filter is part of the graph instead.

    Formulation: the attributes ``impl`` ('fft', 'real' or None: see :func:`converse2d`) and
    ``compute_dtype`` select it per instance; :func:`converse_plugin.ops.export.export_mode` sets them on
    every layer of a model for the duration of a ``with`` block (ONNX export).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, scale: int = 1,
                 padding: int = 2, padding_mode: str = 'circular', eps: float = 1e-5) -> None:
        super().__init__()
        if in_channels != out_channels:
            raise ValueError(f'Converse2D is depthwise: in_channels ({in_channels}) must equal '
                             f'out_channels ({out_channels})')
        if not isinstance(kernel_size, int) or kernel_size < 1:
            raise ValueError(f'kernel_size must be an integer >= 1, got {kernel_size!r}')
        if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
            raise ValueError(f'scale must be an integer >= 1, got {scale!r}')
        if padding_mode not in PADDING_MODES:
            raise ValueError(f'padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}')
        if not isinstance(padding, int) or padding < 0:
            raise ValueError(f'padding must be an integer >= 0, got {padding!r}')
        if eps <= 0:
            raise ValueError(f'eps must be > 0, got {eps!r}')
        self.in_channels = self.out_channels = in_channels
        self.kernel_size = kernel_size
        self.scale = scale
        self.padding = padding
        self.padding_mode = padding_mode
        self.eps = eps
        self.weight = nn.Parameter(torch.softmax(torch.randn(1, in_channels, kernel_size * kernel_size), dim=-1)
                                   .view(1, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(1, in_channels, 1, 1))
        self.impl: str | None = None  # None: converse2d's default ('fft')
        self.compute_dtype: torch.dtype | None = None
        self._cache: tuple | None = None

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, scale={self.scale}, '
                f'padding={self.padding}, padding_mode={self.padding_mode!r}, eps={self.eps}')

    def _filter(self, height: int, width: int, dtype: torch.dtype, full: bool) -> torch.Tensor | None:
        """Cached filter for eager inference (``full``: all columns, for the operator's paired form); None when
        gradients are needed or under torch.compile (computed inside the graph)."""
        if torch.is_grad_enabled() and (self.weight.requires_grad or self.bias.requires_grad):
            return None
        key = (height, width, dtype, full, self.weight.device, self.weight._version, self.bias._version,
               self.weight.data_ptr(), self.bias.data_ptr())
        cache = self._cache
        if cache is not None and cache[0] == key and torch.equal(cache[2][0], self.weight) and \
                torch.equal(cache[2][1], self.bias):  # `.data` updates (BasicSR's model_ema) keep key and version
            return cache[1]
        with torch.no_grad():
            filt = converse_filter_conj(self.weight.to(dtype), converse_lambda(self.bias, self.eps).to(dtype),
                                        self.scale, height, width, full=full)
        self._cache = (key, filt, (self.weight.detach().clone(), self.bias.detach().clone()))
        return filt

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, s*H, s*W)."""
        return self._run(x, pairs=False)

    def takes_pairs(self) -> bool:
        """Whether :meth:`forward_pairs` applies: s = 1 and the 'fft' formulation."""
        return self.scale == 1 and (self.impl or AMBIENT_IMPL[0]) == 'fft'

    def forward_pairs(self, x: torch.Tensor) -> torch.Tensor:
        """The same layer on the interleaved pair layout of :func:`converse_plugin.ops.functional.to_pairs`:
        (m, C, H, 2 W) -> (m, C, H, 2 W). Only where :meth:`takes_pairs`."""
        if not self.takes_pairs():
            raise ValueError(f'Converse2D.forward_pairs needs scale 1 and impl fft, got scale {self.scale} and '
                             f'impl {self.impl or AMBIENT_IMPL[0]!r}')
        return self._run(x, pairs=True)

    def _run(self, x: torch.Tensor, pairs: bool) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f'Converse2D expects a 4-D input (B, C, H, W), got shape {tuple(x.shape)}')
        if x.shape[1] != self.in_channels:
            raise ValueError(f'Converse2D expects {self.in_channels} channels, got input of shape {tuple(x.shape)}')
        filt = None
        if ((not self.training or not torch.is_grad_enabled()) and (self.impl or AMBIENT_IMPL[0]) == 'fft'
                and not torch.compiler.is_compiling()):
            step = 2 if pairs else 1  # real columns per pixel
            height, width = x.shape[-2] + 2 * self.padding, x.shape[-1] // step + 2 * self.padding
            pad_input(x[:1, :1, :, :], self.padding, self.padding_mode, pairs)  # validates before caching
            filt = self._filter(height, width, result_dtype(x, self.weight),
                                pairs or paired_form_pays(x, self.weight, self.scale))
        return converse2d(x, self.weight, converse_lambda(self.bias, self.eps), self.scale, self.padding,
                          self.padding_mode, filt=filt, impl=self.impl, compute_dtype=self.compute_dtype, pairs=pairs)
