"""A tiny CPU training setup for the robustness tests: option tree, images, and in-process CLI runs."""
from __future__ import annotations

import copy
import os
from os import path as osp
from typing import Any

import cv2
import numpy as np
import yaml

from converse_plugin import cli

BASE: dict[str, Any] = {
    'name': 'robust',
    'model_type': 'SRModel',
    'scale': 1,
    'num_gpu': 0,
    'manual_seed': 0,
    'datasets': {
        'train': {'name': 'tiny', 'type': 'GaussianNoiseDataset', 'dataroot_gt': None, 'color': 'gray',
                  'sigma': 25, 'gt_size': 16, 'use_hflip': True, 'use_rot': True, 'num_worker_per_gpu': 0,
                  'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 1},
        'val': {'name': 'tinyval', 'type': 'GaussianNoiseDataset', 'dataroot_gt': None, 'color': 'gray',
                'sigma': 25},
    },
    'network_g': {'type': 'ConverseDnCNN', 'num_in_ch': 1, 'num_out_ch': 1, 'num_feat': 8, 'num_block': 1,
                  'kernel_size': 3, 'padding': 2, 'padding_mode': 'circular'},
    'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
    'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]},
              'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5}, 'total_iter': 7,
              'warmup_iter': -1, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
    'val': {'val_freq': 3, 'save_img': False,
            'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}},
    'logger': {'print_freq': 1, 'save_checkpoint_freq': 3, 'use_tb_logger': False},
}


def make_images(folder: str, n: int = 4, size: int = 24, gray: bool = False, seed: int = 0) -> str:
    """``n`` random-texture PNGs, ``size`` x ``size``, 3-channel (or gray)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = rng.integers(0, 256, (size, size) if gray else (size, size, 3), dtype=np.uint8)
        cv2.imwrite(osp.join(folder, f'img{i}.png'), img)
    return folder


def options(data: str, **changes: Any) -> dict:
    """BASE with both dataroots set to ``data`` and ``changes`` (``'a:b:c': value``; value None deletes)."""
    opt = copy.deepcopy(BASE)
    opt['datasets']['train']['dataroot_gt'] = data
    opt['datasets']['val']['dataroot_gt'] = data
    for key, value in changes.items():
        *parents, last = key.split(':')
        node = opt
        for part in parents:
            node = node[part]
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return opt


def write_options(path: str, opt: dict) -> str:
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


def run(command: str, option_file: str, root: str, *extra: str) -> int:
    """``basicsr COMMAND -opt FILE --root ROOT EXTRA...`` in this process; returns the exit code."""
    return cli.main([command, '-opt', option_file, '--root', root, *extra])
