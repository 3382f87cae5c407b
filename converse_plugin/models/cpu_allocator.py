"""glibc's allocator settings for CPU training (``train: cpu_allocator``). Standard library only, no
converse_plugin imports: ``benchmarks/bench_train_step.py`` loads this file directly, also when it times
another checkout (``--source``)."""
from __future__ import annotations

import ctypes
import platform

__all__ = ['cache_freed_memory']

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
