"""``train: flush_denormal``: the CPU treats denormal float32/float64 values as zero during training.

``true`` or ``false``; by default ``true`` for files that use the plugin's own models or networks, ``false``
for the others, which get BasicSR's arithmetic as BasicSR runs it. Numbers below 1.2e-38 in float32 (denormals) take a slow microcoded path on
many x86 CPUs, tens to over a hundred cycles per operation. A training step makes a few: gradients that
underflow, e.g. behind GELU's derivative far from zero, then carried through Converse2D's FFT-domain backward
(0.03-0.06% of the values reaching Converse2D's backward in a ConverseDnCNN step). ``true`` sets the CPU's
flush-to-zero and denormals-are-zero modes (``torch.set_flush_denormal(True)``): such values read and compute
as 0, 38 orders of magnitude below what training can see. Measured on an Intel Xeon (Sapphire Rapids):
ConverseDnCNN's compiled step 1.30x faster; on AMD EPYC no difference (docs/benchmarks.md).

The mode belongs to each CPU thread, and threads inherit it when they are created: the training loop sets it
right after checking the options, before any multi-threaded operation starts PyTorch's worker threads (and
before DataLoader workers are forked). :func:`flushing_threads` checks which threads actually flush, and the
setup logs a warning where some do not (e.g. a process that ran parallel work before calling
``train_pipeline``). It acts on the CPU threads whatever the device; on a GPU run they only load data.
:func:`preserved_denormal_mode` gives the caller's mode back when training returns.

Only the standard library is imported at module level: ``benchmarks/bench_train_step.py`` loads this file
directly, also when it times another checkout's ``converse_plugin`` (``--source``).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

__all__ = ['denormals_flushed', 'flushing_threads', 'parse_flush_denormal', 'preserved_denormal_mode',
           'setup_flush_denormal']

_DENORMAL_BITS = 713_624  # the bits of the float32 denormal 1.0e-39 (the smallest normal float32 is 1.18e-38)
_CHUNK = 2**16  # elements per thread in the probe: above PyTorch's grain size, so the work is split


def parse_flush_denormal(value: Any, default: bool = True) -> bool:
    """``train: flush_denormal`` -> True or False (``default`` for ``~``). Raises OptionError."""
    if value is None:
        return default
    if not isinstance(value, bool):
        from converse_plugin.errors import OptionError
        raise OptionError(f'train:flush_denormal: expected true or false, got {value!r}')
    return value


def _denormal_products(numel: int):
    """``numel`` float32 denormals times 1.0, as int32 bits (0 where the computing thread flushed). The denormals
    are written as bits and the products read as bits: converting a number to or from float32 in a flushing
    thread would flush it there instead."""
    import torch
    return torch.full((numel,), _DENORMAL_BITS, dtype=torch.int32).view(torch.float32).mul(1.0).view(torch.int32)


def denormals_flushed() -> bool:
    """Whether the calling thread flushes denormals to zero now."""
    return int(_denormal_products(1).item()) == 0


def flushing_threads() -> tuple[int, int]:
    """(threads that flush denormals, PyTorch's intra-op threads), probed with one multi-threaded multiply of
    denormals: each thread's share of the result is 0 where that thread flushes. Shares are counted by chunk
    (as ``at::parallel_for`` splits the work evenly), so a count is exact when each thread takes one chunk."""
    import torch
    threads = torch.get_num_threads()
    return int((_denormal_products(threads * _CHUNK).view(threads, _CHUNK) == 0).all(dim=1).sum()), threads


def setup_flush_denormal(train_opt: Any, logger: Any, default: bool = True) -> bool:
    """Apply ``train: flush_denormal`` (``default`` where it is not set) to this process's CPU threads; returns
    whether the CPU now flushes denormals in every thread PyTorch computes with."""
    import torch
    if not parse_flush_denormal((train_opt or {}).get('flush_denormal'), default):
        return False
    if not torch.set_flush_denormal(True):
        logger.info('train:flush_denormal: this CPU has no flush-to-zero mode; denormals are computed as they are')
        return False
    flushing, threads = flushing_threads()
    if flushing < threads:
        logger.warning(f'train:flush_denormal: {threads - flushing} of {threads} CPU threads still compute '
                       'denormals (their pool started before training set the mode); steps may be slower')
        return False
    logger.info('train:flush_denormal: the CPU treats values below 1.2e-38 as 0 (flush_denormal: false to turn off)')
    return True


@contextmanager
def preserved_denormal_mode() -> Iterator[None]:
    """Give the calling thread's denormal mode back on exit (training sets it for the process otherwise)."""
    import torch
    before = denormals_flushed()
    try:
        yield
    finally:
        if denormals_flushed() != before:
            torch.set_flush_denormal(before)
