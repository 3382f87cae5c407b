"""How the C library's allocator treats the CPU memory of training steps and inference runs:
``train: cpu_allocator`` (``basicsr train``), ``val: cpu_allocator`` (``basicsr test``) and ``--cpu-allocator``
(``basicsr infer`` and ``basicsr compare``).

``cache`` (default) or ``system``. glibc maps every large tensor afresh from the kernel and unmaps it when it
is freed, so each step pays one page fault per 4 KiB page of its large tensors, spent as system time
(ConverseDnCNN training at B4 64 x 64: 40-60 thousand faults and 70-140 ms a step; ``basicsr test`` of the
released ConverseDnCNN on four Set12 images: 22 million faults, 80 s of system time in a 113 s run). ``cache``
keeps freed memory in the process for the next step or image, as PyTorch's caching allocator does on GPUs
(:func:`cache_freed_memory`); the process then holds its peak memory until it ends. ``system`` leaves the
allocator alone. Runs on CUDA and C libraries other than glibc are left alone too (logged).

Only the standard library is imported at module level: ``benchmarks/bench_train_step.py`` loads this file
directly, also when it times another checkout's ``converse_plugin`` (``--source``).
"""
from __future__ import annotations

import ctypes
import platform
from collections.abc import Callable
from typing import Any

__all__ = ['CPU_ALLOCATORS', 'add_cpu_allocator_argument', 'cache_freed_memory', 'parse_cpu_allocator',
           'setup_cpu_allocator']

CPU_ALLOCATORS = ('cache', 'system')
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4  # glibc's mallopt parameters (malloc.h)
_MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's largest allowed mmap threshold on 64-bit systems


def cache_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks of every size in the process instead of unmapping them, so that a
    training step (or the next image) reuses the previous one's memory instead of faulting in fresh zeroed
    pages: blocks come from the heap, not from mmap (``M_MMAP_MAX`` 0; the mmap threshold alone cannot exceed
    32 MiB, and one feature map of 64 channels at 512 x 512 is 64 MiB), and the heap's top is never trimmed.
    Process-wide, for the rest of the process. Returns False (and changes nothing) where the C library is not
    glibc."""
    if platform.libc_ver()[0] != 'glibc':
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(param, value) for param, value in (
        (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1)))


def parse_cpu_allocator(value: Any, key: str = 'train:cpu_allocator') -> str:
    """The option ``key`` -> 'cache' (default, also for ``~``) or 'system'. Raises OptionError naming ``key``."""
    if value is None:
        return 'cache'
    if value not in CPU_ALLOCATORS:
        from converse_plugin.errors import OptionError
        raise OptionError(f'{key}: expected cache or system, got {value!r}')
    return value


def setup_cpu_allocator(value: Any, key: str, device: Any, log: Callable[[str], Any]) -> bool:
    """Apply the option ``key`` (its ``value``: cache, system or None) to a run on ``device`` (a torch.device),
    telling ``log`` (e.g. ``logger.info``) what was done; returns whether freed memory is now cached."""
    if parse_cpu_allocator(value, key) != 'cache' or device.type != 'cpu':
        return False
    if cache_freed_memory():
        log(f'{key} cache: freed memory stays in the process for the next step or image '
            f'({key} system to turn it off)')
        return True
    log(f'{key} cache: the C library is not glibc; its allocator is left as it is')
    return False


def add_cpu_allocator_argument(parser: Any) -> None:
    """The commands' ``--cpu-allocator cache|system`` (an argparse parser); apply it with
    ``setup_cpu_allocator(args.cpu_allocator, '--cpu-allocator', device, log)``."""
    parser.add_argument('--cpu-allocator', default='cache', choices=CPU_ALLOCATORS,
                        help='on the CPU, cache: glibc keeps freed memory for the next image or tile instead of '
                             'faulting in fresh pages (default; more peak memory: 5-42%% measured); system: its defaults')
