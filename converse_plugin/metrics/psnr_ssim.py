"""PSNR/SSIM on the Y channel with MATLAB's convention (Y rounded to integers), as the published
numbers use. BasicSR's ``calculate_psnr(..., test_y_channel=True)`` keeps Y in float, which gives
about +0.02 dB on Set5 x4; use these metrics to reproduce the papers' tables.

Calling convention: BasicSR's (uint8 HWC BGR images, ``crop_border``, extra keys accepted).
"""
from __future__ import annotations

import numpy as np
from basicsr.metrics.psnr_ssim import _ssim
from basicsr.utils.registry import METRIC_REGISTRY


def y_channel_matlab(img: np.ndarray) -> np.ndarray:
    """Y of an HWC BGR image in [0, 255] (uint8 or float), MATLAB rgb2ycbcr, rounded (float64)."""
    img = img.astype(np.float64)
    if img.ndim == 2 or img.shape[2] == 1:
        return np.round(img.reshape(img.shape[0], img.shape[1]))
    b, g, r = img[..., 0], img[..., 1], img[..., 2]
    return np.round(16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0)


def _prepare(img, img2, crop_border):
    if img.shape != img2.shape:
        raise ValueError(f'Image shapes differ: {img.shape} vs {img2.shape}')
    y1, y2 = y_channel_matlab(img), y_channel_matlab(img2)
    if crop_border:
        y1 = y1[crop_border:-crop_border, crop_border:-crop_border]
        y2 = y2[crop_border:-crop_border, crop_border:-crop_border]
    return y1, y2


@METRIC_REGISTRY.register()
def calculate_psnr_y_matlab(img, img2, crop_border=0, **kwargs) -> float:
    """PSNR (dB) on MATLAB-rounded Y; images uint8 HWC BGR (or gray)."""
    y1, y2 = _prepare(img, img2, crop_border)
    mse = np.mean((y1 - y2) ** 2)
    return float('inf') if mse == 0 else float(10.0 * np.log10(255.0 * 255.0 / mse))


@METRIC_REGISTRY.register()
def calculate_ssim_y_matlab(img, img2, crop_border=0, **kwargs) -> float:
    """SSIM on MATLAB-rounded Y; images uint8 HWC BGR (or gray)."""
    y1, y2 = _prepare(img, img2, crop_border)
    return float(_ssim(y1, y2))
