"""``train: cpu_allocator``: how the C library's allocator treats the memory of CPU training steps.

``cache`` (default) or ``system``. glibc maps every large tensor afresh from the kernel and unmaps it when it
is freed, so each CPU training step pays one page fault per 4 KiB page of its activations, spent as system
time (ConverseDnCNN at B4 64 x 64: 40-60 thousand faults and 70-140 ms a step). ``cache`` keeps freed memory
in the process for the next step, as PyTorch's caching allocator does on GPUs (:func:`cache_freed_memory`);
the process then holds its peak memory until it ends. ``system`` leaves the allocator alone. Runs on CUDA and
C libraries other than glibc are left alone too (logged). Any model type: the training loop sets it up.

Only the standard library is imported at module level: ``benchmarks/bench_train_step.py`` loads this file
directly, also when it times another checkout's ``converse_plugin`` (``--source``).
"""
from __future__ import annotations

import ctypes
import platform
from typing import Any

__all__ = ['CPU_ALLOCATORS', 'cache_freed_memory', 'parse_cpu_allocator', 'setup_cpu_allocator']

CPU_ALLOCATORS = ('cache', 'system')
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's largest allowed mmap threshold on 64-bit systems


def cache_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks up to 32 MiB in the process instead of unmapping them (mmap
    threshold 32 MiB, no trimming of the heap's top), so that a training step reuses the previous step's
    memory instead of faulting in fresh zeroed pages. Process-wide, for the rest of the process. Returns False
    (and changes nothing) where the C library is not glibc."""
    if platform.libc_ver()[0] != 'glibc':
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def parse_cpu_allocator(value: Any) -> str:
    """``train: cpu_allocator`` -> 'cache' (default, also for ``~``) or 'system'. Raises OptionError."""
    if value is None:
        return 'cache'
    if value not in CPU_ALLOCATORS:
        from converse_plugin.errors import OptionError
        raise OptionError(f'train:cpu_allocator: expected cache or system, got {value!r}')
    return value


def setup_cpu_allocator(train_opt: Any, device: Any, logger: Any) -> bool:
    """Apply ``train: cpu_allocator`` for a run on ``device`` (a torch.device); returns whether freed memory
    is now cached."""
    if parse_cpu_allocator((train_opt or {}).get('cpu_allocator')) != 'cache' or device.type != 'cpu':
        return False
    if cache_freed_memory():
        logger.info('train:cpu_allocator cache: freed memory stays in the process for the next step '
                    '(cpu_allocator: system to turn off)')
        return True
    logger.info('train:cpu_allocator cache: the C library is not glibc; its allocator is left as it is')
    return False
