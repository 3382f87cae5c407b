"""Kernel loading (npy / folder / npz / mat) and random kernel generation."""
from pathlib import Path

import numpy as np
import pytest
from scipy.io import loadmat, savemat

import converse_plugin  # noqa: F401  (compat shims before basicsr)
from converse_plugin.data.kernels import (KERNEL_GENERATORS, check_generator_opt, gaussian_kernel, load_kernels,
                                          random_kernel)

SHARED = Path(__file__).resolve().parents[2].parent / 'shared'
KERNELS = SHARED / 'data' / 'kernels'
needs_shared = pytest.mark.skipif(not KERNELS.is_dir(), reason=f'shared kernels not found at {KERNELS}')


def _k(size: int, seed: int) -> np.ndarray:
    k = np.random.default_rng(seed).random((size, size))
    return k / k.sum()


# ------------------------------------------------------------------------------------------------ loading
def test_npy_single_and_stack(tmp_path):
    k = _k(5, 0)
    np.save(tmp_path / 'one.npy', k)
    out = load_kernels(tmp_path / 'one.npy')
    assert len(out) == 1 and np.array_equal(out[0], k)

    stack = np.stack([_k(3, i) for i in range(4)])
    np.save(tmp_path / 'stack.npy', stack)
    out = load_kernels(str(tmp_path / 'stack.npy'))
    assert len(out) == 4
    assert all(np.array_equal(a, b) for a, b in zip(out, stack))


def test_folder_is_sorted_by_name_and_ignores_other_files(tmp_path):
    ks = {'b.npy': _k(3, 1), 'a.npy': _k(5, 2), 'c.npy': _k(3, 3)}
    for name, k in ks.items():
        np.save(tmp_path / name, k)
    (tmp_path / 'notes.txt').write_text('not a kernel')
    out = load_kernels(tmp_path)
    assert [o.shape for o in out] == [(5, 5), (3, 3), (3, 3)]
    assert np.array_equal(out[0], ks['a.npy']) and np.array_equal(out[2], ks['c.npy'])


def test_loaded_kernels_are_not_renormalised(tmp_path):
    k = np.ones((3, 3)) * 2.0
    np.save(tmp_path / 'k.npy', k)
    assert load_kernels(tmp_path / 'k.npy')[0].sum() == 18.0


def test_npz_all_and_key(tmp_path):
    k1, k2 = _k(3, 1), _k(7, 2)
    np.savez(tmp_path / 'ks.npz', first=k1, second=k2)
    out = load_kernels(tmp_path / 'ks.npz')
    assert [o.shape for o in out] == [(3, 3), (7, 7)]
    only = load_kernels(tmp_path / 'ks.npz', key='second')
    assert len(only) == 1 and np.array_equal(only[0], k2)
    with pytest.raises(ValueError, match="'kernels_key' 'third' is not in .*ks.npz"):
        load_kernels(tmp_path / 'ks.npz', key='third')


def test_mat_cell_numeric_and_key(tmp_path):
    cell = np.empty((1, 3), dtype=object)
    ks = [_k(5, i) for i in range(3)]
    for i, k in enumerate(ks):
        cell[0, i] = k
    savemat(tmp_path / 'cell.mat', {'kernels': cell})
    out = load_kernels(tmp_path / 'cell.mat', key='kernels')
    assert len(out) == 3 and all(np.allclose(a, b) for a, b in zip(out, ks))
    # single variable: the key may be left out
    assert len(load_kernels(tmp_path / 'cell.mat')) == 3

    # numeric (k, k, N): MATLAB's convention, last axis indexes the kernels
    savemat(tmp_path / 'num.mat', {'K': np.stack(ks, axis=2), 'other': np.zeros(2)})
    out = load_kernels(tmp_path / 'num.mat', key='K')
    assert len(out) == 3 and np.allclose(out[1], ks[1])
    with pytest.raises(ValueError, match="'kernels_key' is required for .*num.mat"):
        load_kernels(tmp_path / 'num.mat')
    with pytest.raises(ValueError, match="'kernels_key' 'nope' is not a variable of .*num.mat"):
        load_kernels(tmp_path / 'num.mat', key='nope')


@needs_shared
def test_shared_kernel_files():
    five = load_kernels(KERNELS)  # the folder: only kernel_1..5.npy
    assert len(five) == 5 and all(k.shape == (7, 7) for k in five)
    assert np.array_equal(five[0], np.load(KERNELS / 'kernel_1.npy'))
    assert np.array_equal(five[4], np.load(KERNELS / 'kernel_5.npy'))

    usr = load_kernels(KERNELS / 'kernels_12.mat', 'kernels')
    ref = loadmat(KERNELS / 'kernels_12.mat')['kernels']
    assert len(usr) == 12 and all(k.shape == (25, 25) for k in usr)
    assert np.array_equal(usr[7], ref[0, 7].astype(np.float64))
    assert np.allclose([k.sum() for k in usr], 1.0, atol=1e-5)

    levin = load_kernels(KERNELS / 'Levin09_kernels.npz')
    assert [k.shape[0] for k in levin] == [19, 17, 15, 27, 13, 21, 23, 23]
    assert np.array_equal(load_kernels(KERNELS / 'Levin09_kernels.npz', 'k4')[0], levin[3])


@pytest.mark.parametrize('bad, what', [
    (np.ones((3, 4)), 'square'),
    (np.ones(9), '2-D'),
    (np.ones((2, 3, 4, 4)), '2-D'),
    (np.zeros((0, 0)), '2-D'),
])
def test_wrong_shape_names_file(tmp_path, bad, what):
    np.save(tmp_path / 'bad_kernel.npy', bad)
    with pytest.raises(ValueError, match=rf'bad_kernel\.npy.*{what}'):
        load_kernels(tmp_path / 'bad_kernel.npy')


def test_non_finite_names_file(tmp_path):
    k = _k(3, 0)
    k[1, 1] = np.nan
    np.save(tmp_path / 'nan_kernel.npy', k)
    with pytest.raises(ValueError, match=r'nan_kernel\.npy.*non-finite'):
        load_kernels(tmp_path / 'nan_kernel.npy')
    np.savez(tmp_path / 'inf.npz', a=_k(3, 0), b=np.full((3, 3), np.inf))
    with pytest.raises(ValueError, match=r'inf\.npz:b.*non-finite'):
        load_kernels(tmp_path / 'inf.npz')


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'kernels'.*missing\.npy does not exist"):
        load_kernels(tmp_path / 'missing.npy')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match=r"'kernels'.*empty contains no \.npy"):
        load_kernels(tmp_path / 'empty')
    (tmp_path / 'k.txt').write_text('1 2 3')
    with pytest.raises(ValueError, match=r'unsupported kernel file .*k\.txt'):
        load_kernels(tmp_path / 'k.txt')
    (tmp_path / 'corrupt.npy').write_bytes(b'not numpy')
    with pytest.raises(ValueError, match=r'Cannot read kernel file .*corrupt\.npy'):
        load_kernels(tmp_path / 'corrupt.npy')


# --------------------------------------------------------------------------------------------- generation
@pytest.mark.parametrize('kind', sorted(KERNEL_GENERATORS))
@pytest.mark.parametrize('size', [7, 15])
def test_generated_kernels_are_normalised_finite_right_size(kind, size):
    rng = np.random.default_rng(0)
    for _ in range(20):
        k = random_kernel({'type': kind, 'size': size}, rng)
        assert k.shape == (size, size)
        assert np.all(np.isfinite(k)) and k.min() >= 0
        assert k.sum() == pytest.approx(1.0, abs=1e-12)


def test_generation_is_reproducible_and_varies():
    cfg = {'type': 'mixed', 'size': 9}
    a = [random_kernel(cfg, np.random.default_rng(3)) for _ in range(2)]
    assert np.array_equal(a[0], a[1])
    rng = np.random.default_rng(3)
    b, c = random_kernel(cfg, rng), random_kernel(cfg, rng)
    assert not np.array_equal(b, c)


def test_gaussian_kernel_values():
    k = gaussian_kernel(5, 1.0)
    x = np.arange(5) - 2.0
    g = np.exp(-x ** 2 / 2)
    assert np.allclose(k, np.outer(g, g) / np.outer(g, g).sum())
    assert np.allclose(k, k.T) and np.allclose(k, k[::-1, ::-1])
    # anisotropic, theta = 0: wider along x (columns) than along y (rows)
    a = gaussian_kernel(9, 3.0, 0.8)
    assert a[4, 0] > a[0, 4]
    # rotating by 90 degrees swaps the axes
    assert np.allclose(gaussian_kernel(9, 3.0, 0.8, np.pi / 2), a.T)


def test_gaussian_iso_sigma_range_respected():
    rng = np.random.default_rng(0)
    lo = random_kernel({'type': 'gaussian_iso', 'size': 15, 'sigma_range': [0.5, 0.5]}, rng)
    hi = random_kernel({'type': 'gaussian_iso', 'size': 15, 'sigma_range': [3.0, 3.0]}, rng)
    assert np.allclose(lo, gaussian_kernel(15, 0.5)) and np.allclose(hi, gaussian_kernel(15, 3.0))


def test_motion_straight_line_is_centred():
    k = random_kernel({'type': 'motion', 'size': 11, 'length_range': [6, 6], 'curvature': 0}, np.random.default_rng(1))
    yy, xx = np.mgrid[:11, :11]
    assert (k * yy).sum() == pytest.approx(5.0, abs=0.5) and (k * xx).sum() == pytest.approx(5.0, abs=0.5)
    assert (k > 1e-3).sum() >= 6  # spread along the line, not a delta


def test_mixed_respects_types():
    k = random_kernel({'type': 'mixed', 'size': 9, 'types': ['gaussian_iso'], 'sigma_range': [2, 2]},
                      np.random.default_rng(0))
    assert np.allclose(k, gaussian_kernel(9, 2.0))


@pytest.mark.parametrize('cfg, match', [
    ({'type': 'box'}, r"'kernel_generator.type'"),
    ({'type': 'motion', 'size': 0}, r"'kernel_generator.size'"),
    ({'type': 'gaussian_iso', 'sigma_range': [3, 1]}, r"'kernel_generator.sigma_range'"),
    ({'type': 'mixed', 'types': ['gaussian_iso', 'disk']}, r"'kernel_generator.types'"),
    ({'type': 'mixed', 'probs': [1, 1]}, r"'kernel_generator.probs'"),
    # a range only some of the mixed types read: checked whichever type the first draw picks
    ({'type': 'mixed', 'probs': [0, 0, 1], 'sigma_range': ['rgb', 3.0]}, r"'kernel_generator.sigma_range'"),
    ({'type': 'mixed', 'probs': [1, 0, 0], 'length_range': [5, 1]}, r"'kernel_generator.length_range'"),
])
def test_generator_option_errors(cfg, match):
    with pytest.raises(ValueError, match=match):
        check_generator_opt(cfg)
