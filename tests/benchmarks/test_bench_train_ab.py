"""The turn-by-turn A/B benchmark (benchmarks/bench_train_ab.py): side parsing and a real two-worker run."""
import subprocess
import sys
from os import path as osp

import pytest

from benchmarks import bench_train_ab as ab

SCRIPT = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'benchmarks', 'bench_train_ab.py')


def test_parse_side_reads_mode_and_options():
    assert ab.parse_side('compile') == {'mode': 'compile', 'adam': 'auto', 'allocator': 'cache', 'ftz': 'on',
                                        'source': None}
    assert ab.parse_side('eager, adam=default, allocator=system, ftz=off, source=/tmp/x') == {
        'mode': 'eager', 'adam': 'default', 'allocator': 'system', 'ftz': 'off', 'source': '/tmp/x'}


@pytest.mark.parametrize('text, message', [
    ('fast', "the mode must be one of"),
    ('eager,adam=slow', "adam must be one of"),
    ('eager,threads=2', "'threads=2' is not one of adam=..., allocator=..., ftz=..., source=..."),
    ('eager,ftz=yes', "ftz must be one of"),
    ('eager,default', "'default' is not one of"),
])
def test_parse_side_names_what_is_wrong(text, message):
    with pytest.raises(SystemExit, match=message):
        ab.parse_side(text)


def test_two_workers_take_turns_and_report_both_sides():
    """DnCNN's eager step with two Adam variants, tiny: both sides timed, the ratio printed."""
    run = subprocess.run([sys.executable, SCRIPT, '--recipe', 'dncnn_baseline', '--a', 'eager,adam=default,ftz=off',
                          '--b', 'eager,adam=fused', '--steps', '2', '--warmup', '1', '--batch', '1', '--size', '8'],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert '| A | eager,adam=default,ftz=off |' in run.stdout and '| B | eager,adam=fused |' in run.stdout
    assert 'median of the per-pair ratios' in run.stdout


def test_a_missing_side_is_a_usage_error():
    run = subprocess.run([sys.executable, SCRIPT, '--a', 'eager'], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and '--a and --b are both required' in run.stderr
