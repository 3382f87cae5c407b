"""GaussianNoiseDataset: the paper's evaluation noise bit for bit, training noise and crops."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import converse_plugin  # noqa: F401  (registers the datasets)
from basicsr.utils.registry import DATASET_REGISTRY

SHARED = Path(__file__).resolve().parents[2].parent / 'shared'
SET12 = SHARED / 'data' / 'Set12'


def _dataset(root, **kw):
    opt = {'name': 'noise', 'type': 'GaussianNoiseDataset', 'dataroot_gt': str(root), 'io_backend': {'type': 'disk'},
           'phase': 'val', 'sigma': 25}
    opt.update(kw)
    return DATASET_REGISTRY.get(opt['type'])(opt)


def _global_state_equal(a, b):
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and a[2:] == b[2:]


def _paper_lq(img_uint8, sigma, seed=0):
    """The authors' protocol, spelled out: uint8 / 255 as float32, reseed, add normal noise in place."""
    x = img_uint8.astype(np.float32) / 255.0
    np.random.seed(seed)
    x += np.random.normal(0, sigma / 255.0, x.shape)
    return x


@pytest.mark.skipif(not SET12.is_dir(), reason=f'Set12 not found at {SET12} (../shared is absent)')
def test_val_noise_is_paper_protocol_bit_for_bit_on_set12():
    ds = _dataset(SET12)
    assert len(ds) == 12
    np.random.seed(1234)
    np.random.random(3)
    before = np.random.get_state()
    item = ds[0]
    after = np.random.get_state()
    assert _global_state_equal(before, after), 'the dataset must not change the global numpy RNG state'

    img = cv2.imread(str(SET12 / '01.png'), cv2.IMREAD_GRAYSCALE)[..., None]
    expected = _paper_lq(img, 25)
    assert item['lq'].dtype == torch.float32 and item['lq'].shape == (1, 256, 256)
    assert torch.equal(item['lq'], torch.from_numpy(expected.transpose(2, 0, 1)))
    assert torch.equal(item['gt'], torch.from_numpy(img.transpose(2, 0, 1).astype(np.float32) / 255))
    assert item['lq_path'] == item['gt_path'] == str(SET12 / '01.png')
    assert item['lq'].min() < 0 and item['lq'].max() > 1  # not clipped


def test_val_noise_protocol_gray_and_rgb(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (20, 24), dtype=np.uint8)
    color = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / 'g.png'), gray)
    (tmp_path / 'c').mkdir()
    cv2.imwrite(str(tmp_path / 'c' / 'c.png'), color)

    item = _dataset(tmp_path, sigma=15, noise_seed=3)[0]
    assert torch.equal(item['lq'][0], torch.from_numpy(_paper_lq(gray[..., None], 15, seed=3)[..., 0]))

    # rgb: the noise is drawn with shape (H, W, 3) in RGB order (the authors read RGB images)
    rgb = cv2.cvtColor(color, cv2.COLOR_BGR2RGB)
    item = _dataset(tmp_path / 'c', color='rgb', sigma=50)[0]
    assert item['lq'].shape == (3, 20, 24)
    assert torch.equal(item['lq'], torch.from_numpy(_paper_lq(rgb, 50).transpose(2, 0, 1)))


def test_val_noise_same_field_for_every_image_and_per_image_option(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(2):
        cv2.imwrite(str(tmp_path / f'{i}.png'), rng.integers(0, 256, (16, 16), dtype=np.uint8))
    ds = _dataset(tmp_path)
    n0, n1 = (ds[i]['lq'] - ds[i]['gt'] for i in range(2))
    assert torch.allclose(n0, n1, atol=1e-6)  # reseeded with 0 for every image: the same noise
    assert torch.equal(ds[1]['lq'], ds[1]['lq'])  # deterministic

    per = _dataset(tmp_path, noise_protocol='per_image')
    m0, m1 = (per[i]['lq'] - per[i]['gt'] for i in range(2))
    assert not torch.allclose(m0, m1, atol=1e-3)
    assert torch.equal(per[1]['lq'], per[1]['lq'])
    gen = np.random.default_rng([0, 1])
    expected = np.float32(cv2.imread(str(tmp_path / '1.png'), 0) / 255.) + gen.normal(0, 25 / 255, (16, 16))
    assert torch.allclose(per[1]['lq'][0], torch.from_numpy(expected.astype(np.float32)))
    with pytest.raises(ValueError, match="'noise_protocol' must be one of"):
        _dataset(tmp_path, noise_protocol='fresh')


def test_val_needs_sigma(tmp_path):
    cv2.imwrite(str(tmp_path / 'a.png'), np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="'sigma' is required"):
        _dataset(tmp_path, sigma=None)


def test_training_crops_and_noise_level(tmp_path):
    img = np.random.default_rng(2).integers(0, 256, (60, 70), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / 'a.png'), img)
    torch.manual_seed(0)
    ds = _dataset(tmp_path, phase='train', gt_size=32, sigma=30, use_hflip=False, use_rot=False)
    stds = []
    for _ in range(10):
        item = ds[0]
        assert item['lq'].shape == item['gt'].shape == (1, 32, 32)
        gt = (item['gt'][0].numpy() * 255).round().astype(np.uint8)
        # the crop is a window of the image (no flips requested)
        hits = [(t, l) for t in range(60 - 31) for l in range(70 - 31) if np.array_equal(img[t:t + 32, l:l + 32], gt)]
        assert len(hits) == 1
        stds.append(float((item['lq'] - item['gt']).std() * 255))
    assert np.mean(stds) == pytest.approx(30, rel=0.05)


def test_training_sigma_range(tmp_path):
    cv2.imwrite(str(tmp_path / 'a.png'), np.full((40, 40), 128, np.uint8))
    torch.manual_seed(0)
    ds = _dataset(tmp_path, phase='train', gt_size=40, sigma=None, sigma_range=[0, 50])
    items = [ds[0] for _ in range(30)]
    stds = np.array([float((it['lq'] - it['gt']).std() * 255) for it in items])
    assert stds.min() >= 0 and stds.max() <= 50 * 1.1
    assert stds.std() > 5  # the level changes from sample to sample


def test_training_without_gt_size_uses_whole_image(tmp_path):
    cv2.imwrite(str(tmp_path / 'a.png'), np.zeros((12, 20), np.uint8))
    item = _dataset(tmp_path, phase='train', use_rot=False)[0]
    assert item['gt'].shape == (1, 12, 20)
