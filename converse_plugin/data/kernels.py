"""Blur kernels: loading them from files, and generating random ones for training.

Loading (:func:`load_kernels`) accepts

- a ``.npy`` file holding one 2-D kernel ``(k, k)`` or a stack ``(N, k, k)``;
- a folder: every ``.npy`` file in it, sorted by name (``kernel_1.npy`` ... ``kernel_5.npy``);
- a ``.npz`` file: all its arrays in stored order, or only the array named ``key``;
- a ``.mat`` file (MATLAB <= v7.2, read by :func:`scipy.io.loadmat`) and the variable ``key`` (optional
  when the file holds a single variable). The variable is a 2-D kernel, a cell array of 2-D kernels (taken
  in MATLAB's column-major order, e.g. USRNet's ``kernels`` is a 1x12 cell of 25x25 kernels) or a numeric
  ``(k, k, N)`` array (MATLAB's convention: the last axis indexes the kernels).

Every kernel must be 2-D, square, non-empty and finite; otherwise ``ValueError`` names the file.
Loaded kernels are returned as they are stored (not renormalised), as float64 arrays; kernels of one
file may differ in size (Levin et al.'s eight kernels do).

Generation (:func:`random_kernel`, driven by the ``kernel_generator`` option dict) gives non-negative,
finite ``(size, size)`` float64 kernels that sum to 1. Types are looked up in :data:`KERNEL_GENERATORS`.
"""
from __future__ import annotations

import math
import os
from os import path as osp
from typing import Any, Callable

import numpy as np


# ------------------------------------------------------------------------------------------------ loading
def check_kernel(kernel: Any, source: str) -> np.ndarray:
    """``kernel`` as a float64 array after checking it is 2-D, square, non-empty and finite.

    ``source`` (file and position) is named in the ``ValueError``.
    """
    try:
        k = np.asarray(kernel, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f'Kernel {source} is not a numeric array') from None
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.size == 0:
        raise ValueError(f'Kernel {source} must be a 2-D square array (k, k), got shape {k.shape}')
    if not np.all(np.isfinite(k)):
        raise ValueError(f'Kernel {source} has non-finite values (nan or inf)')
    return k


def _split_stack(arr: np.ndarray, source: str, stack_axis: int = 0) -> list[np.ndarray]:
    """One 2-D kernel, or a 3-D stack split along ``stack_axis``."""
    arr = np.asarray(arr)
    if arr.dtype == object:  # MATLAB cell array
        return [k for i, item in enumerate(arr.ravel(order='F'))
                for k in _split_stack(item, f'{source}[{i}]', stack_axis)]
    if arr.ndim == 3:
        return [check_kernel(np.take(arr, i, axis=stack_axis), f'{source}[{i}]') for i in range(arr.shape[stack_axis])]
    return [check_kernel(arr, source)]


def _load_npy(path: str) -> list[np.ndarray]:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f'Cannot read kernel file {path}: {err}') from err
    return _split_stack(arr, path)


def _load_npz(path: str, key: str | None) -> list[np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            if key is None:
                arrays = [(name, npz[name]) for name in npz.files]
            elif key in npz.files:
                arrays = [(key, npz[key])]
            else:
                raise ValueError(f"'kernels_key' {key!r} is not in {path}; it holds {npz.files}")
    except (OSError, EOFError) as err:
        raise ValueError(f'Cannot read kernel file {path}: {err}') from err
    if not arrays:
        raise ValueError(f'Kernel file {path} holds no arrays')
    return [k for name, arr in arrays for k in _split_stack(arr, f'{path}:{name}')]


def _load_mat(path: str, key: str | None) -> list[np.ndarray]:
    from scipy.io import loadmat
    try:
        mat = loadmat(path)
    except (OSError, ValueError, NotImplementedError) as err:  # NotImplementedError: v7.3 (HDF5) files
        raise ValueError(f'Cannot read kernel file {path} with scipy.io.loadmat: {err}') from err
    names = [name for name in mat if not name.startswith('__')]
    if key is None:
        if len(names) != 1:
            raise ValueError(f"'kernels_key' is required for {path}: name one of its variables {names}")
        key = names[0]
    if key not in mat:
        raise ValueError(f"'kernels_key' {key!r} is not a variable of {path}; it holds {names}")
    return _split_stack(mat[key], f'{path}:{key}', stack_axis=2)


def load_kernels(path: str | os.PathLike, key: str | None = None) -> list[np.ndarray]:
    """All kernels of ``path`` (file or folder, see the module docstring) as 2-D float64 arrays.

    Args:
        path: ``.npy`` / ``.npz`` / ``.mat`` file, or folder of ``.npy`` files.
        key: array name in a ``.npz`` (default: all arrays) or variable name in a ``.mat``.

    Raises:
        FileNotFoundError: ``path`` does not exist, or a folder holds no ``.npy`` file.
        ValueError: unknown file type, missing key, unreadable file, or a kernel that is not 2-D square
            and finite (the message names the file).
    """
    path = os.fspath(path)
    if osp.isdir(path):
        files = sorted(name for name in os.listdir(path) if name.lower().endswith('.npy'))
        if not files:
            raise FileNotFoundError(f"'kernels': folder {path} contains no .npy kernel files")
        return [k for name in files for k in _load_npy(osp.join(path, name))]
    if not osp.isfile(path):
        raise FileNotFoundError(f"'kernels': kernel file {path} does not exist")
    ext = osp.splitext(path)[1].lower()
    if ext == '.npy':
        return _load_npy(path)
    if ext == '.npz':
        return _load_npz(path, key)
    if ext == '.mat':
        return _load_mat(path, key)
    raise ValueError(f"'kernels': unsupported kernel file {path} (expected .npy, .npz, .mat or a folder)")


# --------------------------------------------------------------------------------------------- generation
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (size - 1) / 2.0
    ax = np.arange(size, dtype=np.float64) - c
    return np.meshgrid(ax, ax, indexing='xy')  # x: columns, y: rows


def _normalise(k: np.ndarray) -> np.ndarray:
    s = k.sum()
    if not np.isfinite(s) or s <= 0:  # degenerate (e.g. sigma -> 0 off-centre): fall back to a delta
        k = np.zeros_like(k)
        k[k.shape[0] // 2, k.shape[1] // 2] = 1.0
        return k
    return k / s


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0) -> np.ndarray:
    """Centred (an-)isotropic Gaussian ``(size, size)``, summing to 1.

    ``sigma_x``/``sigma_y`` are the standard deviations (pixels) along the axes rotated by ``theta``
    (radians, counter-clockwise); ``sigma_y`` defaults to ``sigma_x`` (isotropic).
    """
    sigma_y = sigma_x if sigma_y is None else sigma_y
    x, y = _grid(size)
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * x + s * y, -s * x + c * y
    return _normalise(np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2)))


def motion_kernel(size: int, length: float, rng: np.random.Generator, curvature: float = 0.5,
                  n_steps: int = 64) -> np.ndarray:
    """Random motion-blur kernel ``(size, size)``, summing to 1.

    A camera trajectory of total ``length`` pixels starts in a random direction and turns by a random
    angle ~ N(0, curvature^2 / n_steps) per step (``curvature=0``: a straight line); it is sampled at
    ``n_steps + 1`` points, splatted bilinearly and recentred so its centre of mass is the kernel centre.
    """
    if size == 1:
        return np.ones((1, 1))
    angle = rng.uniform(0, 2 * math.pi)
    turns = rng.normal(0.0, curvature / math.sqrt(n_steps), n_steps)
    angles = angle + np.concatenate([[0.0], np.cumsum(turns)])[:-1]
    step = length / n_steps
    pts = np.zeros((n_steps + 1, 2))
    pts[1:, 0] = np.cumsum(step * np.cos(angles))
    pts[1:, 1] = np.cumsum(step * np.sin(angles))
    pts -= pts.mean(axis=0)
    pts += (size - 1) / 2.0
    pts = np.clip(pts, 0, size - 1)
    k = np.zeros((size, size))
    x0 = np.clip(np.floor(pts[:, 0]).astype(int), 0, size - 2)
    y0 = np.clip(np.floor(pts[:, 1]).astype(int), 0, size - 2)
    fx, fy = pts[:, 0] - x0, pts[:, 1] - y0
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            np.add.at(k, (y0 + dy, x0 + dx), wy * wx)
    return _normalise(k)


def _range(cfg: dict, key: str, default: tuple[float, float], low: float = 0.0) -> tuple[float, float]:
    value = cfg.get(key, default)
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"'kernel_generator.{key}' must be a pair [lo, hi], got {value!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi or lo < low:
        raise ValueError(f"'kernel_generator.{key}' must satisfy {low} <= lo <= hi, got {value!r}")
    return lo, hi


def _gen_gaussian_iso(cfg: dict, size: int, rng: np.random.Generator) -> np.ndarray:
    lo, hi = _range(cfg, 'sigma_range', (0.5, 3.0), low=1e-3)
    return gaussian_kernel(size, rng.uniform(lo, hi))


def _gen_gaussian_aniso(cfg: dict, size: int, rng: np.random.Generator) -> np.ndarray:
    lo, hi = _range(cfg, 'sigma_range', (0.5, 3.0), low=1e-3)
    return gaussian_kernel(size, rng.uniform(lo, hi), rng.uniform(lo, hi), rng.uniform(0, math.pi))


def _gen_motion(cfg: dict, size: int, rng: np.random.Generator) -> np.ndarray:
    lo, hi = _range(cfg, 'length_range', (size / 4.0, size - 1.0))
    curvature = float(cfg.get('curvature', 0.5))
    return motion_kernel(size, rng.uniform(lo, hi), rng, curvature)


MIXED_TYPES = ('gaussian_iso', 'gaussian_aniso', 'motion')  # what type 'mixed' draws from without 'types'


def _gen_mixed(cfg: dict, size: int, rng: np.random.Generator) -> np.ndarray:
    types = list(cfg.get('types', MIXED_TYPES))
    bad = [t for t in types if t not in KERNEL_GENERATORS or t == 'mixed']
    if not types or bad:
        raise ValueError(f"'kernel_generator.types' must list kernel types from "
                         f"{sorted(set(KERNEL_GENERATORS) - {'mixed'})}, got {types!r}")
    probs = cfg.get('probs')
    if probs is not None and (len(probs) != len(types) or min(probs) < 0 or sum(probs) <= 0):
        raise ValueError(f"'kernel_generator.probs' must be {len(types)} non-negative weights, got {probs!r}")
    p = None if probs is None else np.asarray(probs, dtype=np.float64) / np.sum(probs)
    choice = types[int(rng.choice(len(types), p=p))]
    return KERNEL_GENERATORS[choice](cfg, size, rng)


#: kernel_generator ``type`` -> function(cfg, size, rng) returning a (size, size) kernel summing to 1.
KERNEL_GENERATORS: dict[str, Callable[[dict, int, np.random.Generator], np.ndarray]] = {
    'gaussian_iso': _gen_gaussian_iso,
    'gaussian_aniso': _gen_gaussian_aniso,
    'motion': _gen_motion,
    'mixed': _gen_mixed,
}


def check_generator_opt(cfg: dict) -> dict:
    """Validate a ``kernel_generator`` option dict once (type, size, and the ranges of every type it can
    draw); returns it."""
    if not isinstance(cfg, dict) or cfg.get('type') not in KERNEL_GENERATORS:
        got = cfg.get('type') if isinstance(cfg, dict) else cfg
        raise ValueError(f"'kernel_generator.type' must be one of {sorted(KERNEL_GENERATORS)}, got {got!r}")
    size = cfg.get('size', 7)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"'kernel_generator.size' must be a positive integer, got {size!r}")
    random_kernel(cfg, np.random.default_rng(0))  # fails now, not in a worker, on bad ranges
    if cfg['type'] == 'mixed':  # one draw tried one of the types: try each (their ranges differ)
        for kernel_type in cfg.get('types', MIXED_TYPES):
            KERNEL_GENERATORS[kernel_type](cfg, int(size), np.random.default_rng(0))
    return cfg


def random_kernel(cfg: dict, rng: np.random.Generator) -> np.ndarray:
    """A random ``(size, size)`` float64 kernel (non-negative, sums to 1) as ``cfg`` describes.

    Args:
        cfg: the ``kernel_generator`` option: ``type`` (``gaussian_iso | gaussian_aniso | motion | mixed``),
            ``size`` (default 7), and per type ``sigma_range`` (Gaussians, pixels, default [0.5, 3.0]),
            ``length_range`` (motion, pixels, default [size/4, size-1]), ``curvature`` (motion, default 0.5),
            ``types``/``probs`` (mixed: the types to choose from, default all three, and their weights).
        rng: the generator every random number is drawn from.
    """
    kernel_type = cfg.get('type')
    if kernel_type not in KERNEL_GENERATORS:
        raise ValueError(f"'kernel_generator.type' must be one of {sorted(KERNEL_GENERATORS)}, got {kernel_type!r}")
    return KERNEL_GENERATORS[kernel_type](cfg, int(cfg.get('size', 7)), rng)
