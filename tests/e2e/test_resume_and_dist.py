"""Interrupted training resumed with ``--auto_resume`` from another directory, a user's own train.py
calling the plugin's ``train_pipeline``, and two-process distributed training on the CPU."""
from __future__ import annotations

import glob
import os
import socket
import sys

import pytest
import torch

from tests.e2e.helpers import check_ok, experiment_log, make_images, run_cli, tiny_overrides, train_options

OPTION = 'train_ConverseDnCNN_gray_sigma25.yml'
NAME = 'train_ConverseDnCNN_gray_sigma25'

# Kills its own process (SIGKILL: no cleanup, like a lost node) right after the first checkpoint.
KILL_AFTER_FIRST_CHECKPOINT = '''
import os, signal, sys
import converse_plugin
from converse_plugin.cli import main
from converse_plugin.models.base_model import PluginModel

_save = PluginModel.save

def save(self, epoch, current_iter, progress=None):
    _save(self, epoch, current_iter, progress)
    os.kill(os.getpid(), signal.SIGKILL)

PluginModel.save = save
sys.exit(main())
'''

# A user's own train.py, as in BasicSR's README, with the plugin's pipeline in place of BasicSR's.
USER_TRAIN_PY = '''
from os import path as osp

from converse_plugin import train_pipeline  # registers the archs, datasets, models

if __name__ == '__main__':
    train_pipeline(osp.dirname(osp.abspath(__file__)))
'''
# ... which then checks that training gave the caller's denormal mode back (train: flush_denormal)
DENORMAL_MODE_AFTER = '''
    from converse_plugin.engine.denormals import denormals_flushed
    print('denormals flushed after training:', denormals_flushed())
'''

# Every rank saves its own net_g after model creation and at the end, to compare the ranks.
SAVE_EVERY_RANK = '''
import os, sys
import pytest
import torch
import torch.distributed as dist
import converse_plugin
from basicsr.models.sr_model import SRModel
from converse_plugin.cli import main
from converse_plugin.models.base_model import PluginModel

OUT = os.environ['RANK_STATES']
_init, _save = SRModel.init_training_settings, PluginModel.save

def dump(model, tag):
    net = model.get_bare_model(model.net_g)
    torch.save(net.state_dict(), os.path.join(OUT, f'{tag}_rank{dist.get_rank()}.pth'))

def init_training_settings(self):
    assert isinstance(self.net_g, torch.nn.parallel.DistributedDataParallel)
    dump(self, 'init')
    _init(self)

def save(self, epoch, current_iter, progress=None):
    _save(self, epoch, current_iter, progress)
    if current_iter == -1:
        dump(self, 'final')

SRModel.init_training_settings, PluginModel.save = init_training_settings, save
sys.exit(main())
'''


def _overrides(data: str, **extra) -> list[str]:
    return tiny_overrides(**{'datasets:train:dataroot_gt': data, 'datasets:val:dataroot_gt': data, **extra})


def test_killed_run_resumes_from_another_directory(tmp_path):
    data = make_images(str(tmp_path / 'images'), n=4, size=48)
    root, elsewhere = tmp_path / 'root', tmp_path / 'elsewhere'
    root.mkdir()
    elsewhere.mkdir()
    script = tmp_path / 'kill_after_checkpoint.py'
    script.write_text(KILL_AFTER_FIRST_CHECKPOINT)
    overrides = _overrides(data, **{'train:total_iter': 6, 'logger:save_checkpoint_freq': 2})

    # first run: experiments/ under the working directory (the default root); killed at iteration 2
    killed = run_cli(['train', '-opt', train_options(OPTION), '--force_yml', *overrides], cwd=str(root),
                     script=str(script))
    assert killed.returncode == -9, killed.stdout[-3000:]
    states = root / 'experiments' / NAME / 'training_states'
    assert sorted(os.listdir(states)) == ['2.state']
    assert not (root / 'experiments' / NAME / 'models' / 'net_g_latest.pth').exists()

    # second run: another working directory, the same root given with --root
    out = check_ok(run_cli(['train', '-opt', train_options(OPTION), '--auto_resume', '--root', str(root),
                            '--force_yml', *overrides], cwd=str(elsewhere)))
    assert os.listdir(elsewhere) == [], 'the resumed run wrote into its working directory'
    assert 'Resuming training from epoch: ' in out and 'iter: 2.' in out
    assert sorted(os.listdir(states)) == ['2.state', '4.state', '6.state']
    assert (root / 'experiments' / NAME / 'models' / 'net_g_latest.pth').is_file()
    assert not glob.glob(str(root / 'experiments' / f'{NAME}_archived_*')), 'resume must not archive the run'
    log = experiment_log(str(root), NAME)
    assert 'Start training from epoch: ' in log and ', iter: 2\n' in log
    assert 'iter:       6,' in log and 'iter:       3,' in log and 'iter:       2,' not in log
    assert 'End of training' in log


def test_user_train_script_with_train_pipeline(tmp_path):
    data = make_images(str(tmp_path / 'images'), n=4, size=48)
    project, elsewhere = tmp_path / 'project', tmp_path / 'elsewhere'
    project.mkdir()
    elsewhere.mkdir()
    (project / 'train.py').write_text(USER_TRAIN_PY + DENORMAL_MODE_AFTER)
    # two CPU threads: the worker thread must start after training set the denormal mode
    out = check_ok(run_cli(['-opt', train_options(OPTION), '--force_yml', *_overrides(data)], cwd=str(elsewhere),
                           script=str(project / 'train.py'), env={'OMP_NUM_THREADS': '2'}))
    assert (project / 'experiments' / NAME / 'models' / 'net_g_latest.pth').is_file()
    assert os.listdir(elsewhere) == []
    log = experiment_log(str(project), NAME)
    if torch.set_flush_denormal(False):  # a CPU with the mode: on while training (default), off again after
        assert 'train:flush_denormal: the CPU treats values below 1.2e-38 as 0' in log, log[-3000:]
        assert 'denormals flushed after training: False' in out, out[-2000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_cpu_processes_end_with_identical_weights(tmp_path):
    data = make_images(str(tmp_path / 'images'), n=4, size=48)
    states = tmp_path / 'states'
    states.mkdir()
    script = tmp_path / 'save_every_rank.py'
    script.write_text(SAVE_EVERY_RANK)
    torchrun = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={_free_port()}']
    overrides = _overrides(data, **{'datasets:train:batch_size_per_gpu': 1})
    out = check_ok(run_cli([str(script), 'train', '-opt', train_options(OPTION), '--launcher', 'pytorch', '--root',
                            str(tmp_path / 'root'), '--force_yml', *overrides],
                           cwd=str(tmp_path), launcher=torchrun, env={'RANK_STATES': str(states)}))
    assert 'World size (gpu number): 2' in out

    init = [torch.load(states / f'init_rank{r}.pth') for r in (0, 1)]
    final = [torch.load(states / f'final_rank{r}.pth') for r in (0, 1)]
    # seeds differ per rank (manual_seed + rank): DDP's broadcast makes the start identical ...
    assert all(torch.equal(init[0][k], init[1][k]) for k in init[0])
    # ... each rank trained on other samples, the averaged gradients keep the ranks identical ...
    assert all(torch.equal(final[0][k], final[1][k]) for k in final[0])
    # ... and training did move the weights
    assert any(not torch.equal(init[0][k], final[0][k]) for k in init[0])
    saved = torch.load(tmp_path / 'root' / 'experiments' / NAME / 'models' / 'net_g_latest.pth')['params']
    assert all(torch.equal(saved[k], final[0][k]) for k in saved)
