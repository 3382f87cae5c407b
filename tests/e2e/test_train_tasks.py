"""A few iterations of ``basicsr train`` for each task, with the shipped GPU option files shrunk by
``--force_yml`` (tiny data and networks): each run must write checkpoints, training states and
validation metrics under ``--root``."""
from __future__ import annotations

import math
import os
from os import path as osp

import pytest
import torch

from tests.e2e.helpers import (check_ok, experiment_log, make_images, make_kernel, run_cli, tiny_overrides,
                               train_options, validation_values)

pytestmark = pytest.mark.slow

# option file, validation set name, metrics, extra overrides (beyond tiny_overrides), data maker
TASKS = {
    'denoise': ('train_ConverseDnCNN_gray_sigma25.yml', 'Set12', ('psnr', 'ssim'), {}),
    'sr': ('train_ConverseMSRResNet_x4_DF2K.yml', 'Set5', ('psnr', 'ssim'), {'datasets:train:gt_size': 32}),
    'deblur_blind': ('train_ConverseNet_deblur_blind.yml', 'B100_k1', ('psnr', ), {'network_g:num_iter': 2}),
    'deblur_nonblind': ('train_ConverseUSRNet_deblur.yml', 'B100_k1', ('psnr', ),
                        {'network_g:num_iter': 2, 'logger:use_tb_logger': True}),
}


@pytest.mark.parametrize('task', sorted(TASKS))
def test_tiny_training_run(task, tmp_path):
    option_file, val_name, metrics, extra = TASKS[task]
    data = make_images(str(tmp_path / 'images'), n=4, size=48)  # 2 batches of 2 per epoch
    overrides = dict(extra)
    overrides.update({'datasets:train:dataroot_gt': data, 'datasets:val:dataroot_gt': data})
    if task.startswith('deblur'):
        overrides['datasets:val:kernels'] = make_kernel(str(tmp_path / 'kernel.npy'))
    root = tmp_path / 'root'
    proc = run_cli(['train', '-opt', train_options(option_file), '--root', str(root), '--force_yml',
                    *tiny_overrides(**overrides)], cwd=str(tmp_path))
    out = check_ok(proc)

    name = option_file[:-len('.yml')]
    exp = root / 'experiments' / name
    for rel in ('models/net_g_2.pth', 'models/net_g_4.pth', 'models/net_g_latest.pth', 'training_states/2.state',
                'training_states/4.state', option_file):
        assert (exp / rel).is_file(), f'{rel} missing in {exp}; output tail:\n{out[-2000:]}'
    assert not (tmp_path / 'experiments').exists(), 'output went to the working directory, not --root'

    log = experiment_log(str(root), name)
    assert 'l_pix: ' in log and 'iter:       4' in log
    for metric in metrics:
        values = validation_values(log, val_name, metric)
        # validations at iterations 2 and 4, and after training
        assert len(values) == 3, f'{metric}: {values}'
        assert all(math.isfinite(v) for v in values)
    if task == 'deblur_nonblind':  # tb_logger under --root as well
        assert any(f.startswith('events.') for f in os.listdir(root / 'tb_logger' / name))

    state = torch.load(exp / 'models' / 'net_g_latest.pth', map_location='cpu')
    assert set(state) == {'params', 'params_ema'}  # the files' ema_decay > 0
    changed = [k for k in state['params'] if not torch.equal(state['params'][k], state['params_ema'][k])]
    assert changed, 'training left every parameter at its EMA copy: nothing was learned'
    first = torch.load(exp / 'models' / 'net_g_2.pth', map_location='cpu')['params']
    assert any(not torch.equal(first[k], state['params'][k]) for k in first), 'weights did not change after iter 2'
    assert osp.getsize(exp / 'training_states' / '4.state') > 0
