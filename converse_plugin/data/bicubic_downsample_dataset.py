"""Bicubic (MATLAB ``imresize``) downsampling made on the fly from HR images (super-resolution)."""
from __future__ import annotations

import numpy as np
from basicsr.utils.registry import DATASET_REGISTRY

from converse_plugin.data.common import GTImageDataset, augment, random_crop, to_tensor, uint2float
from converse_plugin.data.degradations import bicubic_downsample, modcrop


@DATASET_REGISTRY.register()
class BicubicDownsampleDataset(GTImageDataset):
    """HR images of ``dataroot_gt`` and their bicubic downscale by ``scale``, made on the fly.

    Evaluation (any phase but 'train'): spec §4's ×s protocol: HR modcropped to a multiple of ``scale``;
    LR = :func:`~converse_plugin.data.degradations.bicubic_downsample` (BasicSR's port of MATLAB's
    antialiased ``imresize(·, 1/scale)``) of HR/255, kept in float (values may leave [0, 1] slightly).
    ``quantize_lq: true`` clips LR to [0, 1] and rounds it to uint8 levels (/255), like a saved LR file;
    pre-made ``LR_bicubic`` files are close but not identical (Set5 ×4: about 10 % of the values differ
    by one or two levels), hence spec §4's note that they give slightly different numbers.

    Training: a random ``gt_size`` crop of the HR whose top/left are multiples of ``scale`` (so the crop's
    LR pixel grid is the full image's LR grid), downsampled *after* cropping: cheap, and every LR pixel at
    least 2 pixels from the patch border equals the full image's LR there (only the outer ones see the
    crop's symmetric padding, within the kernel's reach of 2·scale HR pixels); then the same
    flips/rotation for LR and HR. ``gt_size`` must be a multiple of ``scale``.

    Option keys (besides those of :class:`~converse_plugin.data.common.GTImageDataset`: ``dataroot_gt``,
    ``io_backend``, ``gt_size``, ``use_hflip``, ``use_rot``):
        scale (int): downscale factor; BasicSR copies it from the top-level ``scale``. Required.
        color (str): ``rgb`` (default) or ``gray``.
        quantize_lq (bool): round LR to uint8 levels. Default: False.

    Returns (``__getitem__``): dict with
        lq (Tensor): LR, (C, H/scale, W/scale) float32, RGB order.
        gt (Tensor): modcropped (evaluation) or cropped (training) HR, (C, H, W) float32 in [0, 1].
        lq_path, gt_path (str): the HR image's path (lmdb: its key).
    """

    def __init__(self, opt: dict) -> None:
        super().__init__(opt)
        scale = opt.get('scale')
        if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
            raise ValueError(f"'scale' must be a positive integer (BasicSR sets it from the top-level 'scale'), "
                             f'got {scale!r}')
        self.scale = int(scale)
        if self.gt_size is not None and self.gt_size % self.scale:
            raise ValueError(f"'gt_size' ({self.gt_size}) must be a multiple of 'scale' ({self.scale})")
        self.quantize_lq = bool(opt.get('quantize_lq', False))

    def __getitem__(self, index: int) -> dict:
        img, gt_path = self.read_gt(index)
        if self.train and self.gt_size is not None:
            img = random_crop(img, self.gt_size, self.rng(), gt_path, align=self.scale)
        else:
            img = modcrop(img, self.scale)
        gt = uint2float(img)
        lq = bicubic_downsample(gt, self.scale)
        if lq.ndim == 2:  # imresize may drop a singleton channel axis
            lq = lq[..., None]
        if self.quantize_lq:
            lq = np.float32(np.round(np.clip(lq, 0.0, 1.0) * 255.0) / 255.0)
        if self.train:
            gt, lq = augment([gt, lq], self.use_hflip, self.use_rot, self.rng())
        return {'lq': to_tensor(lq), 'gt': to_tensor(gt), 'lq_path': gt_path, 'gt_path': gt_path}
