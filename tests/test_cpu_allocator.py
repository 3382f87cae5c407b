"""cpu_allocator (converse_plugin.engine.allocator): glibc keeps freed memory of every size for the next step
or image (train:cpu_allocator, val:cpu_allocator for basicsr test, basicsr infer --cpu-allocator)."""
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
mib, count = int(sys.argv[2]), int(sys.argv[3])
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def step():  # like a training step or one image: activations of mib..3*mib MiB, then all freed
    tensors = [torch.ones(2**18 * mib * (1 + i % 3)) for i in range(count)]
    del tensors
step()
before = faults()
for _ in range(4):
    step()
print((faults() - before) / 4)
'''
# (MiB, tensors): activations under glibc's largest mmap threshold (32 MiB), and above it (a 64-channel
# feature map at 512 x 512 is 64 MiB: what basicsr test and infer allocate for a Set12 image or a tile)
SIZES = [(4, 20), (40, 6)]


def step_faults(allocator: str, mib: int, count: int) -> float:
    out = subprocess.run([sys.executable, '-c', STEP_FAULTS, allocator, str(mib), str(count)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return float(out.stdout.strip())


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='cpu_allocator cache acts on glibc only')
@pytest.mark.parametrize('mib, count', SIZES)
def test_cache_keeps_freed_memory_for_the_next_step(mib, count):
    pages_per_step = count * 2 * mib * 2**20 // 4096  # the mean tensor is 2 * mib MiB
    cached = step_faults('cache', mib, count)
    # measured: 0.4% (4 MiB), 2-6% (40 MiB: now and then small allocations split the freed space and a large
    # block moves once to fresh pages)
    assert cached < 0.15 * pages_per_step, cached
    if any(k.startswith('MALLOC_') or k == 'GLIBC_TUNABLES' for k in os.environ):
        pytest.skip('glibc allocator settings in the environment: the default case is not the default')
    # glibc's defaults: fresh pages for much of every step (92% and 100% measured; its mmap threshold adapts up to
    # 32 MiB, and larger blocks are always mapped afresh)
    system = step_faults('system', mib, count)
    assert system > 0.1 * pages_per_step and system > 10 * cached, (system, cached)


def test_parse_cpu_allocator():
    assert parse_cpu_allocator(None) == 'cache'
    assert parse_cpu_allocator('system') == 'system'
    with pytest.raises(OptionError, match="train:cpu_allocator: expected cache or system, got 'jemalloc'"):
        parse_cpu_allocator('jemalloc')
    with pytest.raises(OptionError, match="val:cpu_allocator: expected cache or system, got 1"):
        parse_cpu_allocator(1, 'val:cpu_allocator')


def test_setup_applies_cache_on_the_cpu_only(monkeypatch):
    import torch
    calls, lines = [], []
    monkeypatch.setattr(allocator, 'cache_freed_memory', lambda: calls.append(1) or True)
    assert allocator.setup_cpu_allocator(None, 'val:cpu_allocator', torch.device('cpu'), lines.append)  # default
    assert calls == [1] and lines == ['val:cpu_allocator cache: freed memory stays in the process for the next '
                                      'step or image (val:cpu_allocator system to turn it off)']
    assert not allocator.setup_cpu_allocator('system', 'train:cpu_allocator', torch.device('cpu'), lines.append)
    assert not allocator.setup_cpu_allocator('cache', 'train:cpu_allocator', torch.device('cuda'), lines.append)
    assert calls == [1] and len(lines) == 1
    with pytest.raises(OptionError, match='--cpu-allocator: expected cache or system'):
        allocator.setup_cpu_allocator('tc', '--cpu-allocator', torch.device('cpu'), lines.append)
    monkeypatch.setattr(allocator, 'cache_freed_memory', lambda: False)  # not glibc
    assert not allocator.setup_cpu_allocator(None, 'train:cpu_allocator', torch.device('cpu'), lines.append)
    assert 'not glibc' in lines[-1]


@pytest.mark.parametrize('value, cached', [(None, True), ('system', False)])
def test_basicsr_test_sets_it_up_on_the_cpu(tmp_path, monkeypatch, value, cached):
    """``basicsr test`` (in process, the real mallopt replaced by a recorder): val:cpu_allocator, default cache."""
    import glob

    from tests.robustness.common import make_images, options, run, write_options
    calls = []
    monkeypatch.setattr(allocator, 'cache_freed_memory', lambda: calls.append(1) or True)
    opt = options(make_images(str(tmp_path / 'images'), n=1), train=None, logger=None)
    opt['datasets'] = {'test': opt['datasets']['val']}
    if value is not None:
        opt['val']['cpu_allocator'] = value
    write_options(str(tmp_path / 'opt.yml'), opt)
    assert run('test', str(tmp_path / 'opt.yml'), str(tmp_path / 'root')) == 0
    assert calls == ([1] if cached else [])
    log = ''.join(open(f, encoding='utf-8').read() for f in glob.glob(str(tmp_path / 'root/results/*/*.log')))
    assert ('val:cpu_allocator cache: freed memory stays in the process' in log) == cached, log[-2000:]


@pytest.mark.parametrize('flag, cached', [([], True), (['--cpu-allocator', 'system'], False)])
def test_basicsr_infer_sets_it_up_on_the_cpu(tmp_path, monkeypatch, flag, cached):
    import cv2
    import numpy as np

    from converse_plugin.archs import ConverseDnCNN
    from converse_plugin.cli import infer
    from converse_plugin.io.checkpoint import save_state_dict_file
    calls = []
    monkeypatch.setattr(allocator, 'cache_freed_memory', lambda: calls.append(1) or True)
    save_state_dict_file(ConverseDnCNN(num_feat=4, num_block=1, kernel_size=3, padding=2).state_dict(),
                         tmp_path / 'net.pth')
    cv2.imwrite(str(tmp_path / 'x.png'), np.full((16, 16), 128, np.uint8))
    assert infer.main(['--model', str(tmp_path / 'net.pth'), '--arch', 'ConverseDnCNN', '--arch-kwargs',
                       '{"num_feat": 4, "num_block": 1, "kernel_size": 3, "padding": 2}', '-i', str(tmp_path / 'x.png'),
                       '-o', str(tmp_path / 'out'), '--device', 'cpu', *flag]) == 0
    assert calls == ([1] if cached else []) and (tmp_path / 'out' / 'x.png').exists()
