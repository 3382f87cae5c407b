"""Running mutants of the shipped option files through the CLI (shared by the fast and slow tiers)."""
from __future__ import annotations

import os
import random
import shutil
from os import path as osp

import yaml

from tests.fuzz import harness as hz

# (option folder, command) for every shipped option file
KINDS = [('train', 'train'), ('demo', 'train'), ('test', 'test'), ('compare', 'compare')]
# keys whose large values legitimately mean a long run: a mutant of them may use up its time bound
BUDGET_KEYS = {'total_iter'}


def bases() -> list[tuple[str, str]]:
    return [(path, command) for kind, command in KINDS for path in hz.option_files(kind)]


def compare_model(tmp: str, data: dict[str, str]) -> str:
    """A tiny test option file whose model fits the compare option file's (RGB deblurring) test sets."""
    path = osp.join(tmp, 'compare_model.yml')
    if not osp.isfile(path):
        opt = hz.load_tiny(osp.join(hz.OPTIONS, 'test', 'test_ConverseNet_B100_deblur5.yml'), data)
        write(path, opt)
    return path


def write(path: str, opt: dict) -> str:
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(opt, f, sort_keys=False, allow_unicode=True)
    return path


def argv_for(command: str, option_file: str, root: str, tmp: str, data: dict[str, str]) -> list[str]:
    if command == 'compare':
        return ['compare', '--models', compare_model(tmp, data), '--datasets', option_file, '--out',
                osp.join(root, 'out'), '--no-lpips', '--input-size', '1xCx16x16', '--repeat', '1', '--cpu']
    return [command, '-opt', option_file, '--root', root]


def run_one(mutant: hz.Mutant, command: str, tmp: str, data: dict[str, str], index: int,
            bound_s: float = 60) -> str | None:
    """Run ``mutant``; None when it behaved, else the failure (with the replay description)."""
    root = osp.join(tmp, f'm{index}')
    option_file = write(osp.join(root, osp.basename(mutant.base)), mutant.opt)
    what = f'mutant {index} of {mutant.base} ({command}): ' + '; '.join(mutant.changes)
    outcome = hz.run_cli(argv_for(command, option_file, root, tmp, data), bound_s)
    allow_hang = any(str(k[-1]) in BUDGET_KEYS for k in mutant.keys)
    problem = hz.check(outcome, command, what, [osp.basename(option_file)] if command != 'compare' else None,
                       allow_hang=allow_hang, root=root)
    if problem is None and outcome.code in (2, 3) and mutant.keys:
        message = hz.error_message(outcome.stderr, command)
        names = {str(part) for key in mutant.keys for part in key}
        if not any(name in message for name in names):
            problem = f'[seed {hz.seed()}] {what}\nthe error names none of the changed keys {sorted(names)}: {message}'
    shutil.rmtree(root, ignore_errors=True)
    return problem


def fuzz(n: int, tmp: str, seed: int, max_changes: int = 2, stop_after: int = 20) -> tuple[int, list[str]]:
    """``n`` mutants spread over every shipped option file; returns (mutants run, failures)."""
    data = hz.make_data(osp.join(tmp, 'data'))
    rng = random.Random(seed)
    trees = [(path, command, hz.load_tiny(path, data)) for path, command in bases()]
    failures: list[str] = []
    for i in range(n):
        path, command, opt = trees[i % len(trees)]
        mutant = hz.mutate(path, opt, rng, data, n_changes=rng.randint(1, max_changes))
        problem = run_one(mutant, command, tmp, data, i)
        if problem:
            failures.append(problem)
            if len(failures) >= stop_after:
                return i + 1, failures
    return n, failures
