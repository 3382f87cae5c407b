"""Peak tensor memory of a callable, on CUDA or the CPU (used by `basicsr compare` and the benchmarks).

In-process on purpose: measuring in a forked child deadlocks when torch's thread pools already run."""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable

import torch


def peak_bytes(fn: Callable[[], object], device: str) -> int:
    """Largest amount of tensor memory allocated while ``fn()`` runs, over what existed before it.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the largest 'Total Allocated' of PyTorch's memory
    profiler events (tensor memory; scratch of the FFT libraries outside PyTorch's allocator is not seen).
    """
    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    with tempfile.TemporaryDirectory() as tmp:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        trace = os.path.join(tmp, 'trace.json')
        prof.export_chrome_trace(trace)
        with open(trace, encoding='utf-8') as f:
            events = json.load(f)['traceEvents']
    memory = [e['args'] for e in sorted(events, key=lambda e: e.get('ts', 0))
              if e.get('name') == '[memory]' and e['args'].get('Device Type') == 0]
    if not memory:
        return 0
    # the profiler's running total does not start at 0 after earlier profiled code: take it relative to
    # the level before the first event of this run
    base = memory[0]['Total Allocated'] - memory[0]['Bytes']
    return max(m['Total Allocated'] for m in memory) - base
