"""No registered type breaks the early option checks: for every entry of BasicSR's registries (BasicSR's own,
the plugin's and those of another BasicSR project, ``realesrgan``, as ``--import realesrgan`` loads it), a
small working option tree with that one type substituted is either accepted by
:func:`~converse_plugin.engine.validate.validate_options` or refused with a one-line
:class:`~converse_plugin.errors.UserError` naming the option file; any other exception is a bug of the
checks (they must read other packages' classes by their public contract only).

Substitutions: ``network_g: {type: NAME}`` bare, with keys guessed from the constructor's signature (its
defaults, required arguments set to a small integer), and that block under ``ConverseConverted``;
``datasets:<train|val|test_1>:type`` with the generic keys of BasicSR's image datasets; ``model_type``;
``train:pixel_opt:type``; ``val:metrics:m:type``; in a training tree and, where it applies, a test tree.
The last tests simulate failures the installed types do not have (no ``len()``, multi-line messages).

Importing realesrgan here registers its plain names for the rest of the pytest process, as ``--import``
does for a run; BasicSR's ``get`` then resolves ``SRVGGNetCompact`` to realesrgan's class (same signature).
"""
from __future__ import annotations

import importlib.util
import inspect
import os
from os import path as osp
from typing import Any

import cv2
import numpy as np
import pytest

import converse_plugin  # noqa: F401  (the plugin's own registrations)
from converse_plugin.engine.validate import validate_options
from converse_plugin.errors import OptionError, UserError

if importlib.util.find_spec('realesrgan') is not None:
    import realesrgan  # noqa: F401  (another project's archs, datasets and models, as --import loads them)


from basicsr.utils.registry import (ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY,  # noqa: E402
                                    MODEL_REGISTRY)

FILE = 'x.yml'
SCALE = 2
SMALL_INT = 3  # a required constructor argument without a default


def _entries(registry) -> list[tuple[str, Any]]:
    return sorted(registry, key=lambda item: item[0])


def _yaml_value(value: Any) -> tuple[bool, Any]:
    """(True, value as a YAML file would give it: tuples as lists) or (False, None) for a default that an
    option file cannot spell (a class, a function)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True, value
    if isinstance(value, (list, tuple)):
        items = [_yaml_value(v) for v in value]
        return (True, [v for _, v in items]) if all(ok for ok, _ in items) else (False, None)
    return False, None


def guessed_keys(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Keyword options for ``obj`` from its signature: each default an option file can spell, each required
    argument ``SMALL_INT``; ``skip`` names the arguments BasicSR passes itself (a metric's images)."""
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return {}
    keys = {}
    for p in params:
        if p.name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            continue
        if p.default is inspect.Parameter.empty:
            keys[p.name] = SMALL_INT
        else:
            ok, value = _yaml_value(p.default)
            if ok:
                keys[p.name] = value
    return keys


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> dict[str, str]:
    """Paired folders of 4 tiny random PNGs: gt 32x32, lq 16x16 (scale 2), the same names."""
    root = tmp_path_factory.mktemp('registered_types')
    rng = np.random.default_rng(0)
    folders = {'gt': str(root / 'gt'), 'lq': str(root / 'lq')}
    for folder in folders.values():
        os.makedirs(folder)
    for i in range(4):
        gt = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        cv2.imwrite(osp.join(folders['gt'], f'img{i}.png'), gt)
        cv2.imwrite(osp.join(folders['lq'], f'img{i}.png'), cv2.resize(gt, (16, 16), interpolation=cv2.INTER_AREA))
    return folders


def _dataset(data: dict[str, str], phase: str, ds_type: str = 'PairedImageDataset') -> dict:
    ds = {'name': f'tiny_{phase}', 'type': ds_type, 'dataroot_gt': data['gt'], 'dataroot_lq': data['lq'],
          'io_backend': {'type': 'disk'}, 'filename_tmpl': '{}', 'scale': SCALE, 'phase': phase.split('_')[0]}
    if phase == 'train':
        ds.update(gt_size=16, use_hflip=True, use_rot=True, num_worker_per_gpu=0, batch_size_per_gpu=2,
                  dataset_enlarge_ratio=1, prefetch_mode=None)
    return ds


def _common(data: dict[str, str], is_train: bool) -> dict:
    return {'name': 'registered_types', 'model_type': 'SRModel', 'scale': SCALE, 'num_gpu': 0, 'manual_seed': 0,
            'is_train': is_train, 'dist': False, 'rank': 0, 'world_size': 1,
            'network_g': {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 4, 'num_block': 1,
                          'upscale': SCALE},
            'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None}}


def train_tree(data: dict[str, str]) -> dict:
    """A small training option tree that validate_options accepts (as BasicSR's parse_options returns it)."""
    opt = _common(data, True)
    opt['datasets'] = {'train': _dataset(data, 'train'), 'val': _dataset(data, 'val')}
    opt['train'] = {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]},
                    'scheduler': {'type': 'MultiStepLR', 'milestones': [10], 'gamma': 0.5}, 'total_iter': 10,
                    'warmup_iter': -1, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}}
    opt['val'] = {'val_freq': 5, 'save_img': False,
                  'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}}
    opt['logger'] = {'print_freq': 1, 'save_checkpoint_freq': 5, 'use_tb_logger': False}
    return opt


def basicsr_test_tree(data: dict[str, str]) -> dict:
    """A small test option tree (``basicsr test``) that validate_options accepts."""
    opt = _common(data, False)
    opt['datasets'] = {'test_1': _dataset(data, 'test_1')}
    opt['val'] = {'save_img': False, 'suffix': None,
                  'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}}
    return opt


def check(opt: dict, is_train: bool, entry: str) -> None:
    """validate_options returns a list of notes or raises a one-line UserError naming FILE; any other
    exception fails the test, naming ``entry`` (the registry and the name)."""
    try:
        notes = validate_options(opt, FILE, is_train=is_train)
    except UserError as err:
        msg = str(err)
        assert FILE in msg and '\n' not in msg, \
            f'{entry}: {type(err).__name__} message is not one line naming {FILE}: {msg!r}'
        return
    except Exception as err:  # noqa: BLE001 (fails the test: which entry broke the checks, with the traceback)
        pytest.fail(f'{entry}: validate_options raised {type(err).__name__}, not a UserError: {err}')
    assert isinstance(notes, list), f'{entry}: validate_options returned {notes!r}'


def tree(data: dict[str, str], is_train: bool) -> dict:
    return train_tree(data) if is_train else basicsr_test_tree(data)


def test_the_base_trees_are_accepted(data):
    assert validate_options(train_tree(data), FILE, is_train=True) == []
    assert validate_options(basicsr_test_tree(data), FILE, is_train=False) == []


TREES = pytest.mark.parametrize('is_train', [True, False], ids=['train', 'test'])
ARCHS = _entries(ARCH_REGISTRY)
ARCH_IDS = [n for n, _ in ARCHS]


@TREES
@pytest.mark.parametrize('name', ARCH_IDS)
def test_architecture_without_keys(data, name, is_train):
    opt = tree(data, is_train)
    opt['network_g'] = {'type': name}
    check(opt, is_train, f'ARCH_REGISTRY {name} (network_g without keys)')


@TREES
@pytest.mark.parametrize('name,cls', ARCHS, ids=ARCH_IDS)
def test_architecture_with_signature_keys(data, name, cls, is_train):
    opt = tree(data, is_train)
    opt['network_g'] = {'type': name, **guessed_keys(cls)}
    check(opt, is_train, f'ARCH_REGISTRY {name} (network_g {opt["network_g"]})')


@pytest.mark.parametrize('name,cls', ARCHS, ids=ARCH_IDS)
def test_architecture_converted(data, name, cls):
    """The plugin's ConverseConverted builds, traces and converts the registered architecture."""
    opt = train_tree(data)
    opt['network_g'] = {'type': 'ConverseConverted', 'network': {'type': name, **guessed_keys(cls)}}
    check(opt, True, f'ARCH_REGISTRY {name} (network_g {opt["network_g"]})')


DATASETS = [n for n, _ in _entries(DATASET_REGISTRY)]


@pytest.mark.parametrize('phase', ['train', 'val', 'test_1'])
@pytest.mark.parametrize('name', DATASETS)
def test_dataset(data, name, phase):
    is_train = phase != 'test_1'
    opt = tree(data, is_train)
    opt['datasets'][phase]['type'] = name
    check(opt, is_train, f'DATASET_REGISTRY {name} (datasets:{phase})')


@TREES
@pytest.mark.parametrize('name', [n for n, _ in _entries(MODEL_REGISTRY)])
def test_model(data, name, is_train):
    opt = tree(data, is_train)
    opt['model_type'] = name
    check(opt, is_train, f'MODEL_REGISTRY {name} (model_type)')


LOSSES = _entries(LOSS_REGISTRY)


@pytest.mark.parametrize('keys', ['bare', 'signature'])
@pytest.mark.parametrize('name,cls', LOSSES, ids=[n for n, _ in LOSSES])
def test_loss(data, name, cls, keys):
    opt = train_tree(data)
    opt['train']['pixel_opt'] = {'type': name, **(guessed_keys(cls) if keys == 'signature' else {})}
    check(opt, True, f'LOSS_REGISTRY {name} (train:pixel_opt {opt["train"]["pixel_opt"]})')


METRICS = _entries(METRIC_REGISTRY)


@pytest.mark.parametrize('keys', ['bare', 'signature'])
@pytest.mark.parametrize('name,fn', METRICS, ids=[n for n, _ in METRICS])
def test_metric(data, name, fn, keys):
    opt = basicsr_test_tree(data)
    metric = {'type': name, **(guessed_keys(fn, skip=('img', 'img2')) if keys == 'signature' else {})}
    opt['val']['metrics'] = {'m': metric}
    check(opt, False, f'METRIC_REGISTRY {name} (val:metrics:m {metric})')


# A registered type that fails in ways the installed ones do not (simulated on BasicSR's own classes).
def _throw(exc: BaseException):
    raise exc


@pytest.mark.parametrize('how', ['no_len', 'len_raises'])
def test_a_training_dataset_whose_len_fails_is_refused(data, monkeypatch, how):
    from basicsr.data.paired_image_dataset import PairedImageDataset
    if how == 'no_len':
        monkeypatch.delattr(PairedImageDataset, '__len__')
    else:
        monkeypatch.setattr(PairedImageDataset, '__len__', lambda self: _throw(RuntimeError('index not loaded')))
    with pytest.raises(OptionError, match=r'x\.yml: datasets:train: len\(\) of the dataset fails'):
        validate_options(train_tree(data), FILE, is_train=True)


MULTI_LINE = RuntimeError('first line\n  C++ stack line\nmore')


@pytest.mark.parametrize('cls_path,method,replacement,where', [
    ('basicsr.data.paired_image_dataset:PairedImageDataset', '__init__', lambda self, opt: _throw(MULTI_LINE),
     'datasets:train'),
    ('basicsr.data.paired_image_dataset:PairedImageDataset', '__getitem__', lambda self, i: _throw(MULTI_LINE),
     'datasets:train'),
    ('basicsr.data.paired_image_dataset:PairedImageDataset', '__len__', lambda self: _throw(MULTI_LINE),
     'datasets:train'),
    ('basicsr.archs.srresnet_arch:MSRResNet', 'forward', lambda self, x: _throw(MULTI_LINE),
     'network_g cannot process'),
    ('basicsr.archs.srresnet_arch:MSRResNet', 'forward', lambda self, x: _throw(KeyError('')),
     'network_g cannot process'),
    ('basicsr.losses.basic_loss:L1Loss', 'forward', lambda self, pred, target, weight=None: _throw(MULTI_LINE),
     'train:pixel_opt'),
], ids=['dataset_init', 'dataset_getitem', 'dataset_len', 'network_forward', 'network_forward_empty_key',
        'loss_forward'])
def test_other_packages_errors_become_one_line(data, monkeypatch, cls_path, method, replacement, where):
    import importlib
    module, name = cls_path.split(':')
    monkeypatch.setattr(getattr(importlib.import_module(module), name), method, replacement)
    with pytest.raises(OptionError) as info:
        validate_options(train_tree(data), FILE, is_train=True)
    msg = str(info.value)
    assert msg.startswith(f'{FILE}: ') and where in msg and '\n' not in msg, msg
    assert 'C++ stack' not in msg, msg
