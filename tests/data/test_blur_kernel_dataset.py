"""BlurKernelDataset: evaluation items equal deblur_protocol; kernels; training blur + noise."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scipy.io import loadmat

import converse_plugin  # noqa: F401  (registers the datasets)
from basicsr.utils.registry import DATASET_REGISTRY
from converse_plugin.data.degradations import blur_float_wrap, deblur_protocol

SHARED = Path(__file__).resolve().parents[2].parent / 'shared'
B100 = SHARED / 'data' / 'B100_deblur5'
KERNELS = SHARED / 'data' / 'kernels'
needs_shared = pytest.mark.skipif(not (B100.is_dir() and KERNELS.is_dir()),
                                  reason=f'B100_deblur5 / kernels not found under {SHARED} (../shared is absent)')


def _dataset(root, **kw):
    opt = {'name': 'blur', 'type': 'BlurKernelDataset', 'dataroot_gt': str(root), 'io_backend': {'type': 'disk'},
           'phase': 'val'}
    opt.update(kw)
    return DATASET_REGISTRY.get(opt['type'])(opt)


@pytest.fixture
def setup(tmp_path):
    """Two RGB images (45x37, 30x44) and a folder of two kernels (5x5, 3x3), not normalised alike."""
    rng = np.random.default_rng(0)
    imgs = {}
    (tmp_path / 'gt').mkdir()
    for name, (h, w) in {'a.png': (45, 37), 'b.png': (30, 44)}.items():
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        cv2.imwrite(str(tmp_path / 'gt' / name), img)
        imgs[name] = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    (tmp_path / 'k').mkdir()
    k1 = rng.random((5, 5))
    k1 /= k1.sum()
    k2 = np.array([[0, 0.1, 0], [0.1, 0.6, 0.1], [0, 0.1, 0]])
    np.save(tmp_path / 'k' / 'kernel_1.npy', k1)
    np.save(tmp_path / 'k' / 'kernel_2.npy', k2)
    return tmp_path, imgs, [k1, k2]


def _chw(a):
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32))


def test_val_items_equal_deblur_protocol(setup):
    root, imgs, ks = setup
    ds = _dataset(root / 'gt', kernels=str(root / 'k'))
    assert len(ds) == 2 * 2  # images x kernels
    np.random.seed(99)
    before = np.random.get_state()
    order = [('a.png', 0), ('b.png', 0), ('a.png', 1), ('b.png', 1)]  # kernel-major
    for index, (name, kid) in enumerate(order):
        item = ds[index]
        hr = imgs[name]
        hr = hr[:hr.shape[0] // 8 * 8, :hr.shape[1] // 8 * 8]  # modcrop 8
        assert item['gt'].shape == (3, *hr.shape[:2])
        assert torch.equal(item['gt'], _chw(hr.astype(np.float32) / 255))
        assert torch.equal(item['lq'], _chw(deblur_protocol(hr, ks[kid], 2.55, seed=0)))
        assert torch.equal(item['kernel'], torch.from_numpy(ks[kid].astype(np.float32))[None])
        assert item['gt_path'] == str(root / 'gt' / name)
        assert item['lq_path'] == str(root / 'gt' / f'{Path(name).stem}_k{kid + 1}.png')
    after = np.random.get_state()
    assert np.array_equal(before[1], after[1]) and before[2] == after[2]
    assert len({ds[i]['lq_path'] for i in range(len(ds))}) == 4  # BasicSR saves distinct images


def test_val_sigma_seed_and_modcrop_options(setup):
    root, imgs, ks = setup
    item = _dataset(root / 'gt', kernels=str(root / 'k'), sigma=7.65, noise_seed=5, modcrop=4, kernel_index=2)[0]
    hr = imgs['a.png'][:44, :36]
    assert torch.equal(item['lq'], _chw(deblur_protocol(hr, ks[1], 7.65, seed=5)))


def test_kernel_index_is_one_based(setup):
    root, _, ks = setup
    ds = _dataset(root / 'gt', kernels=str(root / 'k'), kernel_index=2)
    assert len(ds) == 2
    assert all(torch.equal(ds[i]['kernel'][0], torch.from_numpy(ks[1].astype(np.float32))) for i in range(2))
    assert ds[1]['lq_path'].endswith('b_k2.png')
    ds = _dataset(root / 'gt', kernels=str(root / 'k'), kernel_index=[2, 1])
    assert len(ds) == 4 and ds[0]['kernel'].shape == (1, 3, 3) and ds[2]['kernel'].shape == (1, 5, 5)
    for bad in (0, 3, [1, 5], 'k1'):
        with pytest.raises(ValueError, match="'kernel_index' must be 1-based, between 1 and 2"):
            _dataset(root / 'gt', kernels=str(root / 'k'), kernel_index=bad)


def test_gray(setup):
    root, _, ks = setup
    item = _dataset(root / 'gt', kernels=str(root / 'k' / 'kernel_1.npy'), color='gray')[1]
    gray = cv2.imread(str(root / 'gt' / 'b.png'), cv2.IMREAD_GRAYSCALE)[:24, :40, None]
    assert item['lq'].shape == (1, 24, 40)
    assert torch.equal(item['lq'], _chw(deblur_protocol(gray, ks[0], 2.55)))


@needs_shared
def test_shared_b100_kernel_folder():
    ds = _dataset(B100, kernels=str(KERNELS))  # the folder holds kernel_1..5.npy (the .mat/.npz are ignored)
    assert len(ds) == 5 * 5
    item = ds[1 * 5 + 0]  # kernel 2, first image
    hr = cv2.cvtColor(cv2.imread(str(B100 / '101085.png')), cv2.COLOR_BGR2RGB)
    hr = hr[:hr.shape[0] // 8 * 8, :hr.shape[1] // 8 * 8]
    k2 = np.load(KERNELS / 'kernel_2.npy')
    assert torch.equal(item['lq'], _chw(deblur_protocol(hr, k2, 2.55, seed=0)))
    assert item['kernel'].shape == (1, 7, 7) and item['lq_path'].endswith('101085_k2.png')


@needs_shared
def test_shared_mat_kernels(tmp_path):
    cv2.imwrite(str(tmp_path / 'x.png'), np.full((32, 32, 3), 100, np.uint8))
    ds = _dataset(tmp_path, kernels=str(KERNELS / 'kernels_12.mat'), kernels_key='kernels')
    assert len(ds) == 12
    ref = loadmat(KERNELS / 'kernels_12.mat')['kernels'][0, 2]
    item = ds[2]
    assert item['kernel'].shape == (1, 25, 25)
    assert torch.equal(item['kernel'][0], torch.from_numpy(ref.astype(np.float32)))
    assert item['lq_path'].endswith('x_k3.png')


def test_training_generated_kernels(setup):
    root, imgs, _ = setup
    torch.manual_seed(0)
    ds = _dataset(root / 'gt', phase='train', gt_size=24, sigma=0, use_hflip=False, use_rot=False,
                  kernel_generator={'type': 'mixed', 'size': 9})
    assert len(ds) == 2
    kernels = []
    for i in (0, 1, 0):
        item = ds[i]
        k = item['kernel']
        assert k.shape == (1, 9, 9) and k.dtype == torch.float32
        assert torch.isfinite(k).all() and float(k.sum()) == pytest.approx(1.0, abs=1e-5)
        assert item['gt'].shape == item['lq'].shape == (3, 24, 24)
        gt = item['gt'].numpy().transpose(1, 2, 0)
        expected = blur_float_wrap(gt, k[0].numpy().astype(np.float64))
        assert np.allclose(item['lq'].numpy().transpose(1, 2, 0), expected, atol=1e-5)  # sigma 0: blur only
        kernels.append(k)
    assert not torch.equal(kernels[0], kernels[2])  # a new kernel for every sample


def test_training_loaded_kernels_and_noise(setup):
    root, _, ks = setup
    torch.manual_seed(0)
    ds = _dataset(root / 'gt', phase='train', gt_size=24, kernels=str(root / 'k'), sigma_range=[20, 20])
    seen = set()
    for _ in range(12):
        item = ds[0]
        k = item['kernel'][0].numpy()
        match = [j for j, ref in enumerate(ks) if ref.shape == k.shape and np.array_equal(k, ref.astype(np.float32))]
        assert len(match) == 1
        seen.add(match[0])
        blurred = blur_float_wrap(item['gt'].numpy().transpose(1, 2, 0), ks[match[0]])
        noise = item['lq'].numpy().transpose(1, 2, 0) - blurred
        assert noise.std() * 255 == pytest.approx(20, rel=0.15)
    assert seen == {0, 1}
    ds = _dataset(root / 'gt', phase='train', gt_size=24, kernels=str(root / 'k'), kernel_index=1)
    assert all(ds[0]['kernel'].shape == (1, 5, 5) for _ in range(4))


def test_errors(setup, tmp_path):
    root, _, _ = setup
    with pytest.raises(ValueError, match="needs 'kernels' .* for phase 'val'"):
        _dataset(root / 'gt')
    with pytest.raises(ValueError, match="needs 'kernels' .* or 'kernel_generator' for phase 'train'"):
        _dataset(root / 'gt', phase='train')
    # a generator alone is for training; evaluation needs fixed kernels
    with pytest.raises(ValueError, match="needs 'kernels'"):
        _dataset(root / 'gt', kernel_generator={'type': 'gaussian_iso'})
    with pytest.raises(ValueError, match="'kernel_generator.type'"):
        _dataset(root / 'gt', phase='train', kernel_generator={'type': 'box'})
    np.save(tmp_path / 'rect.npy', np.ones((3, 5)))
    with pytest.raises(ValueError, match=r'rect\.npy must be a 2-D square array'):
        _dataset(root / 'gt', kernels=str(tmp_path / 'rect.npy'))
    with pytest.raises(FileNotFoundError, match=r'nope\.npy does not exist'):
        _dataset(root / 'gt', kernels=str(tmp_path / 'nope.npy'))
    with pytest.raises(ValueError, match="'sigma' must be in"):
        _dataset(root / 'gt', kernels=str(root / 'k'), sigma=-2.55)
    with pytest.raises(ValueError, match="'modcrop' must be a positive integer"):
        _dataset(root / 'gt', kernels=str(root / 'k'), modcrop=0)
