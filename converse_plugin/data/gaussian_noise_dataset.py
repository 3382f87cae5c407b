"""Additive white Gaussian noise made on the fly from clean images (denoising)."""
from __future__ import annotations

import numpy as np
from basicsr.utils.registry import DATASET_REGISTRY

from converse_plugin.data.common import GTImageDataset, NoiseLevel, add_random_noise, to_tensor, uint2float
from converse_plugin.data.degradations import add_paper_noise

NOISE_PROTOCOLS = ('paper', 'per_image')


@DATASET_REGISTRY.register()
class GaussianNoiseDataset(GTImageDataset):
    """Clean images of ``dataroot_gt`` and the same images with Gaussian noise added.

    Training (``phase: train``): random ``gt_size`` crop, flips/rotation, then noise of a level drawn
    uniformly from ``sigma_range`` (or the fixed ``sigma``) for every sample, drawn from the dataset's own
    generator (see :mod:`converse_plugin.data.common`); no clipping.

    Evaluation (any other phase): the whole image, deterministic noise. With ``noise_protocol: paper``
    (default) it is spec §4's protocol bit for bit: uint8 image / 255 as float32, numpy's global generator
    reseeded with ``noise_seed`` for *every* image, ``np.random.normal(0, sigma/255, (H, W, C))`` added
    in float32, no clipping (:func:`~converse_plugin.data.degradations.add_paper_noise`; the global state
    is restored afterwards). Every image thus gets the same noise field. ``noise_protocol: per_image``
    instead seeds an independent generator with ``(noise_seed, index)``: still deterministic, different
    for every image, and never touching the global state.

    Option keys (besides those of :class:`~converse_plugin.data.common.GTImageDataset`: ``dataroot_gt``,
    ``io_backend``, ``gt_size``, ``use_hflip``, ``use_rot``):
        color (str): ``gray`` (default, the paper's setting) or ``rgb``.
        sigma (float): noise level on the 0-255 scale, in [0, 255]. Required for evaluation.
        sigma_range (list[float]): ``[lo, hi]`` on the 0-255 scale; training only, wins over ``sigma``.
        noise_seed (int): evaluation seed. Default: 0.
        noise_protocol (str): ``paper`` (default) or ``per_image``.

    Returns (``__getitem__``): dict with
        lq (Tensor): noisy image, (C, H, W) float32, RGB order (C = 1 for gray), not clipped.
        gt (Tensor): clean image, (C, H, W) float32 in [0, 1].
        lq_path, gt_path (str): the clean image's path (lmdb: its key).
    """

    default_color = 'gray'

    def __init__(self, opt: dict) -> None:
        super().__init__(opt)
        self.noise = NoiseLevel.from_opt(opt, self.train)
        self.noise_seed = int(opt.get('noise_seed', 0))
        self.noise_protocol = opt.get('noise_protocol', 'paper')
        if self.noise_protocol not in NOISE_PROTOCOLS:
            raise ValueError(f"'noise_protocol' must be one of {NOISE_PROTOCOLS}, got {self.noise_protocol!r}")

    def __getitem__(self, index: int) -> dict:
        img, gt_path = self.read_gt(index)
        if self.train:
            img = self.crop_and_augment(img, gt_path)
            gt = uint2float(img)
            lq = add_random_noise(gt, self.noise.draw(self.rng()), self.rng())
        else:
            gt = uint2float(img)
            sigma = self.noise.lo
            if self.noise_protocol == 'paper':
                lq = add_paper_noise(gt, sigma, self.noise_seed)
            else:
                gen = np.random.default_rng([self.noise_seed, index])
                lq = (gt + gen.normal(0.0, sigma / 255.0, gt.shape)).astype(np.float32)
        return {'lq': to_tensor(lq), 'gt': to_tensor(gt), 'lq_path': gt_path, 'gt_path': gt_path}
