"""A seeded fuzzer of option trees and command lines, run in-process through ``converse_plugin.cli.main``.

Every shipped option file (options/train, options/test, options/demo, options/compare) is made tiny (its
data replaced by a few synthetic images and kernels, networks and budgets shrunk) and then mutated:
a key deleted, its value replaced (None, strings, negative and huge numbers, lists, mappings, booleans,
paths that do not exist, a regular file, a folder), retyped or nested, at any depth. Each mutant must either
run (exit 0) or end with the one line ``basicsr <command>: error: ...`` naming the option file, with exit
code 2 (3 for NaN/Inf): never an exception escaping ``main()`` (a traceback), never a hang, never a ``.tmp``
file or an unloadable ``.pth`` left behind.

Replay: ``CONVERSE_FUZZ_SEED=<seed>`` (printed in every failure) selects the seed.
"""
from __future__ import annotations

import contextlib
import copy
import glob
import io
import logging
import os
import random
import shutil
import signal
import traceback
from dataclasses import dataclass, field
from os import path as osp
from typing import Any

import yaml

from converse_plugin import cli

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
OPTIONS = osp.join(REPO, 'options')
DEFAULT_SEED = 20240517


def seed() -> int:
    return int(os.environ.get('CONVERSE_FUZZ_SEED', DEFAULT_SEED))


def option_files(kind: str) -> list[str]:
    return sorted(glob.glob(osp.join(OPTIONS, kind, '*.yml')))


# ------------------------------------------------------------------------------------------- tiny data

def make_data(root: str) -> dict[str, str]:
    """Synthetic data: a folder of 48x48 RGB PNGs, its bicubic x2, x3 and x4 LQ folders (same names: the
    paired-folder files' dataroot_lq), a kernel .npy, a regular file and an empty folder."""
    import cv2

    from tests.e2e.helpers import make_images, make_kernel

    os.makedirs(root, exist_ok=True)
    data = {'images': make_images(osp.join(root, 'images'), n=2, size=48),
            'kernel': make_kernel(osp.join(root, 'kernel.npy')),
            'file': osp.join(root, 'regular_file.txt'),
            'empty': osp.join(root, 'empty_dir')}
    for scale in (2, 3, 4):
        folder = data[f'lq_x{scale}'] = osp.join(root, f'lq_x{scale}')
        os.makedirs(folder, exist_ok=True)
        for name in sorted(os.listdir(data['images'])):
            img = cv2.imread(osp.join(data['images'], name))
            lq = cv2.resize(img, (48 // scale, 48 // scale), interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(osp.join(folder, name), lq)
    with open(data['file'], 'w', encoding='utf-8') as f:
        f.write('not an image, not a checkpoint\n')
    os.makedirs(data['empty'], exist_ok=True)
    return data


_SHRINK = {'num_feat': 8, 'num_block': 1, 'num_iter': 1, 'num_group': 1, 'embed_dim': 12, 'depths': [1],
           'num_heads': [2], 'squeeze_factor': 4, 'img_size': 16, 'window_size': 4}


def _shrink_net(net: dict) -> None:
    for key, value in _SHRINK.items():
        if key in net:
            net[key] = copy.deepcopy(value)
    if isinstance(net.get('network'), dict):
        _shrink_net(net['network'])


def tiny(opt: dict, data: dict[str, str]) -> dict:
    """``opt`` with synthetic data and budgets that run in about a second on one CPU thread."""
    opt = copy.deepcopy(opt)
    if 'num_gpu' in opt:
        opt['num_gpu'] = 0
    scale = opt.get('scale', 1)
    for ds in (opt.get('datasets') or {}).values():
        for key in ('dataroot_gt', 'dataroot_lq'):
            if key in ds:
                ds[key] = data['images']
        if 'dataroot_lq' in ds and f'lq_x{scale}' in data:  # paired folders: LQ = GT / scale
            ds['dataroot_lq'] = data[f'lq_x{scale}']
        if ds.get('meta_info_file') is not None:  # every pair of the folders
            ds['meta_info_file'] = None
        if 'kernels' in ds:
            ds['kernels'] = data['kernel']
        if 'num_worker_per_gpu' in ds:
            ds.update(num_worker_per_gpu=0, batch_size_per_gpu=2, dataset_enlarge_ratio=1)
        if 'gt_size' in ds:
            ds['gt_size'] = 32 - 32 % scale  # a multiple of the scale (x3: 30), as paired crops need
    for key in [k for k in opt if str(k).startswith('network_')]:
        _shrink_net(opt[key])
    if isinstance(opt.get('path'), dict):
        for key in list(opt['path']):
            if key.startswith('pretrain_network'):
                opt['path'][key] = None
    if isinstance(opt.get('train'), dict):
        opt['train']['total_iter'] = 2
        if opt['train'].get('perceptual_opt'):  # its VGG19 would be downloaded: no network in tests
            opt['train']['perceptual_opt'] = None
    if isinstance(opt.get('val'), dict):
        if 'val_freq' in opt['val']:
            opt['val']['val_freq'] = 2
        opt['val']['save_img'] = False
    if isinstance(opt.get('logger'), dict):
        opt['logger'].update(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False)
        opt['logger'].pop('wandb', None)
    return opt


def load_tiny(path: str, data: dict[str, str]) -> dict:
    with open(path, encoding='utf-8') as f:
        return tiny(yaml.safe_load(f), data)


# ------------------------------------------------------------------------------------------- mutations

def _paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in ``tree`` (mappings by key, lists by index)."""
    out = []
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        out.append(prefix + (key, ))
        out += _paths(value, prefix + (key, ))
    return out


def _values(data: dict[str, str]) -> list[Any]:
    return [None, '', 'garbage', 'x' * 300, -1, 0, 1, -7.5, 0.5, 10 ** 9, 2 ** 63, 1e30, float('inf'),
            float('nan'), True, False, [], [1, 'a'], [None], {}, {'a': 1}, {'type': None},
            '/nonexistent/path/x.pth', data['file'], data['empty'], data['images'], 'ConverseDnCNN',
            'L1Loss', 'Adam', 'rgb', 'circular']


def _retype(value: Any) -> Any:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    return 'None'


@dataclass
class Mutant:
    base: str  # option file the mutant came from
    opt: dict
    changes: list[str] = field(default_factory=list)
    keys: list[tuple] = field(default_factory=list)


def mutate(base: str, opt: dict, rng: random.Random, data: dict[str, str], n_changes: int = 1) -> Mutant:
    """``opt`` with ``n_changes`` random deletions / replacements / retypings / nestings / insertions."""
    opt = copy.deepcopy(opt)
    mutant = Mutant(osp.relpath(base, REPO), opt)
    for _ in range(n_changes):
        paths = _paths(opt)
        if not paths:
            break
        path = rng.choice(paths)
        parent = opt
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        how = rng.choice(['delete', 'replace', 'replace', 'replace', 'retype', 'nest', 'insert'])
        where = ':'.join(map(str, path))
        if how == 'delete':
            if isinstance(parent, dict):
                del parent[key]
            else:
                parent.pop(key)
            mutant.changes.append(f'delete {where}')
        elif how == 'replace':
            value = copy.deepcopy(rng.choice(_values(data)))
            parent[key] = value
            mutant.changes.append(f'{where} = {value!r}')
        elif how == 'retype':
            parent[key] = _retype(parent[key])
            mutant.changes.append(f'{where} retyped to {parent[key]!r}')
        elif how == 'nest':
            parent[key] = rng.choice([{'value': parent[key]}, [parent[key]]])
            mutant.changes.append(f'{where} nested to {parent[key]!r}')
        else:
            if isinstance(parent, dict):
                new = rng.choice(['unknown_key', 'type', 'scale', 'name'])
                value = copy.deepcopy(rng.choice(_values(data)))
                parent[new] = value
                where = ':'.join(map(str, path[:-1] + (new, )))
                mutant.changes.append(f'insert {where} = {value!r}')
                path = path[:-1] + (new, )
            else:
                parent.append(copy.deepcopy(rng.choice(_values(data))))
                mutant.changes.append(f'append to {":".join(map(str, path[:-1]))}')
        mutant.keys.append(path)
    return mutant


# ------------------------------------------------------------------------------------------- running

class Hang(BaseException):
    """The mutant ran past its time bound."""


@dataclass
class Outcome:
    code: int | None
    stderr: str
    stdout: str
    escaped: str | None  # the traceback of an exception that escaped main()
    hung: bool = False


def _reset_basicsr_logger() -> None:
    from basicsr.utils import logger as basicsr_logger

    log = logging.getLogger('basicsr')
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    basicsr_logger.initialized_logger.pop('basicsr', None)


def _alarm(signum, frame):  # noqa: ARG001
    raise Hang()


def run_cli(argv: list[str], bound_s: float = 60) -> Outcome:
    """``basicsr ARGV`` in this process, stdout and stderr captured, within ``bound_s`` seconds."""
    _reset_basicsr_logger()
    out, err = io.StringIO(), io.StringIO()
    escaped, code, hung = None, None, False
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, bound_s)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Hang:
        hung = True
    except BaseException:  # noqa: BLE001 (anything escaping main() is what the fuzzer looks for)
        escaped = traceback.format_exc()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        _reset_basicsr_logger()
    return Outcome(code, err.getvalue(), out.getvalue(), escaped, hung)


def leftovers(root: str) -> list[str]:
    """Half-written outputs under ``root``: ``.tmp`` files and ``.pth``/``.state`` files that do not load."""
    import torch

    bad = []
    for folder, _, files in os.walk(root):
        for name in files:
            file = osp.join(folder, name)
            if '.tmp' in name or name.endswith(('.part', '~')):
                bad.append(f'{file} (temporary file left)')
            elif name.endswith(('.pth', '.state')):
                try:
                    torch.load(file, map_location='cpu', weights_only=True)
                except Exception as err:  # noqa: BLE001
                    bad.append(f'{file} (does not load: {type(err).__name__}: {err})')
    return bad


def error_message(stderr: str, command: str) -> str | None:
    """The error the command printed: from its last ``basicsr <command>: error:`` line to the end."""
    lines = stderr.splitlines()
    import re
    pattern = re.compile(rf'^basicsr {re.escape(command)}( [\w-]+)?: error: ')  # 'basicsr zoo download: error:'
    starts = [i for i, line in enumerate(lines) if pattern.match(line)]
    return '\n'.join(lines[starts[-1]:]) if starts else None


def check(outcome: Outcome, command: str, what: str, must_name: list[str] | None = None,
          allow_hang: bool = False, root: str | None = None) -> str | None:
    """None when the outcome is acceptable, else why not (with ``what``, the replay description)."""
    head = f'[seed {seed()}] {what}\n'
    if outcome.escaped:
        return head + f'an exception escaped main() (a traceback for the user):\n{outcome.escaped[-3000:]}'
    if outcome.hung:
        return None if allow_hang else head + 'ran past its time bound (hang)'
    text = outcome.stderr + outcome.stdout
    if 'Traceback (most recent call last)' in text:
        return head + f'a traceback was printed:\n{text[-3000:]}'
    if root is not None:
        bad = leftovers(root)
        if bad:
            return head + 'half-written outputs: ' + '; '.join(bad)
    if outcome.code == 0:
        return None
    if outcome.code not in (2, 3):
        return head + f'exit code {outcome.code}, expected 0, 2 or 3:\n{text[-2000:]}'
    message = error_message(outcome.stderr, command)
    if message is None:
        return head + f'stderr has no line starting with basicsr {command}: error:\n{outcome.stderr[-2000:]}'
    if 'frame #' in message:
        return head + f'the error quotes C++ stack frames:\n{message[-2000:]}'
    for needle in must_name or ():
        if needle not in message:
            return head + f'the error does not name {needle!r}: {message}'
    return None
