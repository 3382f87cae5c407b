"""Tiled inference: run any image-to-image network on overlapping tiles and blend them.

:func:`tiled_forward` splits a (B, C, H, W) image into ``tile`` x ``tile`` windows that overlap by
``overlap`` pixels, calls ``fn`` on each, and blends the (optionally ``scale`` times larger) outputs with
weights that fall linearly to almost 0 across the overlap, so no seam shows where tiles meet. Only one
tile is passed to ``fn`` at a time, so the memory ``fn`` needs (activations, GPU memory) is bounded by
the tile size; the output and the weight sum are accumulated on the input's device (keep the input on
the CPU and let ``fn`` move each tile to the GPU to bound GPU memory by the tile alone).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ['tile_starts', 'blend_window', 'tiled_forward']


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of windows of length ``tile`` covering [0, size) with at least ``overlap`` in common.

    The last window ends exactly at ``size``; windows never leave the image.
    """
    if tile >= size:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def blend_window(length: int, ramp: int, ramp_start: bool, ramp_end: bool) -> torch.Tensor:
    """1-D weights of a tile: 1 inside, rising over ``ramp`` pixels at a side that borders another tile.

    The ramp runs (i + 1) / (ramp + 1), i = 0..ramp-1, so weights stay > 0 and two overlapping ramps sum
    to about 1; sides on the image border keep weight 1.
    """
    w = torch.ones(length, dtype=torch.float32)
    ramp = min(ramp, length)
    if ramp > 0:
        up = torch.arange(1, ramp + 1, dtype=torch.float32) / (ramp + 1)
        if ramp_start:
            w[:ramp] = up
        if ramp_end:
            w[length - ramp:] = torch.minimum(w[length - ramp:], up.flip(0))
    return w


def tiled_forward(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int | None, overlap: int = 32,
                  scale: int = 1, progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """``fn(x)`` computed on overlapping tiles of ``x`` and blended.

    Args:
        fn: maps (B, C, h, w) -> (B, C', scale*h, scale*w) for any tile size h, w.
        x: (B, C, H, W).
        tile: tile size in input pixels; ``None`` or 0, or an image no larger than ``tile``: one call ``fn(x)``.
        overlap: pixels shared by neighbouring tiles (input pixels); must be < ``tile``.
        scale: the output/input size ratio of ``fn``.
        progress: called with the number of tiles once, then with 1 after each tile (e.g. a progress bar).
    Returns:
        (B, C', scale*H, scale*W), on ``x``'s device, in ``fn``'s output dtype.

    Raises:
        ValueError: a bad ``tile``/``overlap``/``scale``, or ``fn`` returning a tile of the wrong size.
    """
    if x.dim() != 4:
        raise ValueError(f'tiled_forward expects a (B, C, H, W) input, got shape {tuple(x.shape)}')
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f'scale must be an integer >= 1, got {scale!r}')
    h, w = x.shape[-2:]
    if not tile or (h <= tile and w <= tile):
        return _checked(fn(x), x, scale, (0, 0))
    if tile < 1 or overlap < 0 or overlap >= tile:
        raise ValueError(f'need 0 <= tile_overlap < tile, got tile {tile} and overlap {overlap}')
    rows, cols = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    if progress is not None:
        progress(-len(rows) * len(cols))  # negative: the total, announced once
    out = weight = None
    for top in rows:
        for left in cols:
            patch = x[..., top:top + tile, left:left + tile]
            res = _checked(fn(patch), patch, scale, (top, left))
            th, tw = res.shape[-2:]
            wy = blend_window(th, overlap * scale, top > 0, top + tile < h)
            wx = blend_window(tw, overlap * scale, left > 0, left + tile < w)
            win = (wy[:, None] * wx[None, :]).to(device=x.device, dtype=torch.float32)
            if out is None:
                out = torch.zeros(*res.shape[:2], scale * h, scale * w, device=x.device, dtype=torch.float32)
                weight = torch.zeros(scale * h, scale * w, device=x.device, dtype=torch.float32)
            region = (..., slice(scale * top, scale * top + th), slice(scale * left, scale * left + tw))
            out[region] += res.to(device=x.device, dtype=torch.float32) * win
            weight[region[1:]] += win
            if progress is not None:
                progress(1)
    return (out / weight).to(res.dtype)


def _checked(res: torch.Tensor, inp: torch.Tensor, scale: int, where: tuple[int, int]) -> torch.Tensor:
    expected = (scale * inp.shape[-2], scale * inp.shape[-1])
    if res.dim() != 4 or tuple(res.shape[-2:]) != expected or res.shape[0] != inp.shape[0]:
        raise ValueError(f'the network returned shape {tuple(res.shape)} for the tile at {where} of shape '
                         f'{tuple(inp.shape)}; expected (B, C, {expected[0]}, {expected[1]}) for scale {scale}')
    return res
