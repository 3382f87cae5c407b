"""Blur (with a known kernel) plus Gaussian noise made on the fly from clean images (deblurring)."""
from __future__ import annotations

from os import path as osp
from typing import Any

import numpy as np
import torch
from basicsr.utils.registry import DATASET_REGISTRY

from converse_plugin.data.common import (GTImageDataset, NoiseLevel, add_random_noise, check_positive_int, to_tensor,
                                         uint2float)
from converse_plugin.data.degradations import blur_float_wrap, deblur_protocol, modcrop
from converse_plugin.data.kernels import check_generator_opt, load_kernels, random_kernel


def _kernel_indices(value: Any, n_kernels: int, source: str) -> list[int]:
    """``kernel_index`` (1-based int or list of ints) -> 0-based indices into the loaded kernels."""
    values = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= v <= n_kernels:
            raise ValueError(f"'kernel_index' must be 1-based, between 1 and {n_kernels} (the kernels of "
                             f'{source}), got {value!r}')
        out.append(int(v) - 1)
    if not out:
        raise ValueError(f"'kernel_index' must name at least one kernel, got {value!r}")
    return out


@DATASET_REGISTRY.register()
class BlurKernelDataset(GTImageDataset):
    """Clean images of ``dataroot_gt`` blurred with a kernel, plus Gaussian noise; the kernel is returned.

    Kernels come from the file/folder ``kernels`` (see :func:`converse_plugin.data.kernels.load_kernels`;
    used as stored, not renormalised) or, in training, from ``kernel_generator`` (random kernels that sum
    to 1, see :func:`converse_plugin.data.kernels.random_kernel`; it wins over ``kernels`` there).

    ``kernel_index`` is **1-based**, like ``kernel_1.npy`` and the spec's tables (k1..k5): ``kernel_index:
    1`` is the first kernel (sorted file name / stored order); a list selects several.

    Evaluation (any phase but 'train'): every image with every selected kernel, length = n_images ×
    n_kernels, kernel-major (items 0..n_images-1 use the first kernel, and so on). Spec §4's protocol:
    HR modcropped to a multiple of ``modcrop`` (8), then
    :func:`~converse_plugin.data.degradations.deblur_protocol`: uint8 wrap-around convolution (truncated to
    uint8), /255, numpy's global generator reseeded with ``noise_seed`` and N(0, (sigma/255)²) added
    (global state restored afterwards). The blur and noise are done in RGB order like the authors' code.
    ``lq_path`` is ``<folder>/<stem>_k<kernel_index><ext>`` (not a real file) so that BasicSR's validation
    saves one image per kernel.

    Training: random ``gt_size`` crop and flips/rotation of the clean image, /255, float wrap-around
    convolution (:func:`~converse_plugin.data.degradations.blur_float_wrap`) with a random kernel, noise of
    level ``sigma`` (or uniform in ``sigma_range``) from the dataset's own generator; no clipping. Batching
    needs equal kernel sizes (always true for generated kernels).

    Option keys (besides those of :class:`~converse_plugin.data.common.GTImageDataset`: ``dataroot_gt``,
    ``io_backend``, ``gt_size``, ``use_hflip``, ``use_rot``):
        color (str): ``rgb`` (default) or ``gray``.
        kernels (str): kernel file or folder. Required for evaluation, and for training without
            ``kernel_generator``.
        kernels_key (str): array name in a ``.npz`` / variable name in a ``.mat``. Default: None.
        kernel_index (int | list[int]): 1-based kernel(s) of ``kernels`` to use. Default: all.
        kernel_generator (dict): training kernels made on the fly: ``type`` (gaussian_iso | gaussian_aniso
            | motion | mixed), ``size`` (7), ``sigma_range``, ``length_range``, ``curvature``, ``types``,
            ``probs``. Default: None.
        sigma (float): noise level on the 0-255 scale, in [0, 255]. Default: 2.55.
        sigma_range (list[float]): ``[lo, hi]``; training only, wins over ``sigma``.
        noise_seed (int): evaluation seed. Default: 0.
        modcrop (int): evaluation crops H and W to multiples of it. Default: 8.

    Returns (``__getitem__``): dict with
        lq (Tensor): blurred noisy image, (C, H, W) float32, RGB order, not clipped.
        gt (Tensor): clean image, (C, H, W) float32 in [0, 1].
        kernel (Tensor): the kernel, (1, k, k) float32.
        lq_path (str): see above (training: the clean image's path). gt_path (str): clean image's path.
    """

    def __init__(self, opt: dict) -> None:
        super().__init__(opt)
        self.noise = NoiseLevel.from_opt(opt, self.train, default=2.55)
        self.noise_seed = int(opt.get('noise_seed', 0))
        self.mod = check_positive_int(opt, 'modcrop', 8)

        self.generator_opt = None
        if self.train and opt.get('kernel_generator') is not None:
            self.generator_opt = check_generator_opt(dict(opt['kernel_generator']))

        self.kernels: list[np.ndarray] = []
        self.kernel_ids: list[int] = []  # 0-based indices into self.kernels
        if opt.get('kernels') is not None:
            source = str(opt['kernels'])
            self.kernels = load_kernels(source, opt.get('kernels_key'))
            if opt.get('kernel_index') is None:
                self.kernel_ids = list(range(len(self.kernels)))
            else:
                self.kernel_ids = _kernel_indices(opt['kernel_index'], len(self.kernels), source)
        elif self.generator_opt is None:
            need = "'kernels' (a kernel file or folder)"
            if self.train:
                need += " or 'kernel_generator'"
            raise ValueError(f"BlurKernelDataset needs {need} for phase {opt.get('phase', 'test')!r}")

    def __len__(self) -> int:
        if self.train:
            return len(self.paths)
        return len(self.paths) * len(self.kernel_ids)

    def __getitem__(self, index: int) -> dict:
        if self.train:
            return self._train_item(index)
        n_img = len(self.paths)
        kid = self.kernel_ids[index // n_img]
        img, gt_path = self.read_gt(index % n_img)
        img = modcrop(img, self.mod)
        kernel = self.kernels[kid]
        lq = deblur_protocol(img, kernel, self.noise.lo, seed=self.noise_seed)
        stem, ext = osp.splitext(osp.basename(gt_path))
        lq_path = osp.join(osp.dirname(gt_path), f'{stem}_k{kid + 1}{ext}')
        return {'lq': to_tensor(lq), 'gt': to_tensor(uint2float(img)), 'kernel': self._kernel_tensor(kernel),
                'lq_path': lq_path, 'gt_path': gt_path}

    def _train_item(self, index: int) -> dict:
        img, gt_path = self.read_gt(index)
        img = self.crop_and_augment(img, gt_path)
        rng = self.rng()
        if self.generator_opt is not None:
            kernel = random_kernel(self.generator_opt, rng)
        else:
            kernel = self.kernels[self.kernel_ids[int(rng.integers(len(self.kernel_ids)))]]
        gt = uint2float(img)
        lq = add_random_noise(blur_float_wrap(gt, kernel), self.noise.draw(rng), rng)
        return {'lq': to_tensor(lq), 'gt': to_tensor(gt), 'kernel': self._kernel_tensor(kernel),
                'lq_path': gt_path, 'gt_path': gt_path}

    @staticmethod
    def _kernel_tensor(kernel: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(kernel, dtype=np.float32))[None]
