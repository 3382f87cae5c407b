"""train: cpu_allocator (glibc keeps freed memory for the next step) and its option parsing."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from converse_plugin.errors import OptionError
from converse_plugin.models.training_speed import parse_cpu_allocator

STEP_FAULTS = '''
import resource, sys, torch
from converse_plugin.models.cpu_allocator import cache_freed_memory
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
    out = subprocess.run([sys.executable, '-c', STEP_FAULTS, allocator], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='cpu_allocator cache acts on glibc only')
def test_cache_keeps_freed_memory_for_the_next_step():
    cached = step_faults('cache')
    assert cached < 0.05 * PAGES_PER_STEP, cached
    if any(k.startswith('MALLOC_') or k == 'GLIBC_TUNABLES' for k in os.environ):
        pytest.skip('glibc allocator settings in the environment: the default case is not the default')
    assert step_faults('system') > 0.5 * PAGES_PER_STEP  # glibc's defaults: fresh pages every step


def test_parse_cpu_allocator():
    assert parse_cpu_allocator(None) == 'cache'
    assert parse_cpu_allocator('system') == 'system'
    with pytest.raises(OptionError, match="train:cpu_allocator: expected cache or system, got 'jemalloc'"):
        parse_cpu_allocator('jemalloc')
