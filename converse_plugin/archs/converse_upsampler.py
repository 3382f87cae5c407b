"""ConverseUpsampler: the module that takes the place of a conv + PixelShuffle stage or of a
ConvTranspose2d upsampler when an existing architecture is converted (see :mod:`converse_plugin.archs.convert`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from converse_plugin.ops import Converse2D


class ConverseUpsampler(nn.Module):
    """Channel mixing (``conv``, optional), then Converse2D upsampling by ``up.scale``, then optionally
    ``pixel_unshuffle(unshuffle)``.

    - In place of ``Conv2d(C_in, C * r**2) -> PixelShuffle(r)`` the conv keeps its kernel but outputs C
      channels, ``up`` is ``Converse2D(C, scale=r)`` and the PixelShuffle becomes ``nn.Identity``; where the
      PixelShuffle module must stay (it also serves a layer that is not converted), ``unshuffle = r`` makes
      this module output exactly what the PixelShuffle expects, so that shuffling it back is lossless.
    - In place of ``ConvTranspose2d(C_in, C, stride=s)``: ``conv`` is a 1x1 Conv2d (None for a depthwise
      C -> C transposed conv) and ``up`` is ``Converse2D(C, scale=s)``.

    State-dict keys: ``conv.*`` (when present) and ``up.weight``, ``up.bias``.

    Shapes: (B, C_in, H, W) -> (B, C, r*H, r*W), or (B, C * r**2, H, W) with ``unshuffle = r``.

    Example:
        >>> up = ConverseUpsampler(nn.Conv2d(16, 8, 3, padding=1), Converse2D(8, 8, 2, scale=2, padding=2))
        >>> up(torch.rand(1, 16, 10, 10)).shape
        torch.Size([1, 8, 20, 20])
    """

    def __init__(self, conv: nn.Module | None, up: Converse2D, unshuffle: int = 1) -> None:
        super().__init__()
        if unshuffle not in (1, up.scale):
            raise ValueError(f'unshuffle must be 1 or the Converse2D scale ({up.scale}), got {unshuffle!r}')
        self.conv = conv
        self.up = up
        self.unshuffle = unshuffle

    def extra_repr(self) -> str:
        return f'unshuffle={self.unshuffle}' if self.unshuffle > 1 else ''

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C, r*H, r*W), or (B, C*r*r, H, W) when ``unshuffle`` > 1."""
        if self.conv is not None:
            x = self.conv(x)
        x = self.up(x)
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        return x
