"""Atomic saves, safe loading and picking the newest complete training state (unit level)."""
from __future__ import annotations

import io
import os


import pytest
import torch

from converse_plugin.io import checkpoint
from converse_plugin.engine.resume import load_resume_state
from converse_plugin.io.checkpoint import atomic_save, find_resume_state, load_checkpoint
from converse_plugin.errors import CheckpointError, CheckpointNotFoundError


def test_atomic_save_keeps_the_old_file_when_writing_fails_midway(tmp_path, monkeypatch):
    path = tmp_path / 'net_g_2.pth'
    atomic_save({'w': torch.ones(3)}, str(path))
    real_save = torch.save

    def half_then_fail(obj, f):
        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[:100])
        raise OSError('disk full')

    monkeypatch.setattr(checkpoint.torch, 'save', half_then_fail)
    with pytest.raises(OSError, match='disk full'):
        atomic_save({'w': torch.zeros(3)}, str(path))
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(str(path))['w'], torch.ones(3))
    assert os.listdir(tmp_path) == ['net_g_2.pth'], 'the temporary file was left behind'


def test_load_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match='nope.pth does not exist'):
        load_checkpoint(str(tmp_path / 'nope.pth'))
    (tmp_path / 'empty.pth').write_bytes(b'')
    with pytest.raises(CheckpointError, match='empty.pth is empty'):
        load_checkpoint(str(tmp_path / 'empty.pth'))


def _state(path, it: int) -> None:
    torch.save({'epoch': 1, 'iter': it, 'optimizers': [{'x': torch.ones(2)}], 'schedulers': []}, path)


def test_auto_resume_skips_a_corrupt_newest_state_with_a_warning(tmp_path, capsys):
    states = tmp_path / 'root' / 'experiments' / 'run' / 'training_states'
    states.mkdir(parents=True)
    _state(states / '4.state', 4)
    _state(states / '8.state', 8)
    (states / '8.state').write_bytes((states / '8.state').read_bytes()[:200])  # a torn write
    (states / '.12.state.999.tmp').write_bytes(b'partial')  # an interrupted atomic save
    opt = {'name': 'run', 'num_gpu': 0, 'network_g': {}, 'auto_resume': True,
           'path': {'models': str(states.parent / 'models'), 'training_states': str(states), 'resume_state': None}}
    state = load_resume_state(opt)
    assert state['iter'] == 4 and opt['path']['resume_state'] == str(states / '4.state')
    err = capsys.readouterr().err
    assert 'skipping' in err and '8.state' in err and 'truncated' in err


def test_no_complete_state_starts_fresh(tmp_path):
    (tmp_path / '3.state').write_text('garbage')
    assert find_resume_state(str(tmp_path), warn=lambda m: None) is None


def test_an_explicit_resume_state_that_is_corrupt_is_an_error(tmp_path):
    (tmp_path / '5.state').write_text('garbage')
    opt = {'name': 'run', 'num_gpu': 0, 'network_g': {}, 'auto_resume': False,
           'path': {'models': str(tmp_path), 'training_states': str(tmp_path), 'resume_state': str(tmp_path / '5.state')}}
    with pytest.raises(CheckpointError, match='training state .*5.state'):
        load_resume_state(opt)
