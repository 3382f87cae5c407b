"""Faults of multi-agent training runs, each injected once (tests/e2e/faults.py has the cases and the harness;
``benchmarks/dist_faults.py`` repeats them and writes the table of docs/distributed.md). Two torchrun agents
(gloo, c10d rendezvous, ``--max-restarts 1``, ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``) train a tiny ConverseDnCNN;
each case must end as the README promises (the uninterrupted run's final weights) or, where recovery is
impossible, with every survivor ended within the bound, one line with the resume command and checkpoints that
resume exactly. Then a collective watchdog test without torchrun: one of two ranks stopped (SIGSTOP)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from os import path as osp

import pytest

from tests.e2e import faults
from tests.e2e.dist_helpers import free_port
from tests.e2e.helpers import cli_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def bench(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp('faults'))
    data = faults.prepare(folder)
    return folder, data, faults.reference_weights(folder, data)


@pytest.mark.parametrize('case', list(faults.CASES))
def test_fault_ends_as_promised(bench, case):
    folder, data, reference = bench
    outcome = faults.run_case(case, folder, data, reference)
    assert outcome.outcome in faults.CASES[case][2], f'{outcome.outcome} (exit {outcome.codes}): {outcome.detail}'
    if outcome.outcome == 'stopped':
        assert 'resume with:' in outcome.detail and '--auto_resume' in outcome.detail, outcome.detail


def test_watchdog_names_the_rank_that_stopped(tmp_path):
    """Two ranks started by hand (no torchrun), ``dist_params: timeout`` 6 s; rank 1 stops itself (SIGSTOP) at
    iteration 5. Rank 0 ends within the timeout plus a margin, with one line naming rank 1, where it was and
    the command that resumes; rank 1 is then killed by the test."""
    folder = str(tmp_path)
    data = faults.prepare(folder)
    script = faults.write_fault_script(folder)
    dump = osp.join(folder, 'dump')
    os.makedirs(dump)
    port = free_port()
    option = osp.join(folder, 'faults.yml')
    with open(option, encoding='utf-8') as f:
        text = f.read().replace(f'timeout: {faults.TIMEOUT}', 'timeout: 6')
    with open(option, 'w', encoding='utf-8') as f:
        f.write(text)
    procs = []
    start = time.monotonic()
    for rank in (0, 1):
        env = cli_env(RANK=str(rank), LOCAL_RANK='0', WORLD_SIZE='2', MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port),
                      DUMP_DIR=dump, FAULT_AGENT=str(rank), **({'FAULT_STOP_ITER': '5'} if rank == 1 else {}))
        cmd = [sys.executable, script, 'train', '-opt', option, '--launcher', 'pytorch', '--root',
               osp.join(folder, 'root'), '--force_yml', *faults._overrides(data)]
        procs.append(subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    try:
        out, _ = procs[0].communicate(timeout=120)
        assert time.monotonic() - start < 60  # start (about 10 s) + iterations + 6 s of waiting + the margin
        assert procs[0].returncode == 2, out[-3000:]
        lines = [line for line in out.splitlines() if line.startswith('basicsr train: error:')]
        assert len(lines) == 1, out[-3000:]
        line = lines[0]
        # the watchdog's wait, or gloo's own timeout where torch keeps the start timeout for gloo (torch 2.8)
        assert ('rank 0 stopped at the training step of iteration 5: waited' in line and 'the timeout is 6 s' in line
                or 'rank 0 stopped at the training step of iteration 5: a collective failed (Timed out' in line), line
        assert 'rank 1 did not answer' in line, line
        assert 'training_states/4.state' in line and '--auto_resume' in line, line
        assert 'Traceback' not in out, out[-3000:]
        assert procs[1].poll() is None  # still stopped: the watchdog did not wait for it
    finally:
        for proc in procs:
            try:
                proc.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate(timeout=30)
