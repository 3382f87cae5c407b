"""train: flush_denormal (converse_plugin.engine.denormals): the CPU treats denormals as zero during training."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from converse_plugin.engine import denormals
from converse_plugin.engine.denormals import (denormals_flushed, parse_flush_denormal, preserved_denormal_mode,
                                              setup_flush_denormal)
from converse_plugin.errors import OptionError

needs_ftz = pytest.mark.skipif(not torch.set_flush_denormal(False), reason='this CPU has no flush-to-zero mode')


def test_parse_flush_denormal():
    assert parse_flush_denormal(None) is True
    assert parse_flush_denormal(False) is False and parse_flush_denormal(True) is True
    for bad in ('yes', 1, 'false'):
        with pytest.raises(OptionError, match=f'train:flush_denormal: expected true or false, got {bad!r}'):
            parse_flush_denormal(bad)


@needs_ftz
def test_preserved_mode_comes_back_and_the_probe_sees_it():
    before = denormals_flushed()
    with preserved_denormal_mode():
        torch.set_flush_denormal(not before)
        assert denormals_flushed() is (not before)
        tiny = torch.full((4,), 713_624, dtype=torch.int32).view(torch.float32)  # float32 denormals, as bits
        assert bool((tiny * 3).view(torch.int32).eq(0).all()) is (not before)
    assert denormals_flushed() is before


class _Log:
    def __init__(self):
        self.info_lines, self.warnings = [], []

    def info(self, line):
        self.info_lines.append(line)

    def warning(self, line):
        self.warnings.append(line)


@needs_ftz
def test_setup_flushes_unless_turned_off():
    log = _Log()
    with preserved_denormal_mode():
        torch.set_flush_denormal(False)
        assert not setup_flush_denormal({'flush_denormal': False}, log)
        assert not denormals_flushed() and not log.info_lines
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one thread: the probe sees every thread that computes
        try:
            assert setup_flush_denormal(None, log)  # the default
        finally:
            torch.set_num_threads(threads)
        assert denormals_flushed() and 'flush_denormal: false to turn off' in log.info_lines[-1]


def test_setup_names_a_cpu_without_the_mode(monkeypatch):
    monkeypatch.setattr(torch, 'set_flush_denormal', lambda on: False)
    log = _Log()
    assert not setup_flush_denormal({}, log)
    assert 'no flush-to-zero mode' in log.info_lines[-1]


THREADS = '''
import sys, torch
from types import SimpleNamespace
from converse_plugin.engine.denormals import flushing_threads, setup_flush_denormal
torch.set_num_threads(2)
if sys.argv[1] == 'late':
    torch.full((2**18,), 1.0).mul(2.0)  # a parallel operation starts the worker threads first
log = SimpleNamespace(info=lambda m: print('info', m), warning=lambda m: print('warning', m))
print('flushed', setup_flush_denormal({}, log))
print('threads', *flushing_threads())
'''


@needs_ftz
@pytest.mark.parametrize('when', ['early', 'late'])
def test_worker_threads_take_the_mode_when_they_start_after_it(when):
    """Threads inherit the mode when they are created: set before the first parallel operation, every thread
    flushes; set after it, the worker that already ran does not, and the setup warns."""
    out = subprocess.run([sys.executable, '-c', THREADS, when], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    if when == 'early':
        assert 'flushed True' in lines and 'threads 2 2' in lines, lines
    else:
        assert 'flushed False' in lines and 'threads 1 2' in lines, lines
        assert any(l.startswith('warning train:flush_denormal: 1 of 2 CPU threads still compute denormals')
                   for l in lines), lines


def test_probe_counts_each_threads_share(monkeypatch):
    """flushing_threads reads one chunk per thread: a result whose second of three chunks is 0 counts one
    flushing thread of three."""
    monkeypatch.setattr(torch, 'get_num_threads', lambda: 3)
    bits = torch.full((3, denormals._CHUNK), 713_624, dtype=torch.int32)
    bits[1] = 0
    bits[2, :5] = 0  # a chunk counts only where all of it is 0
    monkeypatch.setattr(denormals, '_denormal_products', lambda numel: bits.flatten()[:numel])
    assert denormals.flushing_threads() == (1, 3)


def test_the_default_follows_the_files_types():
    """BasicSR's own files keep BasicSR's arithmetic; files with the plugin's models or networks flush."""
    import converse_plugin  # noqa: F401 (registrations)
    from converse_plugin.registries import uses_plugin_types

    basicsr_file = {'model_type': 'SRModel', 'network_g': {'type': 'MSRResNet'}, 'network_d': {'type': 'VGGStyleDiscriminator'}}
    assert not uses_plugin_types(basicsr_file)
    assert uses_plugin_types({**basicsr_file, 'model_type': 'ConverseModel'})
    assert uses_plugin_types({**basicsr_file, 'network_g': {'type': 'ConverseConverted'}})
    assert uses_plugin_types({'model_type': 'SRModel', 'network_g': {'type': 'ConverseDnCNN'}})
    assert not uses_plugin_types({'model_type': 'NoSuchModel', 'network_g': {'type': 'NoSuchNet'}})
    assert parse_flush_denormal(None, default=False) is False and parse_flush_denormal(True, default=False) is True
