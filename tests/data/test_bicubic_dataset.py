"""BicubicDownsampleDataset: float MATLAB-bicubic LR of the modcropped HR; training crops aligned."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import converse_plugin  # noqa: F401  (registers the datasets)
from basicsr.utils.matlab_functions import imresize
from basicsr.utils.registry import DATASET_REGISTRY

SHARED = Path(__file__).resolve().parents[2].parent / 'shared'
SET5 = SHARED / 'data' / 'Set5'


def _dataset(root, **kw):
    opt = {'name': 'sr', 'type': 'BicubicDownsampleDataset', 'dataroot_gt': str(root),
           'io_backend': {'type': 'disk'}, 'phase': 'val', 'scale': 4}
    opt.update(kw)
    return DATASET_REGISTRY.get(opt['type'])(opt)


@pytest.fixture
def hr(tmp_path):
    """One 50x37 RGB image (not a multiple of 4 or 3), smooth enough for bicubic to be meaningful."""
    rng = np.random.default_rng(0)
    img = cv2.resize(rng.integers(0, 256, (13, 10, 3), dtype=np.uint8), (37, 50), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(tmp_path / 'hr.png'), img)
    return tmp_path, cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_val_lr_is_float_imresize_of_modcropped_hr(hr, scale):
    root, rgb = hr
    item = _dataset(root, scale=scale)[0]
    h, w = 50 - 50 % scale, 37 - 37 % scale
    gt = rgb[:h, :w].astype(np.float32) / 255
    expected = imresize(gt.astype(np.float64), 1 / scale).astype(np.float32)
    assert item['gt'].shape == (3, h, w) and item['lq'].shape == (3, h // scale, w // scale)
    assert torch.equal(item['gt'], torch.from_numpy(gt.transpose(2, 0, 1)))
    assert torch.equal(item['lq'], torch.from_numpy(expected.transpose(2, 0, 1)))
    # kept in float: not on the uint8 grid
    assert not torch.equal(item['lq'], torch.round(item['lq'] * 255) / 255)


def test_quantize_lq(hr):
    root, _ = hr
    flt = _dataset(root)[0]['lq']
    q = _dataset(root, quantize_lq=True)[0]['lq']
    assert torch.equal(q * 255, torch.round(q * 255))
    assert torch.allclose(q, torch.round(flt.clamp(0, 1) * 255) / 255, atol=1e-7)
    assert (q - flt).abs().max() <= 0.5 / 255 + 1e-6


def test_gray(hr):
    root, rgb = hr
    item = _dataset(root, color='gray', scale=2)[0]
    assert item['gt'].shape == (1, 50, 36) and item['lq'].shape == (1, 25, 18)
    expected = imresize(item['gt'][0].numpy().astype(np.float64), 1 / 2).astype(np.float32)
    assert torch.equal(item['lq'][0], torch.from_numpy(expected))


@pytest.mark.skipif(not SET5.is_dir(), reason=f'Set5 not found at {SET5} (../shared is absent)')
def test_set5_butterfly_x4():
    ds = _dataset(SET5 / 'HR')
    names = [Path(p).name for p in ds.paths]
    item = ds[names.index('butterfly.png')]
    assert item['gt'].shape == (3, 256, 256) and item['lq'].shape == (3, 64, 64)
    premade = cv2.cvtColor(cv2.imread(str(SET5 / 'LR_bicubic' / 'X4' / 'butterflyx4.png')), cv2.COLOR_BGR2RGB)
    lq255 = item['lq'].numpy().transpose(1, 2, 0) * 255
    # close to the pre-made uint8 LR, not identical (spec §4)
    assert np.abs(lq255 - premade).max() < 2.5 and np.abs(lq255 - premade).mean() < 0.6


def test_training_crop_sizes_alignment_and_lr_consistency(hr):
    root, rgb = hr
    torch.manual_seed(0)
    full_lr = imresize(rgb[:48, :36].astype(np.float64) / 255, 1 / 4)  # 12x9
    ds = _dataset(root, phase='train', gt_size=32, use_hflip=False, use_rot=False)
    tops = set()
    for _ in range(12):
        item = ds[0]
        assert item['gt'].shape == (3, 32, 32) and item['lq'].shape == (3, 8, 8)
        gt = np.round(item['gt'].numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
        hits = [(t, l) for t in range(50 - 31) for l in range(37 - 31) if np.array_equal(rgb[t:t + 32, l:l + 32], gt)]
        assert len(hits) == 1
        t, l = hits[0]
        assert t % 4 == 0 and l % 4 == 0  # aligned to the scale
        tops.add((t, l))
        # LR made from the crop: bicubic of the crop itself ...
        crop_lr = imresize(item['gt'].numpy().transpose(1, 2, 0).astype(np.float64), 1 / 4)
        assert np.allclose(item['lq'].numpy().transpose(1, 2, 0), crop_lr, atol=1e-6)
        # ... and away from the crop border, the full image's LR at the same place
        inner = full_lr[t // 4 + 2:t // 4 + 6, l // 4 + 2:l // 4 + 6]
        assert inner.shape == (4, 4, 3) and np.allclose(crop_lr[2:-2, 2:-2], inner, atol=1e-6)
        assert not np.allclose(crop_lr, full_lr[t // 4:t // 4 + 8, l // 4:l // 4 + 8], atol=1e-3)  # borders differ
    assert len(tops) > 1


def test_training_flips_keep_lq_gt_paired(hr):
    root, _ = hr
    torch.manual_seed(1)
    ds = _dataset(root, phase='train', gt_size=24, scale=2)
    for _ in range(8):
        item = ds[0]
        assert item['gt'].shape == (3, 24, 24) and item['lq'].shape == (3, 12, 12)
        lr = imresize(item['gt'].numpy().transpose(1, 2, 0).astype(np.float64), 1 / 2)
        assert np.allclose(item['lq'].numpy().transpose(1, 2, 0), lr, atol=1e-5)


def test_option_errors(hr):
    root, _ = hr
    with pytest.raises(ValueError, match="'scale' must be a positive integer"):
        _dataset(root, scale=None)
    with pytest.raises(ValueError, match=r"'gt_size' \(30\) must be a multiple of 'scale' \(4\)"):
        _dataset(root, phase='train', gt_size=30)
    ds = _dataset(root, phase='train', gt_size=64)
    with pytest.raises(ValueError, match=r'hr\.png is 50x37 \(HxW\), smaller than gt_size 64x64'):
        ds[0]
