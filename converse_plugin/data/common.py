"""What the plugin's datasets share: listing and reading the clean images of ``dataroot_gt``, option
checks, the per-worker random generator, random crops and flips/rotations.

:class:`GTImageDataset` is the (unregistered) base of the three registered datasets. It reads images as
**uint8, HWC, RGB channel order** (``HxWx1`` for gray), because the evaluation protocols of spec §4 start
from the uint8 image and draw their noise in the RGB order of the authors' code (KAIR's
``imread_uint``). Subclasses therefore convert to tensors with :func:`to_tensor` (``bgr2rgb=False``),
and the tensors follow BasicSR's convention: CHW, RGB, float32.

Color handling (``color`` key): ``rgb`` decodes with ``cv2.IMREAD_COLOR``, so a gray file is replicated
into three equal channels; ``gray`` decodes with ``cv2.IMREAD_GRAYSCALE``, so a color file is converted
by the decoder to luma (0.299 R + 0.587 G + 0.114 B; it may differ from ``cv2.cvtColor`` by one level).

Randomness in training: every random choice (crop position, flips, noise level, noise, kernel) is drawn
from a :class:`numpy.random.Generator` owned by the dataset, never from numpy's or Python's global state.
It is seeded from ``torch.initial_seed()``, which BasicSR fixes with ``manual_seed`` and which the
DataLoader makes different for every worker and every epoch, so training is reproducible and workers
do not repeat each other.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from os import path as osp
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from torch.utils import data as data

from converse_plugin.errors import DataError, DataFileNotFoundError

from converse_plugin.io.images import IMAGE_EXTENSIONS as IMG_EXTENSIONS  # noqa: E402  (the one list)
COLORS = {'rgb': cv2.IMREAD_COLOR, 'gray': cv2.IMREAD_GRAYSCALE}


def is_train(opt: dict) -> bool:
    """BasicSR sets ``opt['phase']`` to 'train', 'val' or 'test'; anything but 'train' is evaluation."""
    return opt.get('phase', 'test') == 'train'


def uint2float(img: np.ndarray) -> np.ndarray:
    """uint8 image -> float32 in [0, 1], exactly as the protocols do it (``np.float32(img / 255.)``)."""
    return np.float32(img / 255.0)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """HWC float RGB (or HxWx1 gray) numpy image -> CHW float32 tensor (no channel swap: already RGB)."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))


# ----------------------------------------------------------------------------------------- option checks
def check_sigma(value: Any, key: str) -> float:
    """A noise level on the 0-255 scale: a finite number in [0, 255]; the error names ``key``."""
    try:
        sigma = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"'{key}' must be a number in [0, 255] (0-255 scale), got {value!r}") from None
    if not np.isfinite(sigma) or sigma < 0 or sigma > 255:
        raise ValueError(f"'{key}' must be in [0, 255] (0-255 scale), got {value!r}")
    return sigma


@dataclass(frozen=True)
class NoiseLevel:
    """A Gaussian noise level (0-255 scale): fixed ``sigma``, or uniform in ``[lo, hi]`` per sample."""

    lo: float
    hi: float

    @classmethod
    def from_opt(cls, opt: dict, train: bool, default: float | None = None) -> 'NoiseLevel':
        """``sigma_range: [lo, hi]`` (training only; wins over ``sigma`` there) or ``sigma``.

        Evaluation uses ``sigma`` (or ``default``); it raises ``ValueError`` naming the key when neither
        is given or a value is outside [0, 255].
        """
        if train and opt.get('sigma_range') is not None:
            rng = opt['sigma_range']
            if not isinstance(rng, Sequence) or isinstance(rng, str) or len(rng) != 2:
                raise ValueError(f"'sigma_range' must be a pair [lo, hi] (0-255 scale), got {rng!r}")
            lo, hi = check_sigma(rng[0], 'sigma_range'), check_sigma(rng[1], 'sigma_range')
            if lo > hi:
                raise ValueError(f"'sigma_range' must have lo <= hi, got {rng!r}")
            return cls(lo, hi)
        value = opt.get('sigma', default)
        if value is None:
            phase = opt.get('phase', 'test')
            need = "'sigma' or 'sigma_range'" if train else "'sigma'"
            raise ValueError(f'{need} is required (noise level on the 0-255 scale) for phase {phase!r}')
        sigma = check_sigma(value, 'sigma')
        return cls(sigma, sigma)

    def draw(self, rng: np.random.Generator) -> float:
        """A noise level on the 0-255 scale."""
        return self.lo if self.lo == self.hi else float(rng.uniform(self.lo, self.hi))


def add_random_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Training noise: float32 ``img`` + N(0, (sigma/255)^2) drawn from ``rng`` (float32, no clipping)."""
    noise = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma / 255.0)
    return img.astype(np.float32) + noise


def check_positive_int(opt: dict, key: str, default: int | None = None) -> int | None:
    """``opt[key]`` as a positive int (or ``default`` when absent); the error names ``key``."""
    value = opt.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"'{key}' must be a positive integer, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------- randomness, crops
def random_crop(img: np.ndarray, size: int, rng: np.random.Generator, path: str = '', align: int = 1) -> np.ndarray:
    """Random ``size`` x ``size`` crop of an HWC image; top/left are multiples of ``align``.

    Raises ``ValueError`` naming ``path`` and both sizes when the image is smaller than ``size``.
    """
    h, w = img.shape[:2]
    if h < size or w < size:
        raise DataError(f'Image {path} is {h}x{w} (HxW), smaller than gt_size {size}x{size}; remove it or '
                         'lower gt_size')
    top = int(rng.integers(0, (h - size) // align + 1)) * align
    left = int(rng.integers(0, (w - size) // align + 1)) * align
    return img[top:top + size, left:left + size, ...]


def augment(imgs: list[np.ndarray], hflip: bool, rotation: bool, rng: np.random.Generator) -> list[np.ndarray]:
    """The same random flips/rotation for every HWC image of ``imgs``.

    Like :func:`basicsr.data.transforms.augment` (horizontal flip, vertical flip and transpose, each with
    probability 1/2 when enabled), but drawn from ``rng`` instead of Python's global ``random``.
    """
    do_h = hflip and rng.random() < 0.5
    do_v = rotation and rng.random() < 0.5
    do_t = rotation and rng.random() < 0.5
    out = []
    for img in imgs:
        if do_h:
            img = img[:, ::-1, ...]
        if do_v:
            img = img[::-1, ...]
        if do_t:
            img = img.transpose(1, 0, *range(2, img.ndim))
        out.append(np.ascontiguousarray(img))
    return out


# ---------------------------------------------------------------------------------------- image listing
def list_images(folder: str, key: str = 'dataroot_gt') -> list[str]:
    """Sorted paths of the image files (``IMG_EXTENSIONS``) directly inside ``folder``.

    Raises ``FileNotFoundError`` when the folder does not exist and ``ValueError`` when it holds no image;
    both messages name ``key`` and the path.
    """
    if not osp.isdir(folder):
        raise DataFileNotFoundError(f"'{key}': folder {folder} does not exist")
    paths = sorted(osp.join(folder, name) for name in os.listdir(folder)
                   if name.lower().endswith(IMG_EXTENSIONS) and osp.isfile(osp.join(folder, name)))
    if not paths:
        raise DataError(f"'{key}': folder {folder} contains no image files ({', '.join(IMG_EXTENSIONS)})")
    return paths


def list_lmdb_keys(folder: str, key: str = 'dataroot_gt') -> list[str]:
    """Image keys of a BasicSR lmdb (``folder`` ends with ``.lmdb`` and holds ``meta_info.txt``)."""
    if not folder.endswith('.lmdb'):
        raise ValueError(f"'{key}': with io_backend lmdb the folder must end with '.lmdb', got {folder}")
    meta = osp.join(folder, 'meta_info.txt')
    if not osp.isfile(meta):
        raise FileNotFoundError(f"'{key}': lmdb {folder} has no meta_info.txt")
    with open(meta) as fin:
        keys = [line.split(' ')[0].rsplit('.', 1)[0] for line in fin if line.strip()]
    if not keys:
        raise ValueError(f"'{key}': lmdb {folder} lists no images in meta_info.txt")
    return keys


class GTImageDataset(data.Dataset):
    """Base class (not registered): the clean images of ``dataroot_gt`` and the shared options.

    Option keys read here:
        dataroot_gt (str): folder of images (disk backend: every image file in it, sorted by name) or a
            BasicSR ``.lmdb`` folder (lmdb backend). Required.
        io_backend (dict): ``{type: disk}`` (default) or ``{type: lmdb}``; passed to BasicSR's FileClient.
        color (str): ``rgb`` or ``gray``; default :attr:`default_color`.
        gt_size (int | None): training crop size of the clean image; None (default) = no crop.
        use_hflip (bool): random horizontal flips in training. Default: True.
        use_rot (bool): random 90-degree rotations (vertical flip + transpose) in training. Default: True.
        phase (str): set by BasicSR; anything but 'train' selects the deterministic evaluation path.
    """

    default_color = 'rgb'

    def __init__(self, opt: dict) -> None:
        super().__init__()
        self.opt = opt
        self.train = is_train(opt)
        self.color = opt.get('color', self.default_color)
        if self.color not in COLORS:
            raise ValueError(f"'color' must be one of {sorted(COLORS)}, got {self.color!r}")
        self.gt_size = check_positive_int(opt, 'gt_size')
        self.use_hflip = bool(opt.get('use_hflip', True))
        self.use_rot = bool(opt.get('use_rot', True))

        self.gt_folder = opt.get('dataroot_gt')
        if not self.gt_folder:
            raise ValueError("'dataroot_gt' is required: the folder (or .lmdb) of clean images")
        self.gt_folder = str(self.gt_folder)
        self.io_backend_opt = dict(opt.get('io_backend') or {'type': 'disk'})
        backend = self.io_backend_opt.get('type', 'disk')
        if backend == 'lmdb':
            self.io_backend_opt['db_paths'] = [self.gt_folder]
            self.io_backend_opt['client_keys'] = ['gt']
            self.paths = list_lmdb_keys(self.gt_folder)
        elif backend == 'disk':
            self.paths = list_images(self.gt_folder)
        else:
            raise ValueError(f"'io_backend.type' must be 'disk' or 'lmdb', got {backend!r}")
        self.file_client = None
        self._rng: np.random.Generator | None = None
        self._rng_key: tuple[int, int] | None = None

    # -- reading
    def read_gt(self, index: int) -> tuple[np.ndarray, str]:
        """The clean image ``index``: uint8, HxWx3 RGB (or HxWx1 gray), and its path (lmdb: its key)."""
        if self.file_client is None:
            from basicsr.utils import FileClient
            opt = dict(self.io_backend_opt)
            self.file_client = FileClient(opt.pop('type', 'disk'), **opt)
        gt_path = self.paths[index]
        try:
            img_bytes = self.file_client.get(gt_path, 'gt')
        except OSError as err:
            raise DataFileNotFoundError(f'Cannot read image file {gt_path}: {err}') from err
        if img_bytes is None:
            raise FileNotFoundError(f"Image key {gt_path} is not in lmdb {self.gt_folder} ('dataroot_gt')")
        img = cv2.imdecode(np.frombuffer(img_bytes, np.uint8), COLORS[self.color])
        if img is None:
            raise DataError(f'Cannot decode image file {gt_path}: not a readable image')
        if img.ndim == 2:
            img = img[..., None]
        else:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        return img, gt_path

    # -- training randomness
    def rng(self) -> np.random.Generator:
        """This process's generator, (re)seeded from ``torch.initial_seed()`` when that changes (new worker,
        new epoch's workers), so each worker draws its own reproducible stream."""
        key = (os.getpid(), torch.initial_seed())
        if self._rng is None or self._rng_key != key:
            self._rng = np.random.default_rng(key[1])
            self._rng_key = key
        return self._rng

    def get_rng_state(self) -> dict | None:
        """The state of this process's training generator (None before its first draw), for exact resume."""
        return None if self._rng is None else self._rng.bit_generator.state

    def set_rng_state(self, state: dict) -> None:
        """Continue the training generator from ``state`` (from :meth:`get_rng_state`) in this process."""
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = state
        self._rng_key = (os.getpid(), torch.initial_seed())

    def crop_and_augment(self, img: np.ndarray, path: str, align: int = 1) -> np.ndarray:
        """Training: random ``gt_size`` crop (top/left multiples of ``align``), then flips/rotation."""
        rng = self.rng()
        if self.gt_size is not None:
            img = random_crop(img, self.gt_size, rng, path, align)
        return augment([img], self.use_hflip, self.use_rot, rng)[0]

    def __len__(self) -> int:
        return len(self.paths)
