"""Distributed start for ``--launcher pytorch`` (torchrun) and ``--launcher slurm``, on GPUs or CPUs.

BasicSR 1.4.2's ``init_dist`` always calls ``torch.cuda.set_device`` and picks the GPU as
``RANK % device_count`` (wrong as soon as two nodes run different numbers of processes) and always uses
NCCL, so it cannot start on a CPU machine. :func:`init_dist` picks each process's device from its
*local* rank (torchrun's ``LOCAL_RANK``, SLURM's ``SLURM_LOCALID``) and uses NCCL with CUDA, gloo without.
"""
from __future__ import annotations

import os
import subprocess

import torch
import torch.distributed as dist

__all__ = ['init_dist', 'local_rank', 'backend_for_device']


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


def _slurm_environment(port: int | None) -> None:
    """RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT from the SLURM_* variables of srun."""
    nodes = os.environ['SLURM_NODELIST']
    try:
        addr = subprocess.run(['scontrol', 'show', 'hostname', nodes], capture_output=True, text=True,
                              timeout=30, check=True).stdout.split()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        addr = nodes.split(',')[0].split('[')[0]  # a plain host name list without scontrol (tests, one node)
    os.environ['MASTER_ADDR'] = addr
    if port is not None:
        os.environ['MASTER_PORT'] = str(port)
    os.environ.setdefault('MASTER_PORT', '29500')  # torch.distributed's default port
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')


def init_dist(launcher: str, backend: str = 'nccl', port: int | None = None) -> None:
    """Join the process group of ``launcher`` (``pytorch`` or ``slurm``); a no-op when already joined."""
    if dist.is_available() and dist.is_initialized():
        return
    if launcher == 'slurm':
        _slurm_environment(port)
    elif launcher != 'pytorch':
        raise ValueError(f'invalid launcher type: {launcher!r} (expected pytorch or slurm)')
    _set_cuda_device()
    dist.init_process_group(backend=backend_for_device(backend))
