"""Distributed start for ``--launcher pytorch`` (torchrun) and ``--launcher slurm``, on GPUs or CPUs.

BasicSR 1.4.2's ``init_dist`` always calls ``torch.cuda.set_device`` and picks the GPU as
``RANK % device_count`` (wrong as soon as two nodes run different numbers of processes) and always uses
NCCL, so it cannot start on a CPU machine. :func:`init_dist` picks each process's device from its
*local* rank (torchrun's ``LOCAL_RANK``, SLURM's ``SLURM_LOCALID``) and uses NCCL with CUDA, gloo without.

Bounded failures: joining the group waits at most :func:`start_timeout` seconds (``CONVERSE_DIST_TIMEOUT``,
default 120) for the other ranks; a rank that cannot reach ``MASTER_ADDR:MASTER_PORT``, a port in use or a
missing rank ends with a :class:`DistributedStartError` (one line, naming the address) instead of a hang.
Once joined, collectives get the usual long timeout (:func:`collective_timeout`,
``CONVERSE_DIST_COLLECTIVE_TIMEOUT``, default 1800 s), since a validation or a checkpoint save on rank 0
may take minutes. :func:`check_same_options` then compares the option file and command line of every rank.
"""
from __future__ import annotations

import datetime
import hashlib
import os
import socket
import subprocess
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from converse_plugin.engine.watchdog import Watchdog, start_watchdog, stop_watchdog, waiting
from converse_plugin.errors import UserError

__all__ = ['init_dist', 'local_rank', 'backend_for_device', 'DistributedStartError', 'OptionMismatchError',
           'start_timeout', 'collective_timeout', 'check_same_options', 'is_distributed', 'broadcast_object',
           'gather_to_all', 'barrier', 'shutdown', 'TIMEOUT_ENV', 'COLLECTIVE_TIMEOUT_ENV', 'uses_agent_store',
           'shared_store_warning', 'watch_collectives']

TIMEOUT_ENV = 'CONVERSE_DIST_TIMEOUT'  # seconds to wait for every rank to join (default 120)
COLLECTIVE_TIMEOUT_ENV = 'CONVERSE_DIST_COLLECTIVE_TIMEOUT'  # seconds per collective once joined (default 1800)
_DEFAULT_TIMEOUT = 120.0
_DEFAULT_COLLECTIVE_TIMEOUT = 1800.0


class DistributedStartError(UserError, RuntimeError):
    """The process group could not be formed: address unreachable, port in use, a rank missing."""


class OptionMismatchError(UserError, ValueError):
    """The ranks of one run were started with different option files or command lines."""


def _seconds(env: str, default: float, value: float | None = None) -> float:
    if value is not None:
        return float(value)
    text = os.environ.get(env, '').strip()
    if not text:
        return default
    try:
        seconds = float(text)
    except ValueError:
        raise DistributedStartError(f'{env}={text!r}: expected a number of seconds') from None
    if seconds <= 0:
        raise DistributedStartError(f'{env}={text!r}: expected a positive number of seconds')
    return seconds


def start_timeout(value: float | None = None) -> float:
    """Seconds a rank waits for the others to join: ``value``, else ``CONVERSE_DIST_TIMEOUT``, else 120."""
    return _seconds(TIMEOUT_ENV, _DEFAULT_TIMEOUT, value)


def collective_timeout() -> float:
    """Seconds one collective may wait once the group is formed (``CONVERSE_DIST_COLLECTIVE_TIMEOUT``, 1800)."""
    return _seconds(COLLECTIVE_TIMEOUT_ENV, _DEFAULT_COLLECTIVE_TIMEOUT)


def backend_for_device(backend: str = 'nccl') -> str:
    """``backend`` when CUDA is available; gloo (the CPU backend) otherwise, since NCCL needs CUDA."""
    return backend if torch.cuda.is_available() else 'gloo'


def local_rank() -> int:
    """This process's rank on its node: ``LOCAL_RANK`` (torchrun), ``SLURM_LOCALID`` (srun), else 0."""
    for key in ('LOCAL_RANK', 'SLURM_LOCALID'):
        if os.environ.get(key, '').strip().isdigit():
            return int(os.environ[key])
    return 0


def _set_cuda_device() -> None:
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank() % torch.cuda.device_count())


def _first_host(nodes: str) -> str:
    """The first host of a SLURM node list without scontrol: ``node[03-05,07],gpu1`` -> ``node03``."""
    head = nodes.split(',')[0].strip()
    if '[' in head:
        prefix, _, rest = head.partition('[')
        first = rest.rstrip(']').split(',')[0].split('-')[0]
        return prefix + first
    return head


def _slurm_environment(port: int | None) -> None:
    """RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT from the SLURM_* variables of srun."""
    nodes = os.environ.get('SLURM_NODELIST') or os.environ.get('SLURM_JOB_NODELIST')
    missing = [k for k in ('SLURM_PROCID', 'SLURM_NTASKS') if not os.environ.get(k)] + ([] if nodes else
                                                                                        ['SLURM_NODELIST'])
    if missing:
        raise DistributedStartError(f"--launcher slurm: {', '.join(missing)} not set; start the command with srun "
                                    '(see scripts/slurm_train.sbatch)')
    try:
        addr = subprocess.run(['scontrol', 'show', 'hostname', nodes], capture_output=True, text=True,
                              timeout=30, check=True).stdout.split()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        addr = _first_host(nodes)  # a plain host name list without scontrol (tests, one node)
    os.environ['MASTER_ADDR'] = addr
    if port is not None:
        os.environ['MASTER_PORT'] = str(port)
    os.environ.setdefault('MASTER_PORT', '29500')  # torch.distributed's default port
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')


def _where() -> str:
    return (f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')} "
            f"(rank {os.environ.get('RANK', '?')} of {os.environ.get('WORLD_SIZE', '?')}, "
            f'host {socket.gethostname()})')


def _reason(err: BaseException) -> str:
    text = ' '.join(str(err).split())
    lowered = text.lower()
    if 'address already in use' in lowered or 'eaddrinuse' in lowered:
        return 'the port is already in use (another run or service holds it): choose another MASTER_PORT'
    if 'timed out' in lowered or 'timeout' in lowered:
        return ('not every rank joined in time: a rank did not start, crashed, or cannot reach this address '
                '(check MASTER_ADDR, MASTER_PORT, the firewall, WORLD_SIZE and that all ranks run the same command)')
    if 'connection refused' in lowered or 'connect' in lowered:
        return 'cannot connect: nothing listens there or the host is unreachable (check MASTER_ADDR and MASTER_PORT)'
    return text[:300]


def init_dist(launcher: str, backend: str = 'nccl', port: int | None = None, timeout: float | None = None) -> None:
    """Join the process group of ``launcher`` (``pytorch`` or ``slurm``); a no-op when already joined.

    Raises:
        DistributedStartError: the group did not form within :func:`start_timeout` seconds, or the address
            cannot be used; the message names ``MASTER_ADDR:MASTER_PORT`` and why.
    """
    if dist.is_available() and dist.is_initialized():
        return
    if launcher == 'slurm':
        _slurm_environment(port)
    elif launcher != 'pytorch':
        raise ValueError(f'invalid launcher type: {launcher!r} (expected pytorch or slurm)')
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT') if not os.environ.get(k)]
    if missing:
        raise DistributedStartError(f"--launcher {launcher}: {', '.join(missing)} not set; start the command with "
                                    'torchrun (or srun for --launcher slurm)')
    _set_cuda_device()
    seconds = start_timeout(timeout)
    try:
        delta = datetime.timedelta(seconds=seconds)
        attempt = os.environ.get('TORCHELASTIC_RESTART_COUNT')
        if attempt is None or not uses_agent_store():  # srun, or a store that is new for every round
            dist.init_process_group(backend=backend_for_device(backend), timeout=delta)
        else:  # torchrun's shared store (its default): a prefix per attempt, so that after a restart the keys
            # the killed attempt left there (its ranks' gloo addresses) are never read by the new one. With
            # several agents their restart counts can differ (see shared_store_warning): not reliable there
            store, rank, world_size = next(dist.rendezvous('env://', timeout=delta))
            store = dist.PrefixStore(f'converse_plugin/attempt_{attempt}', store)
            dist.init_process_group(backend=backend_for_device(backend), store=store, rank=rank,
                                    world_size=world_size, timeout=delta)
    except (RuntimeError, TimeoutError, OSError, ValueError) as err:  # DistStoreError, DistNetworkError, ...
        raise DistributedStartError(f'cannot form the process group at {_where()} within {seconds:g} s: '
                                    f'{_reason(err)}') from None
    _set_timeout(datetime.timedelta(seconds=max(seconds, collective_timeout())))


def uses_agent_store() -> bool:
    """Whether torchrun's workers share the agent's store (``TORCHELASTIC_USE_AGENT_STORE``), which keeps the keys
    of every earlier round; ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` in torchrun's environment turns it off."""
    return os.environ.get('TORCHELASTIC_USE_AGENT_STORE') == 'True'


def shared_store_warning() -> str | None:
    """A warning for torchrun runs of several agents (machines) with restarts on the agents' shared store.

    When a worker of one agent dies, that agent restarts its workers as a failure (its restart count goes up),
    but another agent whose worker has not failed yet restarts its own for the new membership, with its count
    unchanged. The workers of the new round then disagree on the round (the restart count is the only one
    torchrun gives them) and cannot tell fresh keys of the shared store from the dead round's: the group
    does not form (it ends after the start timeout). With ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` every
    round gets a new store and the restart works (docs/distributed.md)."""
    agents = os.environ.get('GROUP_WORLD_SIZE', '1')
    restarts = os.environ.get('TORCHELASTIC_MAX_RESTARTS', '0')
    if uses_agent_store() and agents.isdigit() and int(agents) > 1 and restarts.isdigit() and int(restarts) > 0:
        return (f'torchrun with {agents} agents and --max-restarts {restarts} shares one store across restarts: '
                'a restart after a worker dies may not form the group again; start torchrun with '
                'TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in its environment (docs/distributed.md)')
    return None


def _set_timeout(delta: datetime.timedelta) -> None:
    """The default group's timeout for every later collective: ``dist.set_timeout``, or on torch releases without
    it (2.8 and 2.11 among them) the same function under its private name."""
    setter = getattr(dist, 'set_timeout', None) or dist.distributed_c10d._set_pg_timeout
    setter(delta)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (itself without a process group)."""
    if not is_distributed():
        return obj
    box = [obj]
    with waiting('a broadcast from rank 0' if src == 0 else f'a broadcast from rank {src}'):
        dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_to_all(obj: Any) -> list:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` without a process group)."""
    if not is_distributed():
        return [obj]
    out: list = [None] * dist.get_world_size()
    with waiting('a gather of every rank'):
        dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if is_distributed():
        with waiting('a barrier'):
            dist.barrier()


def watch_collectives(opt: dict, resume_hint: Any = None, log: Any = None) -> Watchdog | None:
    """Start this rank's collective watchdog (:mod:`converse_plugin.engine.watchdog`); None without a process
    group. A rank whose wait exceeds ``dist_params: timeout`` (else ``CONVERSE_DIST_TIMEOUT``, else 120 s) stops
    when another rank does not answer; when all are alive, after the collective timeout."""
    if not is_distributed():
        return None
    dist_params = opt.get('dist_params')  # checked by parse_options in every distributed run
    timeout = dist_params.get('timeout') if isinstance(dist_params, dict) else None
    import uuid

    token = broadcast_object(uuid.uuid4().hex)  # this group's keys (a shared store keeps earlier rounds')
    host = os.environ.get('MASTER_ADDR', '127.0.0.1')
    store_host = (f'the torchrun agent on {host}' if uses_agent_store() else f'rank 0 on {host}')
    watchdog = Watchdog(dist.get_rank(), dist.get_world_size(), host, int(os.environ.get('MASTER_PORT', '29500')),
                        token, start_timeout(timeout), stuck_timeout=collective_timeout(), resume_hint=resume_hint,
                        log=log, store_host=store_host)
    return start_watchdog(watchdog)


def shutdown() -> None:
    """Stop the watchdog and leave the process group, if this process joined one. A process that exits with a
    gloo group still alive can abort in the group's destructor ("terminate called without an active
    exception", SIGABRT), which would replace the one-line error's exit status."""
    stop_watchdog()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


_RANK_ARGS = ('--local_rank', '--local-rank')  # differ per rank by design
_PATH_ARGS = ('-opt', '--opt', '--root')  # paths may differ between nodes; the file's content is compared


def _normalised_argv(argv: Sequence[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split('=', 1)[0]
        if name in _RANK_ARGS + _PATH_ARGS:
            skip = '=' not in arg
            continue
        out.append(arg)
    return out


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def check_same_options(option_file: str, argv: Sequence[str]) -> None:
    """Check that every rank read the same option file content and the same command line (``-opt``,
    ``--root`` and ``--local_rank`` values aside: paths may differ between machines). A no-op without a
    process group.

    Raises:
        OptionMismatchError: on every rank, naming the ranks (and hosts) whose file or arguments differ
            from rank 0's.
    """
    if not is_distributed():
        return
    with open(option_file, 'rb') as f:
        file_hash = _digest(f.read())
    mine = {'file': file_hash, 'args': _digest('\0'.join(_normalised_argv(argv)).encode()),
            'path': option_file, 'host': socket.gethostname()}
    everyone = gather_to_all(mine)
    ref = everyone[0]
    problems = []
    for what, label in (('file', 'option file content'), ('args', 'command-line arguments')):
        differing = [r for r, info in enumerate(everyone) if info[what] != ref[what]]
        if differing:
            ranks = ', '.join(f"{r} ({everyone[r]['host']}: {everyone[r]['path']})" for r in differing)
            problems.append(f"{label} of rank(s) {ranks} differ from rank 0's ({ref['host']}: {ref['path']})")
    if problems:
        raise OptionMismatchError('the ranks were started with different options: ' + '; '.join(problems)
                                  + '; start every rank with the same option file and arguments')
