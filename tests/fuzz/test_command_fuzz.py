"""Fuzz every command's arguments: wrong paths and types, missing values, unreadable or truncated
files, folders where files are expected, outputs that cannot be written. Each case exits 0, with an argparse
usage error (exit 2), or with ``basicsr <command>: error: ...`` (exit 2): never a traceback."""
from __future__ import annotations

import os
import random
import stat

import pytest

from tests.fuzz import harness as hz

COMMANDS = ['train', 'test', 'demo', 'infer', 'export', 'compare', 'flops', 'zoo', 'lpips-weights']


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('cmdfuzz')
    data = hz.make_data(str(tmp / 'data'))
    truncated = tmp / 'truncated.pth'
    truncated.write_bytes(b'PK\x03\x04' + b'\x00' * 10)
    png = tmp / 'truncated.png'
    png.write_bytes(open(os.path.join(data['images'], 'img0.png'), 'rb').read()[:60])
    yml = tmp / 'bad.yml'
    yml.write_text('name: [unclosed\n', encoding='utf-8')
    readonly = tmp / 'readonly'
    readonly.mkdir()
    readonly.chmod(stat.S_IRUSR | stat.S_IXUSR)
    return {**data, 'truncated_pth': str(truncated), 'truncated_png': str(png), 'bad_yml': str(yml),
            'readonly': str(readonly / 'out'), 'under_file': os.path.join(data['file'], 'out'),
            'missing': str(tmp / 'missing' / 'x'), 'option': os.path.join(hz.OPTIONS, 'test',
                                                                           'test_ConverseDnCNN_Set12_sigma25.yml')}


def _values(f: dict) -> list[str]:
    return [f['missing'], f['file'], f['empty'], f['images'], f['truncated_pth'], f['truncated_png'], f['bad_yml'],
            f['readonly'], f['under_file'], f['kernel'], f['option'], '', '-1', '0', '1e9', 'abc', 'converse_dncnn',
            '1x1x8x8', 'nan']


FLAGS = {
    'train': ['-opt', '--force_yml', '--root', '--launcher'],
    'test': ['-opt', '--force_yml', '--root'],
    'demo': ['--root', '--opt', '--force_yml'],
    'infer': ['--model', '-i', '-o', '--sigma', '--kernel', '--kernel-index', '--scale', '--tile', '--tile-overlap',
              '--device', '--suffix'],
    'export': ['--model', '--format', '-o', '--opset', '--trace-size', '--check-sizes', '--atol', '--scale'],
    'compare': ['--models', '--datasets', '--out', '--zoo-dir', '--input-size', '--crops', '--crop-size',
                '--repeat'],
    'flops': ['-opt', '--arch', '--zoo', '--kwargs', '--input'],
    'zoo': ['list', 'verify', 'download'],
    'lpips-weights': ['--dir', '--sdist', '--net'],
}
# a valid-looking start for each command, so that mutants get past argparse's required arguments
START = {
    'infer': lambda f: ['--model', 'converse_dncnn', '-i', f['images'], '-o', f['missing'], '--device', 'cpu'],
    'export': lambda f: ['--model', f['option'], '-o', f['missing'] + '.onnx', '--no-check'],
    'compare': lambda f: ['--models', f['option'], '--no-lpips', '--repeat', '1', '--cpu', '--out', f['missing']],
    'flops': lambda f: ['--arch', 'ConverseDnCNN', '--input', '1x1x16x16'],
}


def _case(rng: random.Random, f: dict) -> tuple[str, list[str]]:
    command = rng.choice(COMMANDS)
    argv = list(START[command](f)) if command in START and rng.random() < 0.7 else []
    for _ in range(rng.randint(1, 3)):
        flag = rng.choice(FLAGS[command])
        argv += [flag] if rng.random() < 0.1 else [flag, rng.choice(_values(f))]  # sometimes a missing value
    return command, argv


def _fuzz(n: int, seed: int, files: dict) -> list[str]:
    rng = random.Random(seed)
    failures = []
    for i in range(n):
        command, argv = _case(rng, files)
        if command in ('train', 'demo') and '--root' not in argv:
            argv += ['--root', files['missing']]
        if command == 'demo':  # a tiny budget (the last --force_yml wins): the real demo trains for minutes
            argv += ['--force_yml', 'train:total_iter=2', 'val:val_freq=2', 'logger:save_checkpoint_freq=2',
                     'logger:print_freq=1']
        outcome = hz.run_cli([command, *argv], bound_s=60)
        problem = hz.check(outcome, command, f'case {i}: basicsr {command} {" ".join(argv)}')
        if problem and outcome.code == 1 and argv[:1] == ['verify'] and not outcome.escaped:
            problem = None  # zoo verify: exit 1 means some file is missing or does not match (a status)
        if problem and command == 'demo' and outcome.code == 1 and not outcome.escaped and \
                'the gain is below' in outcome.stderr:
            problem = None  # a 2-iteration demo does not learn: its exit status 1 says so
        if problem and outcome.code == 2 and 'usage:' in outcome.stderr:
            problem = None  # argparse's usage error
        if problem:
            failures.append(problem)
    return failures


def test_command_line_mutants_fast(files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative output paths land here
    failures = _fuzz(40, hz.seed(), files)
    assert not failures, f'{len(failures)} failures (CONVERSE_FUZZ_SEED={hz.seed()}):\n\n' + '\n\n'.join(failures)


@pytest.mark.slow
def test_command_line_mutants_slow(files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    failures = _fuzz(300, hz.seed() + 1, files)
    assert not failures, f'{len(failures)} failures (CONVERSE_FUZZ_SEED={hz.seed()}):\n\n' + '\n\n'.join(failures)
