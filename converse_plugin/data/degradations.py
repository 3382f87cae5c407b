"""Degradations made on the fly, and the exact evaluation protocols of spec §4.

Images here are numpy arrays, HWC, values in [0, 1] (float) or [0, 255] (uint8), as BasicSR's datasets
use them. Every function is deterministic given its arguments.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def modcrop(img: np.ndarray, multiple: int) -> np.ndarray:
    """Crop the bottom/right so height and width are multiples of ``multiple``."""
    h, w = img.shape[:2]
    return img[:h - h % multiple, :w - w % multiple, ...]


def paper_noise(shape: tuple[int, ...], sigma: float, seed: int = 0) -> np.ndarray:
    """The denoising protocol's noise: numpy's *global* generator reseeded with ``seed``, then
    ``np.random.normal(0, sigma / 255, shape)`` (float64). The global state is restored afterwards so
    that data loading does not disturb anyone else's random stream."""
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        return np.random.normal(0, sigma / 255.0, shape)
    finally:
        np.random.set_state(state)


def add_paper_noise(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """Spec §4 denoising: float32 image in [0, 1] plus :func:`paper_noise`, kept float32, no clipping
    (the authors add in place to a float32 array)."""
    out = img.astype(np.float32, copy=True)
    out += paper_noise(out.shape, sigma, seed)
    return out


def bicubic_downsample(img: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB-compatible antialiased bicubic ``imresize(img, 1/scale)`` of a float HWC image in [0, 1],
    kept in float (spec §4). Uses BasicSR's port of MATLAB's imresize."""
    from basicsr.utils.matlab_functions import imresize
    return imresize(img.astype(np.float64), 1.0 / scale).astype(np.float32)


def blur_uint8_wrap(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Spec §4 deblurring blur: a true convolution with wrap-around boundary of a uint8 HWC image with a
    2-D kernel, uint8 in and uint8 out (``scipy.ndimage.convolve``: results are truncated)."""
    if img.dtype != np.uint8:
        raise ValueError(f'blur_uint8_wrap expects a uint8 image, got {img.dtype}')
    k = np.asarray(kernel, dtype=np.float64)
    if img.ndim == 3:
        k = k[:, :, None]
    return ndimage.convolve(img, k, mode='wrap')


def blur_float_wrap(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolution with wrap-around boundary of a float HWC image (training degradations)."""
    k = np.asarray(kernel, dtype=np.float64)
    if img.ndim == 3:
        k = k[:, :, None]
    return ndimage.convolve(img.astype(np.float64), k, mode='wrap').astype(np.float32)


def deblur_protocol(img_uint8: np.ndarray, kernel: np.ndarray, noise_sigma: float = 2.55,
                    seed: int = 0) -> np.ndarray:
    """Spec §4 deblurring input: modcrop is the caller's; uint8 wrap blur, /255, then numpy's global
    generator reseeded with ``seed`` and N(0, (noise_sigma/255)^2) added (float64 result)."""
    blurred = blur_uint8_wrap(img_uint8, kernel).astype(np.float64) / 255.0
    return blurred + paper_noise(blurred.shape, noise_sigma, seed)
