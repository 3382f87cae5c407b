"""The model zoo: the four released ConverseNet checkpoints and the DnCNN baseline.

Each :class:`ZooEntry` gives the architecture and its arguments (the YAML ``network_g``), the task, the
public download address, the sha256 of the file and the published numbers (../shared/reference/RESULTS.md
of the project; PSNR in dB). Checkpoints live in a *zoo directory*, chosen in this order:

1. the option ``path: zoo_dir`` (in an option file) or ``--dir`` (on the command line);
2. the environment variable ``CONVERSE_ZOO_DIR``;
3. ``~/.cache/converse_plugin/zoo`` (where ``basicsr zoo download`` puts files by default).

An option file may name a checkpoint as ``pretrain_network_g: zoo:converse_dncnn``;
:func:`resolve_zoo_paths` (called by :func:`converse_plugin.engine.options.parse_options`) replaces it
by the verified file. A missing file or a wrong sha256 is a :class:`ZooError` naming the file, the
entry and the expected sha256.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converse_plugin.errors import OptionError

__all__ = ['ZooEntry', 'ZooError', 'ZOO', 'ENV_ZOO_DIR', 'ZOO_PREFIX', 'get_entry', 'zoo_dir', 'sha256_file',
           'verify_file', 'checkpoint_path', 'download', 'verify_dir', 'resolve_zoo_paths']

ENV_ZOO_DIR = 'CONVERSE_ZOO_DIR'
ZOO_PREFIX = 'zoo:'
_CONVERSE_URL = 'https://github.com/cszn/ConverseNet/raw/main/model_zoo/'


class ZooError(OptionError):
    """A zoo name, file or checksum problem; the message names the file and what was expected."""


@dataclass(frozen=True)
class ZooEntry:
    """One released checkpoint. ``network_g`` is the YAML block (with ``type``) that loads it strictly;
    ``test`` holds what a test run needs besides the data: model type, scale, dataset template and
    metrics, as BasicSR option blocks (``dataroot_gt`` relative to the working directory)."""
    name: str
    task: str
    url: str
    sha256: str
    network_g: dict[str, Any]
    published: dict[str, float]
    model_type: str = 'SRModel'
    scale: int = 1
    test_dataset: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    licence: str = 'none stated'

    @property
    def file(self) -> str:
        return f'{self.name}.pth'

    @property
    def arch(self) -> str:
        return self.network_g['type']


_PLAIN_METRICS = {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False},
                  'ssim': {'type': 'calculate_ssim', 'crop_border': 0, 'test_y_channel': False}}
_Y_METRICS = {'psnr': {'type': 'calculate_psnr_y_matlab', 'crop_border': 4},
              'ssim': {'type': 'calculate_ssim_y_matlab', 'crop_border': 4}}
_DEBLUR_METRICS = {'psnr': {'type': 'calculate_psnr', 'crop_border': 1, 'test_y_channel': False},
                   'ssim': {'type': 'calculate_ssim', 'crop_border': 1, 'test_y_channel': False}}
_DENOISE_SET = {'name': 'Set12', 'type': 'GaussianNoiseDataset', 'dataroot_gt': 'datasets/Set12', 'color': 'gray',
                'sigma': 25, 'noise_seed': 0, 'noise_protocol': 'paper', 'io_backend': {'type': 'disk'}}
_SR_SET = {'name': 'Set5', 'type': 'BicubicDownsampleDataset', 'dataroot_gt': 'datasets/Set5/HR', 'color': 'rgb',
           'quantize_lq': False, 'io_backend': {'type': 'disk'}}
_DEBLUR_SET = {'name': 'B100_k1', 'type': 'BlurKernelDataset', 'dataroot_gt': 'datasets/BSD100', 'color': 'rgb',
               'kernels': 'datasets/kernels/kernel_1.npy', 'sigma': 2.55, 'noise_seed': 0, 'modcrop': 8,
               'io_backend': {'type': 'disk'}}
_DEBLUR_ARGS = {'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_block': 7, 'num_iter': 5,
                'padding': 2, 'padding_mode': 'circular'}

ZOO: dict[str, ZooEntry] = {e.name: e for e in [
    ZooEntry(
        name='converse_dncnn', task='gray Gaussian denoising, sigma 25',
        url=_CONVERSE_URL + 'converse_dncnn.pth',
        sha256='3b86c7f6e41a014448f923bc331232e1f45e2eae350dd7f9e18440803d283e89',
        network_g={'type': 'ConverseDnCNN', 'num_in_ch': 1, 'num_out_ch': 1, 'num_feat': 64, 'num_block': 20,
                   'kernel_size': 7, 'padding': 6, 'padding_mode': 'circular'},
        published={'Set12 PSNR': 30.70, 'BSD68 PSNR': 29.36, 'Set12 SSIM': 0.8683},
        test_dataset=_DENOISE_SET, metrics=_PLAIN_METRICS),
    ZooEntry(
        name='converse_srresnet', task='x4 bicubic super-resolution',
        url=_CONVERSE_URL + 'converse_srresnet.pth',
        sha256='ed75a697f1ebb9f9ad6a53b7875bb76098f23b48d87bf6f0b0dd8cde6df81d2f',
        network_g={'type': 'ConverseMSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_block': 16,
                   'upscale': 4, 'kernel_size': 5, 'padding': 4, 'padding_mode': 'replicate'},
        published={'Set5 PSNR-Y': 32.25, 'Set14 PSNR-Y': 28.72, 'BSD100 PSNR-Y': 27.62, 'Urban100 PSNR-Y': 26.24,
                   'Set5 SSIM-Y': 0.8956},
        scale=4, test_dataset=_SR_SET, metrics=_Y_METRICS),
    ZooEntry(
        name='conversenet', task='blind deblurring (sf 1, noise 2.55/255)',
        url=_CONVERSE_URL + 'conversenet.pth',
        sha256='603cbb29075178410db9ab6166b247d2ddff32f349c59a7e1763c46feca270bd',
        network_g={'type': 'ConverseNet', **_DEBLUR_ARGS, 'kernel_size': 3},
        published={'BSD100 k1 PSNR': 27.69, 'BSD100 k2 PSNR': 24.43, 'BSD100 k3 PSNR': 31.28,
                   'BSD100 k4 PSNR': 27.64, 'BSD100 k5 PSNR': 27.31},
        test_dataset=_DEBLUR_SET, metrics=_DEBLUR_METRICS),
    ZooEntry(
        name='converse_usrnet', task='non-blind deblurring (sf 1, noise 2.55/255)',
        url=_CONVERSE_URL + 'converse_usrnet.pth',
        sha256='729529b8bc8cbda152d6b60734b01032b49c20fcb8b6da2fb33141d9c3378d82',
        network_g={'type': 'ConverseUSRNet', **_DEBLUR_ARGS, 'kernel_size': 7, 'prior_kernel_size': 3},
        published={'BSD100 k1 PSNR': 32.46, 'BSD100 k2 PSNR': 31.20, 'BSD100 k3 PSNR': 38.40,
                   'BSD100 k4 PSNR': 32.21, 'BSD100 k5 PSNR': 34.62},
        model_type='ConverseModel', test_dataset=_DEBLUR_SET, metrics=_DEBLUR_METRICS),
    ZooEntry(
        name='kair_dncnn_sigma25', task='gray Gaussian denoising, sigma 25 (DnCNN baseline)',
        url='https://github.com/cszn/KAIR/raw/master/model_zoo/dncnn_25.pth',
        sha256='0451a70de9b672ae037270498fbb1c17a1c1c4403785df586ff65df5b858e5b0',
        network_g={'type': 'DnCNN', 'num_in_ch': 1, 'num_out_ch': 1, 'num_feat': 64, 'num_conv': 17},
        published={'Set12 PSNR': 30.43, 'BSD68 PSNR': 29.23},
        test_dataset=_DENOISE_SET, metrics=_PLAIN_METRICS, licence='MIT'),
]}


def get_entry(name: str) -> ZooEntry:
    name = name[len(ZOO_PREFIX):] if name.startswith(ZOO_PREFIX) else name
    if name not in ZOO:
        raise ZooError(f'unknown zoo model {name!r}; known: {", ".join(ZOO)}')
    return ZOO[name]


def zoo_dir(directory: str | os.PathLike | None = None) -> Path:
    """``directory`` if given, else ``$CONVERSE_ZOO_DIR``, else ``~/.cache/converse_plugin/zoo``."""
    if directory:
        return Path(directory).expanduser()
    if os.environ.get(ENV_ZOO_DIR):
        return Path(os.environ[ENV_ZOO_DIR]).expanduser()
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join('~', '.cache')
    return Path(base).expanduser() / 'converse_plugin' / 'zoo'


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: str | os.PathLike, entry: ZooEntry) -> Path:
    """Return ``path`` if it exists and hashes to ``entry.sha256``; else raise :class:`ZooError`."""
    path = Path(path)
    if not path.is_file():
        raise ZooError(f'zoo checkpoint {entry.name}: file not found: {path} (expected sha256 {entry.sha256}); '
                       f'run `basicsr zoo download {entry.name} --dir {path.parent}` or set {ENV_ZOO_DIR}')
    digest = sha256_file(path)
    if digest != entry.sha256:
        raise ZooError(f'zoo checkpoint {entry.name}: {path} has sha256 {digest}, expected {entry.sha256} '
                       f'(a different or damaged file; download it again from {entry.url})')
    return path


def checkpoint_path(name: str, directory: str | os.PathLike | None = None) -> Path:
    """The verified checkpoint file of zoo model ``name`` in the zoo directory."""
    entry = get_entry(name)
    return verify_file(zoo_dir(directory) / entry.file, entry)


def download(name: str, directory: str | os.PathLike | None = None, url: str | None = None,
             urlopen: Callable[..., Any] = urllib.request.urlopen) -> Path:
    """Download zoo model ``name`` (from ``url``, default the entry's address) into the zoo directory.

    The file is written under a temporary name, verified, then renamed: a failed download or a wrong
    checksum leaves nothing behind. An already present, valid file is kept without downloading.
    """
    entry = get_entry(name)
    target = zoo_dir(directory) / entry.file
    if target.is_file() and sha256_file(target) == entry.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    source = url or entry.url
    from converse_plugin.io.checkpoint import atomic_write

    def fetch(out) -> None:
        with urlopen(source) as response:
            shutil.copyfileobj(response, out)
        out.flush()
        digest = sha256_file(out.name)
        if digest != entry.sha256:
            raise ZooError(f'zoo checkpoint {entry.name}: the file downloaded from {source} has sha256 {digest}, '
                           f'expected {entry.sha256}; not saved to {target}')

    atomic_write(target, fetch)  # a failed download or a wrong checksum leaves nothing behind
    return target


def verify_dir(directory: str | os.PathLike | None = None) -> dict[str, str]:
    """Status of every zoo entry in ``directory``: 'ok', 'missing' or 'sha256 mismatch (got ...)'."""
    root = zoo_dir(directory)
    status = {}
    for entry in ZOO.values():
        path = root / entry.file
        if not path.is_file():
            status[entry.name] = 'missing'
        else:
            digest = sha256_file(path)
            status[entry.name] = 'ok' if digest == entry.sha256 else f'sha256 mismatch (got {digest})'
    return status


def resolve_zoo_paths(opt: Mapping[str, Any], source: str = 'options') -> None:
    """Replace ``zoo:NAME`` values of ``path: pretrain_network_*`` in ``opt`` by verified files (in place).

    The zoo directory is ``path: zoo_dir`` if set, else ``$CONVERSE_ZOO_DIR``, else the default cache.
    """
    paths = opt.get('path')
    if not isinstance(paths, dict):
        return
    for key, value in list(paths.items()):
        if 'pretrain_network' in key and isinstance(value, str) and value.startswith(ZOO_PREFIX):
            try:
                paths[key] = str(checkpoint_path(value, paths.get('zoo_dir')))
            except ZooError as err:
                raise ZooError(f'{source}: path:{key}: {err}') from None
