"""Preemption under SLURM, simulated on this machine: ``scripts/slurm_train.sbatch`` with a fake ``srun`` (starts
SLURM_NTASKS copies of the command, forwards SIGUSR1 and SIGTERM to them) and a fake ``scontrol`` (host names;
``requeue`` is written to a file). A SIGUSR1 to the batch shell (SLURM's ``--signal=B:USR1@300``) makes the
tasks save a complete checkpoint and stop, the shell requeues the job, and the requeued job resumes and ends
with the uninterrupted run's weights, bit for bit. Also the units of :mod:`converse_plugin.engine.preemption`.
Every subprocess has a timeout."""
from __future__ import annotations

import glob
import os
import re
import signal
import subprocess
import sys
import time
from os import path as osp

import pytest

from converse_plugin.engine.preemption import Preemption, preemption_signals
from tests.e2e.dist_helpers import NAME, OPTION, free_port, load_state, same_weights, write_dump_script
from tests.e2e.helpers import REPO, cli_env, experiment_log, make_images, tiny_overrides, train_options

SBATCH = osp.join(REPO, 'scripts', 'slurm_train.sbatch')
JOB_ID = '4242'
TOTAL_ITER, SAVE_FREQ = 30, 10


# ---------------------------------------------------------------------------------------------- units
def test_preemption_signals_sigterm_only_under_slurm():
    assert preemption_signals({}) == [signal.SIGUSR1]
    assert preemption_signals({'SLURM_JOB_ID': '1'}) == [signal.SIGUSR1, signal.SIGTERM]
    assert preemption_signals({'SLURM_JOB_ID': ''}) == [signal.SIGUSR1]


def test_preemption_handler_sets_flag_once_and_restores_the_previous_handler(monkeypatch):
    for key in ('SLURM_JOB_ID', 'TORCHELASTIC_RUN_ID'):
        monkeypatch.delenv(key, raising=False)
    seen = []

    def previous(signum, frame):  # noqa: ARG001
        seen.append(signum)

    old_usr1 = signal.signal(signal.SIGUSR1, previous)
    old_term = signal.getsignal(signal.SIGTERM)
    try:
        with Preemption().installed() as preemption:
            assert signal.getsignal(signal.SIGTERM) is old_term  # SIGTERM is SLURM's only
            assert preemption.received is None and preemption.requested() is None
            os.kill(os.getpid(), signal.SIGUSR1)
            _until(lambda: preemption.received is not None)
            assert preemption.received == signal.SIGUSR1
            assert preemption.requested() == 'SIGUSR1'  # no process group: this process's flag
            preemption._handle(signal.SIGTERM, None)  # a second signal changes nothing
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.05)
            assert preemption.received == signal.SIGUSR1 and preemption.requested() == 'SIGUSR1'
        assert signal.getsignal(signal.SIGUSR1) is previous and not seen
        os.kill(os.getpid(), signal.SIGUSR1)
        _until(lambda: seen)
        assert seen == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, old_usr1)


def test_preemption_installs_sigterm_under_slurm(monkeypatch):
    monkeypatch.setenv('SLURM_JOB_ID', '7')
    old_term = signal.getsignal(signal.SIGTERM)
    with Preemption().installed() as preemption:
        handler = signal.getsignal(signal.SIGTERM)
        assert getattr(handler, '__self__', None) is preemption
    assert signal.getsignal(signal.SIGTERM) is old_term


def _until(condition, timeout: float = 5.0) -> None:
    """Python runs a signal handler between bytecodes of the main thread: give it the chance."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


# ---------------------------------------------------------------------------------------------- fake SLURM
FAKE_SRUN = '''#!{python}
"""srun on one machine: SLURM_NTASKS copies of the command (SLURM_PROCID = SLURM_LOCALID = 0..N-1), srun's own
options ignored; SIGUSR1 and SIGTERM forwarded to every task; the highest exit status (128+N for a signal)."""
import os, signal, subprocess, sys

args = sys.argv[1:]
while args and args[0].startswith('-'):
    args.pop(0)
tasks = []

def forward(signum, frame):
    for task in tasks:
        if task.poll() is None:
            task.send_signal(signum)

signal.signal(signal.SIGUSR1, forward)
signal.signal(signal.SIGTERM, forward)
for rank in range(int(os.environ.get('SLURM_NTASKS', '1'))):
    tasks.append(subprocess.Popen(args, env=dict(os.environ, SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank),
                                                 SLURM_STEP_ID='0')))
codes = [task.wait() for task in tasks]
sys.exit(max(code if code >= 0 else 128 - code for code in codes))
'''

FAKE_SCONTROL = '''#!/bin/bash
# scontrol on one machine: `show hostname LIST` prints the hosts of a plain list; `requeue ID` is recorded.
case "$1" in
    show) [ "$2" = hostname ] || exit 1; echo "$3" | tr ',' '\\n' ;;
    requeue) echo "requeue $2" >> "$FAKE_SLURM_LOG" ;;
    *) echo "fake scontrol: $*: not supported" >&2; exit 1 ;;
esac
'''

# The dump script (final weights in $DUMP_DIR), with each training step STEP_SLEEP seconds longer: the test sees
# an iteration in the output and signals before the next few iterations are done.
SLOW_STEPS = '''
import os, runpy, time
from basicsr.models.sr_model import SRModel

_step = SRModel.optimize_parameters

def optimize_parameters(self, current_iter):
    time.sleep(float(os.environ.get('STEP_SLEEP') or 0))
    _step(self, current_iter)

SRModel.optimize_parameters = optimize_parameters
runpy.run_path({dump!r}, run_name='__main__')
'''


def _fake_slurm(tmp_path) -> tuple[str, str]:
    """The folder of the fake ``srun`` and ``scontrol``, and the command that runs the CLI."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for name, text in (('srun', FAKE_SRUN.replace('{python}', sys.executable)), ('scontrol', FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    wrapper = tmp_path / 'slow_steps.py'
    wrapper.write_text(SLOW_STEPS.replace('{dump!r}', repr(write_dump_script(tmp_path))))
    return str(bin_dir), f'{sys.executable} {wrapper}'


def _sbatch(tmp_path, bin_dir: str, cli: str, tag: str, root: str, data: str, signal_when=None,
            timeout: float = 300, **extra: str) -> tuple[int, str, str]:
    """Run the batch script as SLURM would (2 tasks, job JOB_ID); returns (exit status, its output, the dump
    folder). ``signal_when(iteration)``: SIGUSR1 to the batch shell at the first printed iteration it accepts."""
    dump = tmp_path / f'dump_{tag}'
    dump.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(('SLURM_', 'TORCHELASTIC_'))}
    env = cli_env(**{**env, 'PATH': os.pathsep.join([bin_dir, env.get('PATH', '')]), 'SLURM_JOB_ID': JOB_ID,
                     'SLURM_NTASKS': '2', 'SLURM_NODELIST': '127.0.0.1', 'SLURM_CPUS_PER_TASK': '1',
                     'MASTER_PORT': str(free_port()), 'FAKE_SLURM_LOG': str(tmp_path / 'scontrol.log'),
                     'CONVERSE_CLI': cli, 'DUMP_DIR': str(dump), 'CONVERSE_DIST_TIMEOUT': '120', **extra})
    overrides = tiny_overrides(**{'datasets:train:dataroot_gt': data, 'datasets:val:dataroot_gt': data,
                                  'datasets:train:batch_size_per_gpu': 1, 'train:total_iter': TOTAL_ITER,
                                  'logger:save_checkpoint_freq': SAVE_FREQ, 'val:val_freq': 1000})
    out_path = tmp_path / f'out_{tag}.txt'
    with open(out_path, 'w') as out:
        proc = subprocess.Popen(['bash', SBATCH, train_options(OPTION), '--root', root, '--force_yml', *overrides],
                                cwd=str(tmp_path), env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own process group: srun and the tasks go with it
    deadline = time.monotonic() + timeout
    try:
        if signal_when is not None:
            while proc.poll() is None and time.monotonic() < deadline:
                done = [int(i.replace(',', '')) for i in re.findall(r'iter:\s*([\d,]+),', out_path.read_text())]
                if any(signal_when(i) for i in done):
                    os.kill(proc.pid, signal.SIGUSR1)
                    break
                time.sleep(0.05)
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers (none when the script ended normally)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(10)
    return proc.returncode, out_path.read_text(), str(dump)


@pytest.mark.slow
def test_sbatch_requeues_on_sigusr1_and_the_requeued_job_resumes_exactly(tmp_path):
    """Uninterrupted run (the reference weights); a run whose batch shell gets SIGUSR1 at an iteration between
    checkpoints: both tasks save there and stop (75), the shell requeues the job and exits 0; the requeued job
    (SLURM_RESTART_COUNT=1) resumes from that iteration and ends with the reference weights."""
    data = make_images(str(tmp_path / 'images'), n=8, size=48)
    bin_dir, cli = _fake_slurm(tmp_path)
    requeued = tmp_path / 'scontrol.log'

    status, out, dump = _sbatch(tmp_path, bin_dir, cli, 'reference', str(tmp_path / 'root_ref'), data)
    assert status == 0, out[-5000:]
    assert not requeued.exists()
    reference = load_state(osp.join(dump, 'final_rank0.pth'))

    root = str(tmp_path / 'root')
    # The stop comes after the signalled iteration or the next one: keep both away from the checkpoints (10, 20)
    # and inside an epoch (4 iterations: 8 images, 2 tasks, batch 1), so that the resumed epoch skips batches.
    status, out, dump = _sbatch(tmp_path, bin_dir, cli, 'preempted', root, data, STEP_SLEEP='0.3',
                                signal_when=lambda i: i >= 3 and 3 <= i % SAVE_FREQ <= 7 and i % 4 in (1, 2))
    assert status == 0, out[-5000:]
    assert requeued.read_text().split('\n') == [f'requeue {JOB_ID}', ''], out[-5000:]
    stops = re.findall(r'basicsr train: preempted: SIGUSR1 at iteration (\d+): stopped after saving the training '
                       r'state; .*resume with: srun python -m converse_plugin train', out)
    assert len(stops) == 2 and stops[0] == stops[1], out[-5000:]  # each task, the same iteration
    stopped = int(stops[0])
    assert stopped % SAVE_FREQ != 0 and 3 <= stopped < TOTAL_ITER
    exp = osp.join(root, 'experiments', NAME)
    states = sorted(os.listdir(osp.join(exp, 'training_states')))
    assert f'{stopped}.state' in states and all(int(s.split('.')[0]) <= stopped for s in states), states
    models = os.listdir(osp.join(exp, 'models'))
    assert f'net_g_{stopped}.pth' in models and 'net_g_latest.pth' not in models, models
    assert not glob.glob(osp.join(dump, 'final_rank*.pth'))
    assert 'srun ended with status 75 after SIGUSR1: requeueing the job' in out

    status, out, dump = _sbatch(tmp_path, bin_dir, cli, 'requeued', root, data, SLURM_RESTART_COUNT='1')
    assert status == 0, out[-5000:]
    assert requeued.read_text().count('requeue') == 1  # ended normally: not requeued again
    log = experiment_log(root, NAME)
    assert re.search(rf'Resuming training from epoch: \d+, iter: {stopped}\.', log), log[-3000:]
    assert 'net_g_latest.pth' in os.listdir(osp.join(exp, 'models'))
    for rank in (0, 1):
        assert same_weights(load_state(osp.join(dump, f'final_rank{rank}.pth')), reference), rank
