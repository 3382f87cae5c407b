"""A training process SIGKILLed in the middle of writing a checkpoint loses nothing: the previous
checkpoint stays intact, ``--auto_resume`` continues from it, and the resumed run ends with exactly the
weights of a run that was never interrupted (CPU, subprocesses)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import torch

from converse_plugin.io.checkpoint import SLOW_SAVE_ENV
from tests.e2e.helpers import check_ok, cli_env, run_cli
from tests.robustness.common import make_images, options, write_options

NAME = 'robust'


def _kill_while_saving(args: list[str], cwd: str, pause_on: str, timeout: float = 240) -> str:
    """Start ``python -m converse_plugin ARGS``, wait until it has half-written the file named like
    ``pause_on`` (the save pauses there, see converse_plugin.io.checkpoint.SLOW_SAVE_ENV), SIGKILL it."""
    proc = subprocess.Popen([sys.executable, '-m', 'converse_plugin', *args], cwd=cwd,
                            env=cli_env(**{SLOW_SAVE_ENV: pause_on}),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if '[converse-test] half-written' in line:
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.wait(timeout=timeout)
    assert proc.returncode == -signal.SIGKILL, ''.join(seen[-40:])
    return ''.join(seen)


def _final_weights(root) -> dict:
    return torch.load(root / 'experiments' / NAME / 'models' / 'net_g_latest.pth', weights_only=True)['params']


def test_killed_mid_checkpoint_then_resumed_equals_the_uninterrupted_run(tmp_path):
    data = make_images(str(tmp_path / 'images'), n=4, size=24)  # batch 2: two iterations per epoch
    # checkpoints at 3 (in the middle of epoch 1) and 6; validation at 3 and 6 too
    option_file = write_options(str(tmp_path / 'opt.yml'), options(data))
    whole, broken = tmp_path / 'whole', tmp_path / 'broken'

    check_ok(run_cli(['train', '-opt', option_file, '--root', str(whole)], cwd=str(tmp_path)))

    # killed while writing training_states/6.state (net_g_6.pth is already complete)
    out = _kill_while_saving(['train', '-opt', option_file, '--root', str(broken)], str(tmp_path), '6.state')
    assert 'half-written' in out and '.6.state.' in out
    states = broken / 'experiments' / NAME / 'training_states'
    names = sorted(os.listdir(states))
    assert '3.state' in names and '6.state' not in names, names
    assert any(n.startswith('.6.state.') and n.endswith('.tmp') for n in names), names
    assert torch.load(states / '3.state', weights_only=True)['iter'] == 3  # the previous one is intact

    out = check_ok(run_cli(['train', '-opt', option_file, '--root', str(broken), '--auto_resume'], cwd=str(tmp_path)))
    assert 'Resuming training from epoch: 1, iter: 3.' in out
    assert sorted(n for n in os.listdir(states) if not n.endswith('.tmp')) == ['3.state', '6.state']

    expected, got = _final_weights(whole), _final_weights(broken)
    assert expected.keys() == got.keys()
    diff = {k: (expected[k] - got[k]).abs().max().item() for k in expected if not torch.equal(expected[k], got[k])}
    assert not diff, f'resumed weights differ from the uninterrupted run: {diff}'
