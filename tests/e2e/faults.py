"""Fault injection for multi-agent training runs, on one host standing in for two machines.

Two torchrun agents (``--nnodes 2``, gloo, c10d rendezvous on 127.0.0.1; agent 0 hosts the rendezvous store,
``--rdzv-conf is_host=1``) train a tiny ConverseDnCNN with ``--max-restarts 1 --auto_resume``, and one fault
is injected (:data:`CASES`). :func:`run_case` classifies what happened:

- ``finished``: every agent ended with status 0 and the final weights equal the uninterrupted run's;
- ``stopped``: recovery was impossible (the rendezvous host is gone); every surviving process ended within the
  bound, a worker printed one line with the resume command, every training state on disk loads, and a run
  started again with ``--auto_resume`` ends with the uninterrupted run's weights;
- anything else is a failure (``hang``: a process still ran at the bound; ``wrong``: other weights; ``failed``).

The slow tests (``tests/e2e/test_faults.py``) run each case once; ``benchmarks/dist_faults.py`` repeats them
and writes the table kept in docs/distributed.md.
"""
from __future__ import annotations

import glob
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from os import path as osp

import torch

from tests.e2e.dist_helpers import NAME, OPTION, free_port, load_state, same_weights, torchrun, write_dump_script
from tests.e2e.helpers import cli_env, make_images, tiny_overrides, train_options

TOTAL_ITER = 10
FAULT_ITER = 5  # iteration at which the fault is injected (after the checkpoint of iteration 4)
TIMEOUT = 15  # dist_params:timeout of the runs (start and collective watchdog), seconds
JOIN_TIMEOUT = 60  # --rdzv-conf join_timeout: how long an agent waits for the other one in a new round
# every surviving process must end within this many seconds of the fault, when recovery is impossible
STOP_BOUND = JOIN_TIMEOUT + 2 * TIMEOUT + 30

# case -> (what is injected, who, the outcomes that are acceptable)
CASES = {
    'kill worker of rendezvous host': ('kill-worker', 0, ('finished', )),
    'kill worker of other agent': ('kill-worker', 1, ('finished', )),
    'kill saving worker (rank 0) mid-save': ('kill-saver', None, ('finished', )),
    'kill other agent (torchrun)': ('kill-agent', 1, ('finished', 'stopped')),
    'kill other machine (agent and workers)': ('kill-machine', 1, ('finished', 'stopped')),
    'kill rendezvous host machine': ('kill-machine', 0, ('stopped', )),
    'stop worker of other agent past timeout': ('stop-worker', 1, ('finished', )),
    'stop worker of rendezvous host past timeout': ('stop-worker', 0, ('finished', )),
}

# The agents' workers run this around converse_plugin's CLI (tests/e2e/dist_helpers.DUMP_SCRIPT, plus): each
# iteration prints 'converse-fault: agent A iter N pid P'; FAULT_KILL_ITER / FAULT_STOP_ITER make the worker of
# local rank 0 kill or stop itself at that iteration, once per run (not by the restart count: after a restart
# for a new membership an agent's count is unchanged); FAULT_HOLD_ITER pauses a worker 3 s there, once.
_FAULT_PRELUDE = '''
import os, signal, sys, time
from basicsr.models.sr_model import SRModel as _SR
_fault_opt = _SR.optimize_parameters

def _once(name):  # a fault happens once per run: the first worker to create the marker file injects it
    try:
        os.close(os.open(os.path.join(os.environ['DUMP_DIR'], name), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False

def _fault_optimize(self, current_iter):
    agent = os.environ.get('FAULT_AGENT', '?')
    print(f'converse-fault: agent {agent} iter {current_iter} pid {os.getpid()}', flush=True)
    if os.environ.get('FAULT_HOLD_ITER') == str(current_iter) and _once('held'):
        time.sleep(3)  # time for the harness to kill an agent in the middle of training
    if os.environ.get('LOCAL_RANK', '0') == '0':
        if os.environ.get('FAULT_KILL_ITER') == str(current_iter) and _once('killed'):
            os.kill(os.getpid(), signal.SIGKILL)
        if os.environ.get('FAULT_STOP_ITER') == str(current_iter) and _once('stopped'):
            os.kill(os.getpid(), signal.SIGSTOP)
    _fault_opt(self, current_iter)

_SR.optimize_parameters = _fault_optimize
'''


@dataclass
class Outcome:
    case: str
    outcome: str
    seconds: float
    detail: str = ''
    codes: list = field(default_factory=list)


def write_fault_script(folder: str) -> str:
    base = write_dump_script(folder)
    with open(base, encoding='utf-8') as f:
        text = f.read()
    path = osp.join(folder, 'fault_ranks.py')
    with open(path, 'w', encoding='utf-8') as f:
        f.write(text.replace('from converse_plugin.cli import main\n',
                             'from converse_plugin.cli import main\n' + _FAULT_PRELUDE, 1))
    return path


def prepare(folder: str) -> str:
    """The training images of every run and the option file (the shipped one with ``dist_params: timeout``)."""
    import yaml

    with open(train_options(OPTION), encoding='utf-8') as f:
        opt = yaml.safe_load(f)
    opt.setdefault('dist_params', {}).update({'backend': 'gloo', 'timeout': TIMEOUT})
    with open(osp.join(folder, 'faults.yml'), 'w', encoding='utf-8') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return make_images(osp.join(folder, 'images'), n=6, size=48)


def _overrides(data: str) -> list[str]:
    return tiny_overrides(**{'datasets:train:dataroot_gt': data, 'datasets:val:dataroot_gt': data,
                             'datasets:train:batch_size_per_gpu': 1, 'train:total_iter': TOTAL_ITER,
                             'val:val_freq': 100, 'logger:save_checkpoint_freq': 2})


def _command(script: str, root: str, data: str, port: int, run_id: str, host: bool) -> list[str]:
    return [*torchrun('--nnodes', '2', '--nproc_per_node', '1', '--rdzv-backend', 'c10d',
                      '--rdzv-endpoint', f'127.0.0.1:{port}', '--rdzv-id', run_id, '--max-restarts', '1',
                      '--rdzv-conf', f'is_host={int(host)},join_timeout={JOIN_TIMEOUT}'),
            script, 'train', '-opt', osp.join(osp.dirname(data), 'faults.yml'), '--launcher', 'pytorch',
            '--auto_resume', '--root', root, '--force_yml', *_overrides(data)]


class _Agent:
    def __init__(self, cmd: list[str], env: dict, cwd: str) -> None:
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.lines: list[str] = []
        self.iters: dict[int, int] = {}  # iteration -> worker pid (the first report of each iteration)
        self.saver: int | None = None
        self.ended_at: float | None = None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            if m := re.match(r'converse-fault: agent \S+ iter (\d+) pid (\d+)', line):
                self.iters.setdefault(int(m.group(1)), int(m.group(2)))
            if (m := re.search(r'half-written .*\.(\d+)\.tmp', line)) and self.saver is None:
                self.saver = int(m.group(1))

    def output(self) -> str:
        return ''.join(self.lines)

    def kill_group(self) -> None:
        """The agent and its workers (torchrun starts them in sessions of their own): a machine lost."""
        for pid in {self.proc.pid, *self.iters.values()}:
            try:
                os.killpg(pid, signal.SIGKILL) if pid == self.proc.pid else os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _run_agents(folder: str, tag: str, data: str, inject: str | None = None, who: int | None = None,
                bound: float = 600) -> tuple[list[_Agent], float, float | None, bool]:
    """Start the two agents, inject the fault, wait; returns (agents, seconds, time of the fault, hang)."""
    script = write_fault_script(folder)
    dump, root = osp.join(folder, f'dump_{tag}'), osp.join(folder, f'root_{tag}')
    os.makedirs(dump, exist_ok=True)
    port = free_port()
    agents = []
    for index in (0, 1):
        env = cli_env(DUMP_DIR=dump, FAULT_AGENT=str(index), TORCH_DISABLE_SHARE_RDZV_TCP_STORE='1')
        if inject == 'kill-worker' and who == index:
            env['FAULT_KILL_ITER'] = str(FAULT_ITER)
        if inject == 'stop-worker' and who == index:
            env['FAULT_STOP_ITER'] = str(FAULT_ITER)
        if inject in ('kill-agent', 'kill-machine'):
            env['FAULT_HOLD_ITER'] = str(FAULT_ITER)
        if inject == 'kill-saver':
            env['CONVERSE_TEST_SLOW_SAVE'] = f'net_g_{FAULT_ITER - 1}.pth'
        agents.append(_Agent(_command(script, root, data, port, f'{tag}-{port}', index == 0), env, folder))
        if index == 0:
            time.sleep(1.0)  # agent 0 binds the rendezvous store first
    start = time.monotonic()
    fault_at: float | None = None
    stopped_pid: int | None = None
    hang = False
    while any(a.proc.poll() is None for a in agents):
        now = time.monotonic()
        for a in agents:
            if a.proc.poll() is not None and a.ended_at is None:
                a.ended_at = now
        if fault_at is None:
            if inject in ('kill-agent', 'kill-machine') and FAULT_ITER in agents[who].iters:
                if inject == 'kill-agent':
                    agents[who].proc.send_signal(signal.SIGKILL)
                else:
                    agents[who].kill_group()
                fault_at = now
            elif inject == 'kill-saver' and any(a.saver for a in agents):
                os.kill(next(a.saver for a in agents if a.saver), signal.SIGKILL)
                fault_at = now
            elif inject == 'kill-worker' and FAULT_ITER in agents[who].iters:
                fault_at = now
            elif inject == 'stop-worker' and FAULT_ITER in agents[who].iters:
                fault_at, stopped_pid = now, agents[who].iters[FAULT_ITER]
        if stopped_pid is not None and fault_at is not None and now - fault_at > 2 * TIMEOUT:
            _continue(stopped_pid)  # a stopped process is woken again (its agent's SIGTERM then takes effect)
            stopped_pid = None
        if now - (fault_at or start) > bound:
            hang = True
            break
        time.sleep(0.2)
    for a in agents:
        a.kill_group()  # whatever an agent left behind (an orphaned worker of a killed agent)
        a.proc.wait(10)
        a.reader.join(5)
        if a.ended_at is None:
            a.ended_at = time.monotonic()
    return agents, time.monotonic() - start, fault_at, hang


def _continue(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


def reference_weights(folder: str, data: str) -> dict:
    """The final weights of an uninterrupted two-agent run."""
    agents, _, _, hang = _run_agents(folder, 'reference', data)
    assert not hang and all(a.proc.returncode == 0 for a in agents), '\n'.join(a.output()[-3000:] for a in agents)
    return load_state(osp.join(folder, 'dump_reference', 'final_rank0.pth'))


def _states_load(root: str) -> str:
    """'' when every training state and network file of the run loads, else what does not."""
    exp = osp.join(root, 'experiments', NAME)
    bad = []
    for path in glob.glob(osp.join(exp, 'training_states', '*.state')) + glob.glob(osp.join(exp, 'models', '*.pth')):
        try:
            torch.load(path, map_location='cpu', weights_only=True)
        except Exception as err:  # noqa: BLE001 (any failure to load is the finding)
            bad.append(f'{osp.basename(path)}: {str(err)[:80]}')
    return '; '.join(bad)


def run_case(case: str, folder: str, data: str, reference: dict, tag: str | None = None) -> Outcome:
    inject, who, _ = CASES[case]
    tag = tag or re.sub(r'\W+', '_', case)
    agents, seconds, fault_at, hang = _run_agents(folder, tag, data, inject, who, bound=STOP_BOUND)
    out = '\n'.join(a.output() for a in agents)
    codes = [a.proc.returncode for a in agents]
    root = osp.join(folder, f'root_{tag}')
    if fault_at is None:
        return Outcome(case, 'failed', seconds, 'the fault was never injected: ' + out[-1500:], codes)
    if hang:
        return Outcome(case, 'hang', seconds, f'a process still ran {STOP_BOUND} s after the fault: ' + out[-2000:],
                       codes)
    if bad := _states_load(root):
        return Outcome(case, 'failed', seconds, f'a checkpoint does not load: {bad}', codes)
    final = osp.join(folder, f'dump_{tag}', 'final_rank0.pth')
    if all(c == 0 for c in codes if c is not None) and codes[0] == 0 and osp.isfile(final):
        if same_weights(load_state(final), reference):
            return Outcome(case, 'finished', seconds, '', codes)
        return Outcome(case, 'wrong', seconds, 'finished with other weights than the uninterrupted run', codes)
    # recovery impossible: a worker must say so in one line with the resume command; then resume by hand
    lines = [line for line in out.splitlines() if 'error:' in line and 'resume with:' in line]
    if not lines:
        return Outcome(case, 'failed', seconds, 'no one-line error with the resume command: ' + out[-3000:], codes)
    late = [a for a in agents if a.ended_at is not None and a.ended_at - fault_at > STOP_BOUND]
    if late:
        return Outcome(case, 'hang', seconds, 'a process ended after the bound', codes)
    resumed, _, _, hang = _run_agents(folder, tag, data)  # the same command, started again
    if hang or any(a.proc.returncode != 0 for a in resumed):
        return Outcome(case, 'failed', seconds, 'the resumed run failed: ' + '\n'.join(a.output()[-2000:]
                                                                                    for a in resumed), codes)
    if not same_weights(load_state(final), reference):
        return Outcome(case, 'wrong', seconds, 'the resumed run ended with other weights', codes)
    return Outcome(case, 'stopped', seconds, lines[-1].strip(), codes)
