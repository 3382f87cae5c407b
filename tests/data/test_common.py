"""What the three datasets share: image listing/reading, color handling, io backends, option errors,
training randomness (own generator, global state untouched), crops and flips."""
import random

import cv2
import numpy as np
import pytest
import torch

import converse_plugin  # noqa: F401  (registers the datasets)
from basicsr.utils.registry import DATASET_REGISTRY
from converse_plugin.data.common import NoiseLevel, augment, random_crop

NAMES = ('GaussianNoiseDataset', 'BicubicDownsampleDataset', 'BlurKernelDataset')


def _write(folder, name, img):
    folder.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(folder / name), img)
    return folder / name


def _color(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _opt(name, root, **kw):
    base = {'type': name, 'name': 'x', 'dataroot_gt': str(root), 'io_backend': {'type': 'disk'}, 'phase': 'val',
            'scale': 2, 'sigma': 10}
    if name == 'BlurKernelDataset':
        k = np.full((3, 3), 1 / 9)
        np.save(root.parent / 'k.npy', k)
        base['kernels'] = str(root.parent / 'k.npy')
    base.update(kw)
    return base


def _build(opt):
    return DATASET_REGISTRY.get(opt['type'])(opt)


def test_registered_under_exact_names():
    for name in NAMES:
        assert name in DATASET_REGISTRY


# ------------------------------------------------------------------------------------------ listing errors
@pytest.mark.parametrize('name', NAMES)
def test_missing_dataroot_key(tmp_path, name):
    opt = _opt(name, tmp_path / 'gt')
    del opt['dataroot_gt']
    with pytest.raises(ValueError, match="'dataroot_gt' is required"):
        _build(opt)


@pytest.mark.parametrize('name', NAMES)
def test_nonexistent_dataroot(tmp_path, name):
    with pytest.raises(FileNotFoundError, match=r"'dataroot_gt': folder .*nowhere does not exist"):
        _build(_opt(name, tmp_path / 'nowhere'))


@pytest.mark.parametrize('name', NAMES)
def test_empty_dataroot(tmp_path, name):
    (tmp_path / 'gt').mkdir()
    (tmp_path / 'gt' / 'readme.txt').write_text('no images here')
    with pytest.raises(ValueError, match=r"'dataroot_gt': folder .*gt contains no image files"):
        _build(_opt(name, tmp_path / 'gt'))


def test_listing_is_sorted_and_only_images(tmp_path):
    for n in ('b.png', 'a.png', 'c.jpg'):
        _write(tmp_path / 'gt', n, _color(8, 8))
    (tmp_path / 'gt' / 'meta.txt').write_text('x')
    ds = _build(_opt('GaussianNoiseDataset', tmp_path / 'gt'))
    assert [p.rsplit('/', 1)[1] for p in ds.paths] == ['a.png', 'b.png', 'c.jpg']
    assert len(ds) == 3


@pytest.mark.parametrize('name', NAMES)
def test_unreadable_image_names_file(tmp_path, name):
    _write(tmp_path / 'gt', 'good.png', _color(16, 16))
    (tmp_path / 'gt' / 'broken.png').write_bytes(b'this is not a png')
    ds = _build(_opt(name, tmp_path / 'gt'))
    with pytest.raises(ValueError, match=r'Cannot decode image file .*broken\.png'):
        ds[0]


def test_file_removed_after_listing_names_file(tmp_path):
    path = _write(tmp_path / 'gt', 'gone.png', _color(8, 8))
    ds = _build(_opt('GaussianNoiseDataset', tmp_path / 'gt'))
    path.unlink()
    with pytest.raises(FileNotFoundError, match=r'gone\.png'):
        ds[0]


def test_bad_options(tmp_path):
    _write(tmp_path / 'gt', 'a.png', _color(8, 8))
    with pytest.raises(ValueError, match="'color' must be one of"):
        _build(_opt('GaussianNoiseDataset', tmp_path / 'gt', color='y'))
    with pytest.raises(ValueError, match="'io_backend.type' must be 'disk' or 'lmdb'"):
        _build(_opt('GaussianNoiseDataset', tmp_path / 'gt', io_backend={'type': 'memcached'}))
    with pytest.raises(ValueError, match="'gt_size' must be a positive integer"):
        _build(_opt('GaussianNoiseDataset', tmp_path / 'gt', gt_size=0))


# ---------------------------------------------------------------------------------------------- color
def test_gray_file_read_as_rgb_is_replicated(tmp_path):
    gray = np.random.default_rng(0).integers(0, 256, (12, 10), dtype=np.uint8)
    _write(tmp_path / 'gt', 'g.png', gray)
    ds = _build(_opt('BicubicDownsampleDataset', tmp_path / 'gt', color='rgb'))
    gt = ds[0]['gt']
    assert gt.shape == (3, 12, 10)
    for c in range(3):
        assert torch.equal(gt[c], torch.from_numpy(gray.astype(np.float32) / 255))


def test_color_file_read_as_gray_uses_opencv_luma(tmp_path):
    img = _color(12, 10)
    path = _write(tmp_path / 'gt', 'c.png', img)
    ds = _build(_opt('BicubicDownsampleDataset', tmp_path / 'gt', color='gray'))
    gt = ds[0]['gt']
    assert gt.shape == (1, 12, 10)
    # decoded with cv2.IMREAD_GRAYSCALE (the codec's luma conversion) ...
    ref = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
    assert torch.equal(gt[0], torch.from_numpy(ref))
    # ... which is 0.299 R + 0.587 G + 0.114 B up to one level
    luma = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255
    assert (gt[0] - torch.from_numpy(luma)).abs().max() <= 1.01 / 255


def test_tensors_are_rgb_order(tmp_path):
    img = np.zeros((8, 8, 3), np.uint8)
    img[..., 2] = 200  # red in OpenCV's BGR file order
    _write(tmp_path / 'gt', 'red.png', img)
    gt = _build(_opt('GaussianNoiseDataset', tmp_path / 'gt', color='rgb'))[0]['gt']
    assert torch.all(gt[0] == np.float32(200 / 255)) and torch.all(gt[1:] == 0)


# ----------------------------------------------------------------------------------------------- lmdb
def test_lmdb_backend_reads_same_images(tmp_path):
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs
    names = ['a.png', 'b.png']
    for i, n in enumerate(names):
        _write(tmp_path / 'gt', n, _color(12, 16, seed=i))
    make_lmdb_from_imgs(str(tmp_path / 'gt'), str(tmp_path / 'gt.lmdb'), names, ['a', 'b'], map_size=1 << 22)
    disk = _build(_opt('GaussianNoiseDataset', tmp_path / 'gt', color='rgb'))
    lmdb = _build(_opt('GaussianNoiseDataset', tmp_path / 'gt.lmdb', color='rgb', io_backend={'type': 'lmdb'}))
    assert lmdb.paths == ['a', 'b'] and len(lmdb) == 2
    for i in range(2):
        assert torch.equal(disk[i]['gt'], lmdb[i]['gt']) and torch.equal(disk[i]['lq'], lmdb[i]['lq'])
    with pytest.raises(ValueError, match="'dataroot_gt': with io_backend lmdb the folder must end with '.lmdb'"):
        _build(_opt('GaussianNoiseDataset', tmp_path / 'gt', io_backend={'type': 'lmdb'}))


# ---------------------------------------------------------------------------------------------- sigma
@pytest.mark.parametrize('kw, match', [
    ({'sigma': -1}, "'sigma' must be in \\[0, 255\\]"),
    ({'sigma': 256}, "'sigma' must be in \\[0, 255\\]"),
    ({'sigma': 'high'}, "'sigma' must be a number"),
    ({'sigma_range': [-5, 10], 'phase': 'train'}, "'sigma_range' must be in \\[0, 255\\]"),
    ({'sigma_range': [0, 300], 'phase': 'train'}, "'sigma_range' must be in \\[0, 255\\]"),
    ({'sigma_range': [20, 10], 'phase': 'train'}, "'sigma_range' must have lo <= hi"),
    ({'sigma_range': 10, 'phase': 'train'}, "'sigma_range' must be a pair"),
])
@pytest.mark.parametrize('name', ['GaussianNoiseDataset', 'BlurKernelDataset'])
def test_sigma_out_of_range_names_key(tmp_path, name, kw, match):
    _write(tmp_path / 'gt', 'a.png', _color(8, 8))
    with pytest.raises(ValueError, match=match):
        _build(_opt(name, tmp_path / 'gt', **kw))


def test_noise_level_draw():
    rng = np.random.default_rng(0)
    assert NoiseLevel.from_opt({'sigma': 15}, train=False).draw(rng) == 15.0
    # sigma_range is for training only; evaluation uses sigma
    assert NoiseLevel.from_opt({'sigma': 15, 'sigma_range': [0, 50]}, train=False) == NoiseLevel(15.0, 15.0)
    level = NoiseLevel.from_opt({'sigma': 15, 'sigma_range': [0, 50]}, train=True)
    draws = [level.draw(rng) for _ in range(200)]
    assert min(draws) >= 0 and max(draws) <= 50 and np.std(draws) > 5
    with pytest.raises(ValueError, match="'sigma' is required .* for phase 'val'"):
        NoiseLevel.from_opt({'phase': 'val', 'sigma_range': [0, 50]}, train=False)


# ------------------------------------------------------------------------------------- crops / augment
def test_image_smaller_than_gt_size_names_file_and_sizes(tmp_path):
    _write(tmp_path / 'gt', 'tiny.png', _color(20, 30))
    for name in NAMES:
        ds = _build(_opt(name, tmp_path / 'gt', phase='train', gt_size=24))
        with pytest.raises(ValueError, match=r'tiny\.png is 20x30 \(HxW\), smaller than gt_size 24x24'):
            ds[0]


def test_random_crop_alignment_and_content():
    img = np.arange(40 * 50).reshape(40, 50, 1)
    rng = np.random.default_rng(0)
    for _ in range(50):
        c = random_crop(img, 12, rng, align=4)
        top, left = divmod(int(c[0, 0, 0]), 50)
        assert c.shape == (12, 12, 1) and top % 4 == 0 and left % 4 == 0
        assert np.array_equal(c, img[top:top + 12, left:left + 12])


def test_augment_pairs_and_covers_all_eight():
    a = np.arange(12).reshape(3, 4, 1)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        x, y = augment([a, a * 10], True, True, rng)
        assert np.array_equal(y, x * 10)  # same transform for both
        seen.add(x.tobytes() + bytes(x.shape))
    assert len(seen) == 8  # the dihedral group
    x, = augment([a], False, False, rng)
    assert np.array_equal(x, a)


@pytest.mark.parametrize('name', NAMES)
def test_training_uses_own_generator_not_global_state(tmp_path, name):
    _write(tmp_path / 'gt', 'a.png', _color(40, 40))
    opt = _opt(name, tmp_path / 'gt', phase='train', gt_size=16, sigma_range=[5, 30])
    if name == 'BlurKernelDataset':
        opt['kernel_generator'] = {'type': 'mixed', 'size': 5}
    np.random.seed(1)
    random.seed(1)
    np_state, py_state = np.random.get_state(), random.getstate()
    torch.manual_seed(7)
    first = [_build(opt)[0] for _ in range(2)]
    np_after = np.random.get_state()
    assert np_after[0] == np_state[0] and np.array_equal(np_after[1], np_state[1]) and np_after[2] == np_state[2]
    assert random.getstate() == py_state
    # reproducible from torch's seed, different from sample to sample
    assert torch.equal(first[0]['lq'], first[1]['lq']) and torch.equal(first[0]['gt'], first[1]['gt'])
    ds = _build(opt)
    assert not torch.equal(ds[0]['lq'], ds[0]['lq'])
    torch.manual_seed(8)
    assert not torch.equal(_build(opt)[0]['lq'], first[0]['lq'])


def test_dataloader_workers_draw_different_reproducible_noise(tmp_path):
    """Each DataLoader worker reseeds its generator from its own torch seed: identical images get
    different noise in different workers, and the whole stream repeats under the same torch seed."""
    from basicsr.data import build_dataloader, build_dataset
    img = _color(16, 16)
    for n in ('a.png', 'b.png', 'c.png', 'd.png'):
        _write(tmp_path / 'gt', n, img)
    opt = _opt('GaussianNoiseDataset', tmp_path / 'gt', phase='train', color='rgb', use_hflip=False,
               use_rot=False, num_worker_per_gpu=2, batch_size_per_gpu=1)
    ds = build_dataset(opt)

    def run():
        torch.manual_seed(3)
        loader = build_dataloader(ds, opt, num_gpu=0, seed=3)
        return [b['lq'] - b['gt'] for b in loader]

    first, second = run(), run()
    assert len(first) == 4
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert len({x.numpy().tobytes() for x in first}) == 4
