"""The conformance corpus: tiny data sets laid out as BasicSR's users lay them out, and option files written
the way BasicSR 1.4.2's own ``options/train|test/*`` files are written (``num_gpu: 0``, small networks and
crops, a few iterations).

Each :class:`Case` builds its option file from a data folder; the tests run it through BasicSR's pipeline
and the plugin's and compare the runs (:mod:`tests.conformance.compare`).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from os import path as osp
from typing import Any

import cv2
import numpy as np
import yaml

GT_SIZE = 48  # divisible by 2, 3 and 4 (the LQ images are GT_SIZE / scale)
N_IMAGES = 4


# ----------------------------------------------------------------------------------------------- data
def _gt_image(i: int, size: int, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    base = 128 + 60 * np.sin(x / (3 + i)) + 50 * np.cos(y / (4 + i)) + rng.normal(0, 8, (size, size))
    return np.dstack([base, np.roll(base, 3, 0), np.roll(base, 5, 1)]).clip(0, 255).astype(np.uint8)


def make_paired_folders(root: str, scale: int, n: int = N_IMAGES, size: int = GT_SIZE, lq_tmpl: str = '{}',
                        seed: int = 0) -> tuple[str, str]:
    """``root/gt/0001.png ...`` and ``root/lq_x<scale>/<lq_tmpl>.png`` (bicubic downscaled, as BasicSR's
    ``generate_multiscale_DF2K`` / DIV2K's LR folders): returns (gt folder, lq folder)."""
    gt_dir, lq_dir = osp.join(root, 'gt'), osp.join(root, f'lq_x{scale}')
    os.makedirs(gt_dir, exist_ok=True)
    os.makedirs(lq_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = _gt_image(i, size, rng)
        stem = f'{i + 1:04d}'
        cv2.imwrite(osp.join(gt_dir, f'{stem}.png'), img)
        lq = cv2.resize(img, (size // scale, size // scale), interpolation=cv2.INTER_CUBIC) if scale > 1 else img
        cv2.imwrite(osp.join(lq_dir, lq_tmpl.format(stem) + '.png'), lq)
    return gt_dir, lq_dir


def make_meta_info(gt_dir: str, path: str, names: list[str] | None = None) -> str:
    """A BasicSR meta info file (``0001.png (48,48,3)`` per line) for ``names`` (default: every GT file)."""
    names = names if names is not None else sorted(os.listdir(gt_dir))
    with open(path, 'w', encoding='utf-8') as f:
        for name in names:
            img = cv2.imread(osp.join(gt_dir, name), cv2.IMREAD_UNCHANGED)
            h, w = img.shape[:2]
            c = 1 if img.ndim == 2 else img.shape[2]
            f.write(f'{name} ({h},{w},{c})\n')
    return path


def make_lmdb(folder: str, lmdb_path: str) -> str:
    """An LMDB of every PNG in ``folder`` made with BasicSR's own ``make_lmdb_from_imgs`` (keys: the stems)."""
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs

    names = sorted(n for n in os.listdir(folder) if n.endswith('.png'))
    make_lmdb_from_imgs(folder, lmdb_path, names, [osp.splitext(n)[0] for n in names], n_thread=1,
                        map_size=1 << 26)  # its estimate from the first image is too small for tiny images
    return lmdb_path


@dataclass
class Data:
    """The tiny data sets of one test session (made once, read by every case)."""
    root: str

    def pairs(self, scale: int, tmpl: str = '{}') -> tuple[str, str]:
        key = f'pairs_x{scale}' + ('' if tmpl == '{}' else '_tmpl')
        folder = osp.join(self.root, key)
        if not osp.isdir(folder):
            make_paired_folders(folder, scale, lq_tmpl=tmpl)
        return osp.join(folder, 'gt'), osp.join(folder, f'lq_x{scale}')

    def meta_info(self, scale: int) -> str:
        gt, _ = self.pairs(scale)
        path = osp.join(self.root, f'meta_info_x{scale}.txt')
        return path if osp.isfile(path) else make_meta_info(gt, path)

    def lmdb(self, scale: int) -> tuple[str, str]:
        gt, lq = self.pairs(scale)
        out = (osp.join(self.root, f'gt_x{scale}.lmdb'), osp.join(self.root, f'lq_x{scale}.lmdb'))
        if not osp.isdir(out[0]):
            make_lmdb(gt, out[0])
            make_lmdb(lq, out[1])
        return out


# ------------------------------------------------------------------------------------------- options
def paired_set(data: Data, name: str, phase: str, scale: int, mode: str = 'folder', **extra: Any) -> dict:
    """A ``PairedImageDataset`` entry as BasicSR's SR files write it; ``mode``: folder, meta, lmdb, tmpl."""
    if mode == 'lmdb':
        gt, lq = data.lmdb(scale)
    else:
        gt, lq = data.pairs(scale, '{}x' + str(scale) if mode == 'tmpl' else '{}')
    opt = {'name': name, 'type': 'PairedImageDataset', 'dataroot_gt': gt, 'dataroot_lq': lq,
           'io_backend': {'type': 'lmdb' if mode == 'lmdb' else 'disk'}}
    if mode == 'meta':
        opt['meta_info_file'] = data.meta_info(scale)
    if mode == 'tmpl':
        opt['filename_tmpl'] = '{}x' + str(scale)
    if phase == 'train':
        opt.update({'gt_size': 16 * scale if scale < 4 else 32, 'use_hflip': True, 'use_rot': True,
                    'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 2,
                    'prefetch_mode': None})
    opt.update(extra)
    return opt


def train_file(name: str, network_g: dict, train_set: dict, val_set: dict | None, scale: int,
               model_type: str = 'SRModel', total_iter: int = 4, **sections: Any) -> dict:
    """A training option file in BasicSR 1.4.2's layout (``options/train/*/train_*.yml``)."""
    opt = {
        'name': name, 'model_type': model_type, 'scale': scale, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'train': train_set},
        'network_g': network_g,
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {
            'ema_decay': 0,
            'optim_g': {'type': 'Adam', 'lr': 2e-4, 'weight_decay': 0, 'betas': [0.9, 0.99]},
            'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': [total_iter], 'restart_weights': [1],
                          'eta_min': 1e-7},
            'total_iter': total_iter, 'warmup_iter': -1,
            'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
        },
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': False,
                   'wandb': {'project': None, 'resume_id': None}},
        'dist_params': {'backend': 'nccl', 'port': 29500},
    }
    if val_set is not None:
        opt['datasets']['val'] = val_set
        opt['val'] = {'val_freq': 2, 'save_img': True,
                      'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': scale, 'test_y_channel': False},
                                  'ssim': {'type': 'calculate_ssim', 'crop_border': scale, 'test_y_channel': True}}}
    for key, value in sections.items():  # train=..., val=..., logger=...: merged into the section
        if isinstance(value, dict) and isinstance(opt.get(key), dict):
            opt[key].update(value)
        else:
            opt[key] = value
    return opt


def test_file(name: str, network_g: dict, sets: dict, scale: int, model_type: str = 'SRModel',
              pretrain: str | None = None, metrics: dict | None = None, **sections: Any) -> dict:
    """A test option file in BasicSR 1.4.2's layout (``options/test/*/test_*.yml``)."""
    opt = {'name': name, 'model_type': model_type, 'scale': scale, 'num_gpu': 0, 'manual_seed': 0,
           'datasets': sets, 'network_g': network_g,
           'path': {'pretrain_network_g': pretrain, 'strict_load_g': True, 'param_key_g': 'params'},
           'val': {'save_img': True, 'suffix': None,
                   'metrics': metrics if metrics is not None else
                   {'psnr': {'type': 'calculate_psnr', 'crop_border': scale, 'test_y_channel': True}}}}
    opt.update(sections)
    return opt


def write(opt: dict, path: str) -> str:
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


# --------------------------------------------------------------------------------------- architectures
def arch(kind: str, scale: int) -> dict:
    """Small configurations of the architectures BasicSR's SR files train."""
    nets = {
        'MSRResNet': {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
                      'upscale': scale},
        'EDSR': {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': scale,
                 'res_scale': 1, 'img_range': 255., 'rgb_mean': [0.4488, 0.4371, 0.4040]},
        'RCAN': {'type': 'RCAN', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_group': 1, 'num_block': 1,
                 'squeeze_factor': 4, 'upscale': scale, 'res_scale': 1, 'img_range': 255.,
                 'rgb_mean': [0.4488, 0.4371, 0.4040]},
        'SwinIR': {'type': 'SwinIR', 'upscale': scale, 'in_chans': 3, 'img_size': 16, 'window_size': 4,
                   'img_range': 1., 'depths': [2], 'embed_dim': 12, 'num_heads': [2], 'mlp_ratio': 2,
                   'upsampler': 'pixelshuffle', 'resi_connection': '1conv'},
        'RRDBNet': {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
                    'num_grow_ch': 4},
        'ECBSR': {'type': 'ECBSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_block': 1, 'num_channel': 8,
                  'with_idt': False, 'act_type': 'prelu', 'scale': scale},
        'SRVGGNetCompact': {'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8,
                            'num_conv': 2, 'upscale': scale, 'act_type': 'prelu'},
        'ConverseMSRResNet': {'type': 'ConverseMSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8,
                              'num_block': 1, 'upscale': scale},
        'ConverseConverted': {'type': 'ConverseConverted',
                              'network': {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8,
                                          'num_block': 1, 'upscale': scale},
                              'convert': {'upsample': True, 'resblocks': True}},
    }
    return dict(nets[kind])


# ------------------------------------------------------------------------------------------------ cases
@dataclass
class Case:
    """One option file of the corpus: ``build(data, folder)`` writes it and returns its path."""
    name: str
    phase: str  # 'train' or 'test'
    build: Callable[[Data, str], str]
    fast: bool = False  # also in the fast test tier
    plugin_types: bool = False  # the file uses the plugin's registered types (BasicSR runs it after the import)
    flags: list[str] = field(default_factory=list)
    needs_vgg: bool = False
    expect_failure: tuple[str, ...] = ()  # BasicSR fails on the file; the plugin's one line holds these texts


def _train_case(name: str, kind: str, scale: int, mode: str = 'folder', fast: bool = False,
                plugin_types: bool = False, model_type: str = 'SRModel', val: bool = True, **sections: Any) -> Case:
    def build(data: Data, folder: str) -> str:
        net = arch(kind, scale)
        train_set = paired_set(data, 'tiny_train', 'train', scale, mode)
        # BasicSR's LMDB backend cannot open one database twice in a process: its files validate on folders
        val_set = paired_set(data, 'tiny_val', 'val', scale, 'folder' if mode == 'lmdb' else mode) if val else None
        opt = train_file(name, net, train_set, val_set, scale, model_type, **sections)
        return write(opt, osp.join(folder, f'{name}.yml'))
    return Case(name, 'train', build, fast=fast, plugin_types=plugin_types)


VGG_FILE = osp.join('experiments', 'pretrained_models', 'vgg19-dcbb9e9d.pth')  # BasicSR's VGG_PRETRAIN_PATH


def write_vgg19(path: str) -> str:
    """A VGG19 state dict (random weights, seed 0) where BasicSR's perceptual loss looks for its pretrained
    file, so that nothing is downloaded."""
    import torch
    from torchvision.models import vgg19

    os.makedirs(osp.dirname(path), exist_ok=True)
    torch.manual_seed(0)
    torch.save(vgg19(weights=None).state_dict(), path)
    return path


def write_weights(net_opt: dict, path: str, seed: int = 0) -> str:
    """``{'params': state_dict}`` of ``net_opt`` built through the registry with ``seed`` (a "pretrained" file)."""
    import torch

    from converse_plugin.registries import build_network

    torch.manual_seed(seed)
    torch.save({'params': build_network(dict(net_opt), 'network_g').state_dict()}, path)
    return path


def _train_case(name: str, kind: str, scale: int, mode: str = 'folder', fast: bool = False,
                plugin_types: bool = False, model_type: str = 'SRModel', val: bool = True, train_set: dict | None = None,
                val_mode: str | None = None, needs_vgg: bool = False, expect_failure: tuple[str, ...] = (),
                **sections: Any) -> Case:
    """A training file: ``kind`` (see :func:`arch`) on paired data read as ``mode`` (``val_mode`` for its
    validation set; BasicSR's LMDB backend cannot open one database twice in a process, so LMDB files validate
    on folders), with ``train_set`` keys and option sections merged in."""
    def build(data: Data, folder: str) -> str:
        net = arch(kind, scale)
        tset = paired_set(data, 'tiny_train', 'train', scale, mode, **(train_set or {}))
        vmode = val_mode or ('folder' if mode == 'lmdb' else mode)
        vset = paired_set(data, 'tiny_val', 'val', scale, vmode) if val else None
        opt = train_file(name, net, tset, vset, scale, model_type, **sections)
        return write(opt, osp.join(folder, f'{name}.yml'))
    return Case(name, 'train', build, fast=fast, plugin_types=plugin_types, needs_vgg=needs_vgg,
                expect_failure=expect_failure)


def _test_case(name: str, kind: str, scale: int, sets: Callable[[Data], dict], model_type: str = 'SRModel',
               plugin_types: bool = False, metrics: dict | None = None, fast: bool = False,
               expect_failure: tuple[str, ...] = (), **sections: Any) -> Case:
    """A test file: ``kind`` with weights of seed 0 (written beside the file) on ``sets(data)``."""
    def build(data: Data, folder: str) -> str:
        net = arch(kind, scale)
        weights = write_weights(net, osp.join(folder, f'{kind}_x{scale}.pth'))
        opt = test_file(name, net, sets(data), scale, model_type, weights, metrics, **sections)
        return write(opt, osp.join(folder, f'{name}.yml'))
    return Case(name, 'test', build, fast=fast, plugin_types=plugin_types, expect_failure=expect_failure)


def _gan(net_d_iters: int = 1, perceptual: bool = False) -> dict:
    train = {'net_d_iters': net_d_iters, 'net_d_init_iters': 0,
             'optim_d': {'type': 'Adam', 'lr': 1e-4, 'weight_decay': 0, 'betas': [0.9, 0.99]},
             'gan_opt': {'type': 'GANLoss', 'gan_type': 'vanilla', 'real_label_val': 1.0, 'fake_label_val': 0.0,
                         'loss_weight': 0.1},
             'scheduler': {'type': 'MultiStepLR', 'milestones': [2], 'gamma': 0.5}}
    if perceptual:
        train['perceptual_opt'] = {'type': 'PerceptualLoss', 'layer_weights': {'conv5_4': 1}, 'vgg_type': 'vgg19',
                                   'use_input_norm': True, 'range_norm': False, 'perceptual_weight': 1.0,
                                   'style_weight': 0, 'criterion': 'l1'}
    return train


_NET_D = {'type': 'UNetDiscriminatorSN', 'num_in_ch': 3, 'num_feat': 8, 'skip_connection': True}
_Y_PSNR = {'psnr': {'type': 'calculate_psnr', 'crop_border': 2, 'test_y_channel': True}}


def _paired_test_sets(scale: int, mode: str = 'folder') -> Callable[[Data], dict]:
    return lambda data: {'test_1': paired_set(data, 'tiny_test', 'test', scale, mode)}


def _single_image_sets(data: Data) -> dict:
    _, lq = data.pairs(1)  # 48 x 48 inputs: x4 gives 192 x 192, 2 x 2 of NIQE's 96 x 96 blocks
    return {'test_1': {'name': 'tiny_single', 'type': 'SingleImageDataset', 'dataroot_lq': lq,
                       'io_backend': {'type': 'disk'}}}


def _bicubic_set(data: Data, phase: str, scale: int) -> dict:
    gt, _ = data.pairs(scale)
    opt = {'name': f'tiny_bicubic_{phase}', 'type': 'BicubicDownsampleDataset', 'dataroot_gt': gt,
           'io_backend': {'type': 'disk'}, 'scale': scale}
    if phase == 'train':
        opt.update({'gt_size': 32, 'use_hflip': True, 'use_rot': True, 'num_worker_per_gpu': 0,
                    'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 2, 'prefetch_mode': None})
    return opt


def _noise_case(name: str, net: dict, workers: int = 0) -> Case:
    """Gray denoising with the plugin's GaussianNoiseDataset and BasicSR's SRModel (scale 1)."""
    def build(data: Data, folder: str) -> str:
        gt, _ = data.pairs(1)
        common = {'type': 'GaussianNoiseDataset', 'dataroot_gt': gt, 'color': 'gray', 'sigma': 25,
                  'io_backend': {'type': 'disk'}}
        train = {**common, 'name': 'tiny_noise_train', 'gt_size': 32, 'use_hflip': True, 'use_rot': True,
                 'num_worker_per_gpu': workers, 'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 2,
                 'prefetch_mode': None}
        val = {**common, 'name': 'tiny_noise_val', 'noise_seed': 0}
        opt = train_file(name, dict(net), train, val, 1)
        opt['val']['metrics'] = {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}
        return write(opt, osp.join(folder, f'{name}.yml'))
    return Case(name, 'train', build, plugin_types=True)


def _bicubic_case(name: str, kind: str, model_type: str) -> Case:
    """The plugin's on-the-fly bicubic dataset with a BasicSR model (SRModel) or the plugin's ConverseModel."""
    def build(data: Data, folder: str) -> str:
        opt = train_file(name, arch(kind, 4), _bicubic_set(data, 'train', 4), _bicubic_set(data, 'val', 4), 4,
                         model_type)
        return write(opt, osp.join(folder, f'{name}.yml'))
    return Case(name, 'train', build, plugin_types=True)


def _broken(name: str, fast: bool = False, *expected: str, **change: Any) -> Case:
    """A training file with one of BasicSR users' common data mistakes (``change`` keys of the training set,
    given the data: a callable of ``(data, folder)``) on which BasicSR fails; the plugin's line names these."""
    def build(data: Data, folder: str) -> str:
        tset = paired_set(data, 'tiny_train', 'train', 2, 'folder')
        val = paired_set(data, 'tiny_val', 'val', 2, 'folder')
        for key, value in change.items():
            value = value(data, folder) if callable(value) else value
            target = val if key.startswith('val_') else tset
            target[key[4:] if key.startswith('val_') else key] = value
        opt = train_file(name, arch('MSRResNet', 2), tset, val, 2)
        return write(opt, osp.join(folder, f'{name}.yml'))
    return Case(name, 'train', build, fast=fast, expect_failure=expected)


def _meta_of_sub_images(data: Data, folder: str) -> str:
    """A meta info file of sub-images (``0001_s001.png``) made for another folder than the one read."""
    path = osp.join(folder, 'meta_info_sub.txt')
    with open(path, 'w', encoding='utf-8') as f:
        f.writelines(f'{i:04d}_s{j:03d}.png (16,16,3)\n' for i in range(1, 3) for j in range(1, 3))
    return path


def _lmdb_without_meta(data: Data, folder: str) -> str:
    import shutil

    copy = osp.join(folder, 'gt_nometa.lmdb')
    shutil.copytree(data.lmdb(2)[0], copy)
    os.remove(osp.join(copy, 'meta_info.txt'))
    return copy


BROKEN: list[Case] = [
    _broken('broken_lq_names_without_filename_tmpl', True, 'datasets:train', "filename_tmpl: '{}x2'",
            dataroot_lq=lambda data, folder: data.pairs(2, '{}x2')[1]),
    _broken('broken_meta_info_of_other_folder', False, 'datasets:train:meta_info_file', '0001_s001.png',
            'dataroot_gt', meta_info_file=_meta_of_sub_images),
    _broken('broken_scale_of_lq_folder', False, 'datasets:train', 'scale is 2',
            dataroot_lq=lambda data, folder: data.pairs(4)[1]),
    _broken('broken_lmdb_without_meta_info', False, 'datasets:train:dataroot_gt', 'meta_info.txt',
            io_backend={'type': 'lmdb'}, dataroot_gt=_lmdb_without_meta,
            dataroot_lq=lambda data, folder: data.lmdb(2)[1]),
    _broken('broken_same_lmdb_for_train_and_val', False, 'datasets:val', 'LMDB', 'cannot open a database twice',
            io_backend={'type': 'lmdb'}, dataroot_gt=lambda data, folder: data.lmdb(2)[0],
            dataroot_lq=lambda data, folder: data.lmdb(2)[1], val_io_backend={'type': 'lmdb'},
            val_dataroot_gt=lambda data, folder: data.lmdb(2)[0], val_dataroot_lq=lambda data, folder: data.lmdb(2)[1]),
]

CASES: list[Case] = [
    # SRModel: architectures x paired data layouts x training settings
    _train_case('train_MSRResNet_x4_folder', 'MSRResNet', 4, fast=True),
    _train_case('train_EDSR_x2_meta', 'EDSR', 2, 'meta',
                train={'scheduler': {'type': 'MultiStepRestartLR', 'milestones': [2], 'restarts': [3],
                                     'restart_weights': [0.5], 'gamma': 0.5}}),
    _train_case('train_RCAN_x2_tmpl', 'RCAN', 2, 'tmpl', val={'pbar': True}),
    _train_case('train_ECBSR_x2_lmdb', 'ECBSR', 2, 'lmdb'),
    _train_case('train_RRDBNet_x4_ema', 'RRDBNet', 4, train={'ema_decay': 0.999}),
    _train_case('train_SRVGGNet_x4_warmup', 'SRVGGNetCompact', 4, train_set={'dataset_enlarge_ratio': 1},
                train={'warmup_iter': 2, 'scheduler': {'type': 'MultiStepLR', 'milestones': [2, 3], 'gamma': 0.5}}),
    _train_case('train_MSRResNet_x2_workers', 'MSRResNet', 2, train_set={'num_worker_per_gpu': 2},
                val={'save_img': False}),
    _train_case('train_SwinIR_x2', 'SwinIR', 2, model_type='SwinIRModel'),
    # GAN models
    _train_case('train_SRGAN_MSRResNet_x4', 'MSRResNet', 4, model_type='SRGANModel', network_d=_NET_D,
                train=_gan(net_d_iters=1)),
    _train_case('train_ESRGAN_RRDBNet_x4_perceptual', 'RRDBNet', 4, model_type='ESRGANModel', network_d=_NET_D,
                train={**_gan(perceptual=True), 'ema_decay': 0.999}, needs_vgg=True),
    # the plugin's architectures, model and datasets
    _train_case('train_ConverseMSRResNet_x2_paired', 'ConverseMSRResNet', 2, 'meta', plugin_types=True),
    _train_case('train_ConverseMSRResNet_x4_ConverseModel', 'ConverseMSRResNet', 4, plugin_types=True,
                model_type='ConverseModel'),
    _train_case('train_ConverseConverted_MSRResNet_x3', 'ConverseConverted', 3, plugin_types=True),
    _bicubic_case('train_ConverseMSRResNet_x4_bicubic', 'ConverseMSRResNet', 'ConverseModel'),
    _bicubic_case('train_EDSR_x4_bicubic_SRModel', 'EDSR', 'SRModel'),
    _noise_case('train_DnCNN_gray_noise', {'type': 'DnCNN', 'num_in_ch': 1, 'num_out_ch': 1, 'num_feat': 8,
                                           'num_conv': 3}),
    _noise_case('train_ConverseDnCNN_gray_noise_workers', {'type': 'ConverseDnCNN', 'num_in_ch': 1, 'num_out_ch': 1,
                                                           'num_feat': 8, 'num_block': 1}, workers=2),
    # test files
    _test_case('test_MSRResNet_x4_folder', 'MSRResNet', 4, _paired_test_sets(4), fast=True),
    _test_case('test_RCAN_x2_meta', 'RCAN', 2, _paired_test_sets(2, 'meta')),
    _test_case('test_SwinIR_x3', 'SwinIR', 3, _paired_test_sets(3), model_type='SwinIRModel', metrics=_Y_PSNR),
    _test_case('test_ESRGAN_RRDBNet_x4_lmdb', 'RRDBNet', 4, _paired_test_sets(4, 'lmdb'), model_type='ESRGANModel'),
    _test_case('test_SRVGGNet_x4_single_niqe', 'SRVGGNetCompact', 4, _single_image_sets,
               metrics={'niqe': {'type': 'calculate_niqe', 'crop_border': 0}}),
    _test_case('test_ConverseMSRResNet_x2_paired', 'ConverseMSRResNet', 2, _paired_test_sets(2), plugin_types=True,
               model_type='ConverseModel'),
]
CASES += BROKEN
