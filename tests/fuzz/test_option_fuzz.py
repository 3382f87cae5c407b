"""Fuzz every shipped option file: no mutant ends in a traceback, a hang or a half-written file.

Fast tier: about 200 mutants (``FAST``); slow tier: 2,000 (``SLOW``). ``CONVERSE_FUZZ_SEED`` replays a seed.
"""
from __future__ import annotations

import pytest

from tests.fuzz import harness as hz
from tests.fuzz import runner

FAST = 200
SLOW = 2000


@pytest.mark.parametrize('base,command', runner.bases(), ids=lambda v: str(v).rsplit('/', 1)[-1])
def test_tiny_base_runs(base, command, tmp_path):
    """Every shipped option file, made tiny, runs: the mutants start from working trees."""
    data = hz.make_data(str(tmp_path / 'data'))
    mutant = hz.Mutant(base, hz.load_tiny(base, data))
    assert runner.run_one(mutant, command, str(tmp_path), data, 0) is None
    option_file = runner.write(str(tmp_path / 'b' / 'x.yml'), mutant.opt)
    outcome = hz.run_cli(runner.argv_for(command, option_file, str(tmp_path / 'b'), str(tmp_path), data))
    assert outcome.code == 0, outcome.stderr[-2000:]


def _report(n: int, failures: list[str]) -> str:
    return (f'{len(failures)} of {n} mutants failed (replay: CONVERSE_FUZZ_SEED={hz.seed()}):\n\n'
            + '\n\n'.join(failures))


def test_option_mutants_fast(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative folders a mutant names (path: entries) land here
    n, failures = runner.fuzz(FAST, str(tmp_path), hz.seed())
    assert not failures, _report(n, failures)


@pytest.mark.slow
def test_option_mutants_slow(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    n, failures = runner.fuzz(SLOW, str(tmp_path), hz.seed() + 1, max_changes=3)
    assert not failures, _report(n, failures)
