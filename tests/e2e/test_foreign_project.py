"""A BasicSR project the plugin has never seen, laid out as Real-ESRGAN's and HAT's are: a package ``tinyproj``
whose ``archs/``, ``data/`` and ``models/`` import every ``*_arch.py`` / ``*_dataset.py`` / ``*_model.py`` of
their folder (BasicSR's ``scandir`` + ``importlib``), registering an SR network, a paired dataset and an
``SRModel`` subclass, and whose ``train.py`` calls BasicSR's ``train_pipeline(root_path)``.

On tiny paired data (GT 48x48, bicubic LQ x2):

1. ``basicsr train --import tinyproj`` trains with tinyproj's network, dataset and model, validates, saves
   ``net_g``;
2. tinyproj's own ``train.py`` with ``import converse_plugin`` at the top (BasicSR's loop, not the plugin's)
   trains to the same losses at the same ``manual_seed``;
3. ``basicsr test --import tinyproj`` tests the trained ``net_g``: PSNR in the log, images in ``results/``;
4. tinyproj's network inside ``ConverseConverted`` trains through ``basicsr train --import tinyproj``.
"""
from __future__ import annotations

import glob
import math
import os
import re
import textwrap
from dataclasses import dataclass
from os import path as osp

import pytest
import yaml

from tests.conformance.corpus import make_paired_folders  # read-only use: BasicSR-style paired folders
from tests.e2e.helpers import check_ok, experiment_log, run_cli, validation_values

slow = pytest.mark.slow  # the tests that run trainings in subprocesses (10-15 s each, the first 20 s)

SCALE = 2
SEED = 123

# ------------------------------------------------------------------------------------------ the project
PACKAGE_INIT = '''\
# flake8: noqa
from .archs import *
from .data import *
from .models import *
'''

# realesrgan/archs/__init__.py, word for word but for the package name and the suffix
SCAN_INIT = '''\
import importlib
from basicsr.utils import scandir
from os import path as osp

# automatically scan and import {kind} modules for registry
# scan all the files that end with '_{kind}.py' under the {folder} folder
{kind}_folder = osp.dirname(osp.abspath(__file__))
{kind}_filenames = [osp.splitext(osp.basename(v))[0] for v in scandir({kind}_folder) if v.endswith('_{kind}.py')]
# import all the {kind} modules
_{kind}_modules = [importlib.import_module(f'tinyproj.{folder}.{{file_name}}') for file_name in {kind}_filenames]
'''

ARCH = '''\
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn


class ResidualConv(nn.Module):
    def __init__(self, num_feat):
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(x)))


@ARCH_REGISTRY.register()
class TinySRNet(nn.Module):
    """conv, two residual convs, conv + PixelShuffle upscale, conv; plus the bilinear upscale of the input."""

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=16, upscale=2):
        super().__init__()
        self.upscale = upscale
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(ResidualConv(num_feat), ResidualConv(num_feat))
        self.upconv = nn.Conv2d(num_feat, num_feat * upscale * upscale, 3, 1, 1)
        self.pixel_shuffle = nn.PixelShuffle(upscale)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

    def forward(self, x):
        feat = self.body(F.relu(self.conv_first(x)))
        out = self.conv_last(F.relu(self.pixel_shuffle(self.upconv(feat))))
        return out + F.interpolate(x, scale_factor=self.upscale, mode='bilinear', align_corners=False)
'''

DATASET = '''\
from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.utils import get_root_logger
from basicsr.utils.registry import DATASET_REGISTRY


@DATASET_REGISTRY.register()
class TinyPairedDataset(PairedImageDataset):
    """BasicSR's PairedImageDataset that also returns each pair's index (``idx``) and says how many it has."""

    def __init__(self, opt):
        super().__init__(opt)
        get_root_logger().info(f'TinyPairedDataset {opt["name"]}: {len(self.paths)} pairs')

    def __getitem__(self, index):
        item = super().__getitem__(index)
        item['idx'] = index
        return item
'''

MODEL = '''\
import torch
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY


@MODEL_REGISTRY.register()
class TinySRModel(SRModel):
    """SRModel that also logs the mean dataset index of each training batch (l_idx, from the dataset's idx)."""

    def __init__(self, opt):
        super().__init__(opt)
        get_root_logger().info(f'TinySRModel: network {type(self.net_g).__name__}')

    def feed_data(self, data):
        super().feed_data(data)
        self.idx = data.get('idx')

    def optimize_parameters(self, current_iter):
        super().optimize_parameters(current_iter)
        self.log_dict['l_idx'] = torch.as_tensor(self.idx).float().mean().item()
'''

# realesrgan/train.py with `import converse_plugin` added at the top
TRAIN = '''\
# flake8: noqa
import converse_plugin
import os.path as osp
from basicsr.train import train_pipeline

import tinyproj.archs
import tinyproj.data
import tinyproj.models

if __name__ == '__main__':
    root_path = osp.abspath(osp.join(__file__, osp.pardir, osp.pardir))
    train_pipeline(root_path)
'''

NETWORK = {'type': 'TinySRNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'upscale': SCALE}
CONVERTED_NETWORK = {'type': 'ConverseConverted', 'network': NETWORK,
                     'convert': {'upsample': True, 'upsample_kernel_size': 2, 'upsample_padding': 2,
                                 'upsample_padding_mode': 'replicate', 'upsample_eps': 1e-3}}


def write_project(root: str) -> str:
    """``root/tinyproj``, the package; returns ``root`` (what goes on PYTHONPATH)."""
    files = {'__init__.py': PACKAGE_INIT, 'train.py': TRAIN,
             'archs/__init__.py': SCAN_INIT.format(kind='arch', folder='archs'), 'archs/tiny_arch.py': ARCH,
             'data/__init__.py': SCAN_INIT.format(kind='dataset', folder='data'), 'data/tiny_dataset.py': DATASET,
             'models/__init__.py': SCAN_INIT.format(kind='model', folder='models'), 'models/tiny_model.py': MODEL}
    for name, text in files.items():
        file = osp.join(root, 'tinyproj', name)
        os.makedirs(osp.dirname(file), exist_ok=True)
        with open(file, 'w', encoding='utf-8') as f:
            f.write(text)
    return root


# ------------------------------------------------------------------------------------------ option files
def paired(name: str, gt: str, lq: str, train: bool) -> dict:
    opt = {'name': name, 'type': 'TinyPairedDataset', 'dataroot_gt': gt, 'dataroot_lq': lq, 'filename_tmpl': '{}',
           'io_backend': {'type': 'disk'}}
    if train:
        opt.update({'gt_size': 32, 'use_hflip': True, 'use_rot': True, 'num_worker_per_gpu': 0,
                    'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 1, 'prefetch_mode': None})
    return opt


def train_option(name: str, network: dict, train: tuple[str, str], val: tuple[str, str]) -> dict:
    """A training file as BasicSR's own SR files are written (model TinySRModel, 4 iterations, validation at
    2 and 4)."""
    return {
        'name': name, 'model_type': 'TinySRModel', 'scale': SCALE, 'num_gpu': 0, 'manual_seed': SEED,
        'datasets': {'train': paired('TinyTrain', *train, train=True), 'val': paired('TinyVal', *val, train=False)},
        'network_g': network,
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-3, 'weight_decay': 0, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
                  'total_iter': 4, 'warmup_iter': -1,
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'val': {'val_freq': 2, 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': SCALE, 'test_y_channel': False}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': False,
                   'wandb': {'project': None, 'resume_id': None}},
        'dist_params': {'backend': 'nccl', 'port': 29500},
    }


def make_test_option(name: str, network: dict, pretrain: str, val: tuple[str, str]) -> dict:
    return {
        'name': name, 'model_type': 'TinySRModel', 'scale': SCALE, 'num_gpu': 0, 'manual_seed': SEED,
        'datasets': {'test_1': paired('TinyTest', *val, train=False)},
        'network_g': network,
        'path': {'pretrain_network_g': pretrain, 'param_key_g': 'params', 'strict_load_g': True},
        'val': {'save_img': True, 'suffix': None,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': SCALE, 'test_y_channel': False}}},
    }


def write_yaml(opt: dict, file: str) -> str:
    with open(file, 'w', encoding='utf-8') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return file


# ------------------------------------------------------------------------------------------ reading logs
TRAIN_LINE = re.compile(r'\[epoch:\s*(\d+), iter:\s*([\d,]+), lr:\(([^)]*)\)\].*?l_pix: (\S+) l_idx: (\S+)')


def losses(log: str) -> list[tuple[int, str, str, str]]:
    """(iteration, lr, l_pix, l_idx) of every training line of a BasicSR log, as printed."""
    return [(int(it.replace(',', '')), lr, pix, idx) for _, it, lr, pix, idx in TRAIN_LINE.findall(log)]


# ------------------------------------------------------------------------------------------ fixtures
@dataclass
class Project:
    root: str  # holds tinyproj/ (on PYTHONPATH) and is train.py's root_path
    train: tuple[str, str]
    val: tuple[str, str]

    @property
    def env(self) -> dict[str, str]:
        return {'PYTHONPATH': self.root}


@pytest.fixture(scope='module')
def project(tmp_path_factory) -> Project:
    root = str(tmp_path_factory.mktemp('foreign'))
    write_project(root)
    train = make_paired_folders(osp.join(root, 'data', 'train'), SCALE, n=4, seed=0)
    val = make_paired_folders(osp.join(root, 'data', 'val'), SCALE, n=2, seed=1)
    return Project(root, train, val)


@pytest.fixture(scope='module')
def cli_run(project) -> tuple[str, str]:
    """(1) ``basicsr train --import tinyproj``: (its --root, its log)."""
    option = write_yaml(train_option('tiny_cli', NETWORK, project.train, project.val),
                        osp.join(project.root, 'train_tiny_cli.yml'))
    out_root = osp.join(project.root, 'cli_root')
    check_ok(run_cli(['train', '-opt', option, '--import', 'tinyproj', '--root', out_root], cwd=project.root,
                     env=project.env, timeout=240))
    return out_root, experiment_log(out_root, 'tiny_cli')


# ------------------------------------------------------------------------------------------ tests
@slow
def test_cli_trains_with_the_projects_arch_dataset_and_model(cli_run):
    out_root, log = cli_run
    assert 'TinySRModel: network TinySRNet' in log  # the project's model built the project's network
    assert 'TinyPairedDataset TinyTrain: 4 pairs' in log and 'TinyPairedDataset TinyVal: 2 pairs' in log
    steps = losses(log)
    assert [s[0] for s in steps] == [1, 2, 3, 4], log[-3000:]
    assert all(math.isfinite(float(pix)) and float(pix) > 0 for _, _, pix, _ in steps)
    assert all(0 <= float(idx) <= 3 for _, _, _, idx in steps)  # the dataset's idx reached the model
    psnr = validation_values(log, 'TinyVal', 'psnr')
    # at iterations 2 and 4, and after training (BasicSR's last validation: the same network as at 4)
    assert len(psnr) == 3 and all(math.isfinite(v) and 15 < v < 60 for v in psnr) and psnr[1] == psnr[2], psnr
    models = osp.join(out_root, 'experiments', 'tiny_cli', 'models')
    assert sorted(osp.basename(f) for f in glob.glob(osp.join(models, 'net_g_*.pth'))) == [
        'net_g_2.pth', 'net_g_4.pth', 'net_g_latest.pth']
    import torch

    state = torch.load(osp.join(models, 'net_g_latest.pth'), map_location='cpu')['params']
    assert set(state) >= {'conv_first.weight', 'body.0.conv1.weight', 'upconv.weight', 'conv_last.bias'}
    assert state['upconv.weight'].shape == (8 * SCALE * SCALE, 8, 3, 3)
    assert all(torch.isfinite(v).all() for v in state.values())


@slow
def test_own_train_py_gives_the_same_losses(project, cli_run):
    """tinyproj/train.py runs BasicSR's own train_pipeline (the plugin only imported): same seed, same data,
    so every logged loss, learning rate and validation PSNR equals the plugin's run's."""
    _, cli_log = cli_run
    option = write_yaml(train_option('tiny_own', NETWORK, project.train, project.val),
                        osp.join(project.root, 'train_tiny_own.yml'))
    check_ok(run_cli(['-opt', option], cwd=project.root, env=project.env, timeout=240,
                     script=osp.join(project.root, 'tinyproj', 'train.py')))
    log = experiment_log(project.root, 'tiny_own')  # train.py's root_path: the folder above tinyproj/
    assert 'TinySRModel: network TinySRNet' in log
    own, cli = losses(log), losses(cli_log)
    assert len(own) == 4 and own == cli, f'BasicSR train.py: {own}\nbasicsr train: {cli}'
    assert validation_values(log, 'TinyVal', 'psnr') == validation_values(cli_log, 'TinyVal', 'psnr')
    assert osp.isfile(osp.join(project.root, 'experiments', 'tiny_own', 'models', 'net_g_latest.pth'))


@slow
def test_cli_tests_the_trained_network(project, cli_run):
    out_root, train_log = cli_run
    net_g = osp.join(out_root, 'experiments', 'tiny_cli', 'models', 'net_g_latest.pth')
    option = write_yaml(make_test_option('tiny_test', NETWORK, net_g, project.val), osp.join(project.root, 'test_tiny.yml'))
    test_root = osp.join(project.root, 'test_root')
    check_ok(run_cli(['test', '-opt', option, '--import', 'tinyproj', '--root', test_root], cwd=project.root,
                     env=project.env, timeout=240))
    log = experiment_log(test_root, 'tiny_test', kind='test')
    assert 'TinySRModel: network TinySRNet' in log and 'TinyPairedDataset TinyTest: 2 pairs' in log
    psnr = validation_values(log, 'TinyTest', 'psnr')
    # the same network on the same images as the training run's last validation
    assert len(psnr) == 1 and psnr[0] == pytest.approx(validation_values(train_log, 'TinyVal', 'psnr')[-1],
                                                        abs=1e-4), (psnr, train_log[-2000:])
    images = sorted(glob.glob(osp.join(test_root, 'results', 'tiny_test', 'visualization', 'TinyTest', '*.png')))
    assert [osp.basename(f) for f in images] == ['0001_tiny_test.png', '0002_tiny_test.png']
    import cv2

    assert all(cv2.imread(f).shape == (48, 48, 3) for f in images)


@slow
def test_converted_project_arch_trains(project):
    option = write_yaml(train_option('tiny_converted', CONVERTED_NETWORK, project.train, project.val),
                        osp.join(project.root, 'train_tiny_converted.yml'))
    out_root = osp.join(project.root, 'converted_root')
    check_ok(run_cli(['train', '-opt', option, '--import', 'tinyproj', '--root', out_root], cwd=project.root,
                     env=project.env, timeout=240))
    log = experiment_log(out_root, 'tiny_converted')
    # upconv (Conv2d 8 -> 32, 2,336 parameters) + PixelShuffle became Conv2d 8 -> 8 (584) + Converse2D(8, k=2) (40)
    assert 'ConverseConverted: Converted TinySRNet to reverse convolution: 2 module(s) replaced, ' \
           'parameters 5,115 -> 3,403 (-1,712)' in log, log[-3000:]
    assert 'TinySRModel: network TinySRNet' in log  # the converted network is the project's, modules swapped
    steps = losses(log)
    assert [s[0] for s in steps] == [1, 2, 3, 4] and all(math.isfinite(float(s[2])) for s in steps)
    psnr = validation_values(log, 'TinyVal', 'psnr')
    # at iterations 2 and 4, and after training (BasicSR's last validation: the same network as at 4)
    assert len(psnr) == 3 and all(math.isfinite(v) and 15 < v < 60 for v in psnr) and psnr[1] == psnr[2], psnr
    import torch

    state = torch.load(osp.join(out_root, 'experiments', 'tiny_converted', 'models', 'net_g_latest.pth'),
                       map_location='cpu')['params']
    assert state['upconv.up.weight'].shape[-2:] == (2, 2)  # the PixelShuffle upsampler became Converse2D
    assert state['upconv.conv.weight'].shape == (8, 8, 3, 3)
    assert 'upconv.weight' not in state and 'body.1.conv2.weight' in state  # the rest is TinySRNet's
    assert all(torch.isfinite(v).all() for v in state.values())


def test_log_file_opens_after_a_constructor_initialised_the_logger(tmp_path):
    """The option checks build the project's dataset before the log starts; its ``get_root_logger()`` call
    (level WARNING, no file) must not keep the run's log file from being written (it did: no log at all)."""
    import logging

    from basicsr.utils import get_root_logger
    from basicsr.utils import logger as basicsr_logger

    from converse_plugin.engine.logs import start_log

    log = logging.getLogger('basicsr')
    saved = (basicsr_logger.initialized_logger.pop('basicsr', None), list(log.handlers), log.level)
    for handler in saved[1]:
        log.removeHandler(handler)
    try:
        get_root_logger().info('early line, dropped as BasicSR drops it')  # what TinyPairedDataset.__init__ does
        assert not any(isinstance(h, logging.FileHandler) for h in log.handlers)
        opt = {'name': 'early', 'path': {'log': str(tmp_path)}}
        logger = start_log(opt, 'train', ['a note'])
        get_root_logger().info('a line of the run')
        files = glob.glob(str(tmp_path / 'train_early_*.log'))
        assert len(files) == 1 and logger is log
        text = open(files[0], encoding='utf-8').read()
        assert 'BasicSR' in text and 'WARNING: a note' in text and 'INFO: a line of the run' in text
        assert 'early line' not in text
        assert sum(isinstance(h, logging.FileHandler) for h in log.handlers) == 1
    finally:
        for handler in list(log.handlers):
            log.removeHandler(handler)
            handler.close()
        basicsr_logger.initialized_logger.pop('basicsr', None)
        if saved[0] is not None:
            basicsr_logger.initialized_logger['basicsr'] = saved[0]
        for handler in saved[1]:
            log.addHandler(handler)
        log.setLevel(saved[2])
