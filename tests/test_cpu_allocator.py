"""train: cpu_allocator (converse_plugin.engine.allocator): glibc keeps freed memory for the next step."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from converse_plugin.errors import OptionError
from converse_plugin.engine import allocator
from converse_plugin.engine.allocator import parse_cpu_allocator

STEP_FAULTS = '''
import resource, sys, torch
from converse_plugin.engine.allocator import cache_freed_memory
if sys.argv[1] == 'cache':
    assert cache_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def step():  # like a training step: twenty 4-12 MiB activations, then all freed
    tensors = [torch.ones(2**20 * (1 + i % 3)) for i in range(20)]
    del tensors
step()
before = faults()
for _ in range(5):
    step()
print((faults() - before) / 5)
'''
PAGES_PER_STEP = 20 * 8 * 2**20 // 4096  # ~160 MiB of 4 KiB pages


def step_faults(allocator: str) -> float:
    out = subprocess.run([sys.executable, '-c', STEP_FAULTS, allocator], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return float(out.stdout.strip())


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='cpu_allocator cache acts on glibc only')
def test_cache_keeps_freed_memory_for_the_next_step():
    cached = step_faults('cache')
    assert cached < 0.02 * PAGES_PER_STEP, cached  # ~0.5-1% measured
    if any(k.startswith('MALLOC_') or k == 'GLIBC_TUNABLES' for k in os.environ):
        pytest.skip('glibc allocator settings in the environment: the default case is not the default')
    # glibc's defaults: fresh pages for much of every step (20-90% measured; its mmap threshold adapts)
    system = step_faults('system')
    assert system > 0.1 * PAGES_PER_STEP and system > 10 * cached, (system, cached)


def test_parse_cpu_allocator():
    assert parse_cpu_allocator(None) == 'cache'
    assert parse_cpu_allocator('system') == 'system'
    with pytest.raises(OptionError, match="train:cpu_allocator: expected cache or system, got 'jemalloc'"):
        parse_cpu_allocator('jemalloc')


class _Log:
    def __init__(self):
        self.lines = []

    def info(self, line):
        self.lines.append(line)


def test_setup_applies_cache_on_the_cpu_only(monkeypatch):
    import torch
    calls = []
    monkeypatch.setattr(allocator, 'cache_freed_memory', lambda: calls.append(1) or True)
    log = _Log()
    assert allocator.setup_cpu_allocator({}, torch.device('cpu'), log)  # the default
    assert calls == [1] and 'cpu_allocator: system to turn off' in log.lines[0]
    assert not allocator.setup_cpu_allocator({'cpu_allocator': 'system'}, torch.device('cpu'), log)
    assert not allocator.setup_cpu_allocator({'cpu_allocator': 'cache'}, torch.device('cuda'), log)
    assert calls == [1]
    monkeypatch.setattr(allocator, 'cache_freed_memory', lambda: False)  # not glibc
    assert not allocator.setup_cpu_allocator(None, torch.device('cpu'), log)
    assert 'not glibc' in log.lines[-1]
