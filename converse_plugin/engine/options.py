"""Safe option parsing for ``basicsr train`` / ``basicsr test`` (the plugin's pipelines).

BasicSR 1.4.2's :func:`basicsr.utils.options.parse_options` reads the YAML file with a full
(``yaml.Loader``/``CLoader``) loader, which constructs arbitrary Python objects from ``!!python/...``
tags, and applies ``--force_yml`` by building a Python statement and ``exec``-ing it. This module is a
drop-in replacement with the same command line and the same resulting ``opt`` dict, minus both:

- :func:`load_options` reads YAML with a safe loader (mappings in file order, as ``OrderedDict``) and
  rejects ``!!python/...`` tags, duplicate keys and syntax errors with an :class:`OptionError` that
  names the file and line;
- :func:`apply_force_yml` walks ``key:key:...=value`` paths in the dict and parses the value with
  ``yaml.safe_load``; a key that does not exist is an error that names it.

It also adds ``--root DIR`` (where ``experiments/``, ``results/`` and ``tb_logger/`` go; default: the
``root_path`` the pipeline was given), ``--import MODULE`` (load another BasicSR plugin, e.g.
``realesrgan``, before the options are checked) and torch 2's spelling ``--local-rank``.
"""
from __future__ import annotations

import argparse
import random
import re
import sys
from collections import OrderedDict
from collections.abc import Sequence
from os import path as osp
from typing import Any

import torch
import yaml

from converse_plugin.errors import OptionError  # a user error; the message names the file or key

__all__ = ['OptionError', 'build_parser', 'load_options', 'parse_force_yml_value', 'apply_force_yml',
           'resolve_root', 'parse_options', 'import_plugins', 'copy_option_file']

_SafeBase = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)
_MAX_NAME_BYTES = 255  # NAME_MAX of common file systems (ext4, XFS, APFS, NTFS)


def _name_bytes(name: str) -> int:
    """Length of a file or folder name as the file system counts it (UTF-8 bytes)."""
    return len(name.encode('utf-8', 'surrogatepass'))


class _OrderedSafeLoader(_SafeBase):  # type: ignore[misc, valid-type]
    """yaml's safe loader, building mappings as OrderedDict and refusing duplicate keys."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> OrderedDict:
    loader.flatten_mapping(node)
    mapping: OrderedDict = OrderedDict()
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                'while constructing a mapping', node.start_mark, f'found duplicate key {key!r}', key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_OrderedSafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

# Keys BasicSR's pipelines read unconditionally: missing ones would otherwise surface as a KeyError deep
# inside basicsr.train / basicsr.test.
_REQUIRED_KEYS = ('name', 'num_gpu', 'datasets', 'path')
_REQUIRED_TRAIN_KEYS = ('train', 'logger')
_REQUIRED_TEST_KEYS = ('val', )


def load_options(path: str) -> OrderedDict:
    """Read a BasicSR option file safely; mappings keep the file's order.

    Raises:
        OptionError: the file is missing, is not valid YAML, uses a ``!!python/...`` (or other unknown)
            tag, repeats a key, or is not a mapping at the top level. The message names the file.
    """
    try:
        with open(path, encoding='utf-8') as f:
            opt = yaml.load(f, Loader=_OrderedSafeLoader)  # noqa: S506 (the loader is a SafeLoader)
    except FileNotFoundError:
        raise OptionError(f'option file not found: {path}') from None
    except UnicodeDecodeError as err:
        raise OptionError(f'{path}: not a text (UTF-8) option file: {err.reason} at byte {err.start}') from None
    except OSError as err:  # a folder, no permission, ...
        raise OptionError(f'{path}: cannot read the option file: {err.strerror or err}') from None
    except yaml.constructor.ConstructorError as err:
        tag = ''
        if err.problem and 'python/' in err.problem:
            tag = (' Python object tags (!!python/...) are not allowed in option files: they would run '
                   'code while the file is read. Write plain values instead.')
        raise OptionError(f'{path}: {err.problem}{_where(err)}.{tag}') from None
    except yaml.MarkedYAMLError as err:
        context = f' {err.context}' if err.context else ''
        raise OptionError(f'{path}: not valid YAML{_where(err)}: {err.problem}{context and ","}{context}') from None
    except yaml.YAMLError as err:
        raise OptionError(f'{path}: not valid YAML: {err}') from None
    if not isinstance(opt, dict):
        raise OptionError(f'{path}: expected a mapping of options at the top level, got {type(opt).__name__}')
    return opt


def _where(err: yaml.MarkedYAMLError) -> str:
    mark = err.problem_mark
    return f' (line {mark.line + 1}, column {mark.column + 1})' if mark is not None else ''


_FLOAT_RE = re.compile(r'^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)$')


def parse_force_yml_value(text: str) -> Any:
    """Parse the value of a ``--force_yml key=value`` entry without eval: YAML's safe scalar and flow
    syntax (``0.999``, ``true``, ``~``, ``[1, 2]``, ``{a: 1}``, ``'text'``), plus BasicSR's ``none``
    for None, ``!!float 1e-4`` and bare exponent floats (``2e-4``, which YAML 1.1 reads as a string)."""
    text = text.strip()
    if text.lower() == 'none':
        return None
    try:
        value = yaml.load(text, Loader=_OrderedSafeLoader)  # noqa: S506 (safe loader)
    except yaml.YAMLError as err:
        raise OptionError(f'--force_yml value {text!r} is not valid YAML: {err}') from None
    if isinstance(value, str) and _FLOAT_RE.match(value):
        return float(value)
    return value


def apply_force_yml(opt: dict, entries: Sequence[str] | None, source: str = '--force_yml') -> None:
    """Apply ``key:key:...=value`` overrides to ``opt`` in place (BasicSR's ``--force_yml`` syntax).

    It only replaces existing keys, so that a typo never silently adds an option (BasicSR 1.4.2's comment says
    the same, but its ``exec`` also creates a missing last key).

    Raises:
        OptionError: an entry has no ``=``, or its key path does not exist; the message names the key.
    """
    for entry in entries or ():
        if '=' not in entry:
            raise OptionError(f'{source} entry {entry!r} must look like key:subkey=value')
        keys_text, value_text = entry.split('=', 1)
        keys = [k.strip() for k in keys_text.strip().split(':')]
        node: Any = opt
        for depth, key in enumerate(keys):
            where = ':'.join(keys[:depth]) or 'the top level'
            if not isinstance(node, dict):
                raise OptionError(f'{source} {keys_text!r}: {where} is a {type(node).__name__}, not a mapping')
            if key not in node:
                known = ', '.join(map(str, node)) or 'none'
                raise OptionError(f'{source} {keys_text!r}: key {key!r} not found under {where} '
                                  f'(keys there: {known}); --force_yml only replaces existing options')
            if depth == len(keys) - 1:
                node[key] = parse_force_yml_value(value_text)
            else:
                node = node[key]


def build_parser(is_train: bool = True, prog: str | None = None) -> argparse.ArgumentParser:
    """BasicSR's command line (``-opt``, ``--launcher``, ``--auto_resume``, ``--debug``, ``--local_rank``,
    ``--force_yml``) plus ``--local-rank`` (torch >= 2 launchers) and ``--root``."""
    what = 'train' if is_train else 'test'
    parser = argparse.ArgumentParser(prog=prog, description=f'{what} from a BasicSR option file')
    parser.add_argument('-opt', '--opt', dest='opt', type=str, required=True, help='path to the option YAML file')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none', help='job launcher')
    parser.add_argument('--auto_resume', action='store_true',
                        help='resume from the latest training state of this experiment, if any')
    parser.add_argument('--debug', action='store_true', help="prefix the name with 'debug_': log every iteration")
    parser.add_argument('--local_rank', '--local-rank', dest='local_rank', type=int, default=0,
                        help='set by torch.distributed.launch; torchrun uses the LOCAL_RANK variable instead')
    parser.add_argument('--force_yml', nargs='+', default=None, metavar='KEY:KEY=VALUE',
                        help='override options, e.g. train:ema_decay=0.999 datasets:train:dataroot_gt=/data')
    parser.add_argument('--root', type=str, default=None,
                        help='folder for experiments/, results/ and tb_logger/ (default: the current directory)')
    parser.add_argument('--import', dest='imports', action='append', default=[], metavar='MODULE',
                        help='import MODULE (another BasicSR plugin, e.g. realesrgan) before the options are '
                             'checked, so its registered types can be used; repeatable')
    return parser


def import_plugins(modules: Sequence[str], file: str = '') -> None:
    """Import each module of ``--import`` (and of the option file's top-level ``imports:`` list), so that
    the classes it registers in BasicSR's registries can be named in the option file.

    Raises:
        OptionError: a module cannot be imported (the message names it and the error).
    """
    import importlib

    for name in modules:
        if not isinstance(name, str) or not name.strip():
            raise OptionError(f'{file + ": " if file else ""}imports: expected module names, got {name!r}')
        try:
            importlib.import_module(name.strip())
        except Exception as err:  # noqa: BLE001 (any import failure of a user's plugin is reported, not raised)
            where = f'{file}: imports' if file else '--import'
            raise OptionError(f'{where}: cannot import {name!r} ({type(err).__name__}: {err}); '
                              'is the package installed in this environment?') from None


def copy_option_file(option_file: str, folder: str, command: str) -> None:
    """Copy the option file into ``folder`` with a header recording when and by which command it ran
    (what BasicSR's ``copy_opt_file`` writes, with the command given explicitly)."""
    import time

    with open(option_file, encoding='utf-8') as f:
        text = f.read()
    with open(osp.join(folder, osp.basename(option_file)), 'w', encoding='utf-8') as f:
        f.write(f'# GENERATOR TIME: {time.asctime()}\n# CMD:\n# {command}\n\n{text}')


def resolve_root(root_path: str, argv: Sequence[str] | None = None) -> str:
    """The absolute root folder: ``--root`` from ``argv`` (default ``sys.argv[1:]``) if given, else ``root_path``."""
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument('--root', type=str, default=None)
    known, _ = peek.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    return osp.abspath(osp.expanduser(known.root if known.root else root_path))


def _check_required(opt: dict, file: str, is_train: bool) -> None:
    required = _REQUIRED_KEYS + (_REQUIRED_TRAIN_KEYS if is_train else _REQUIRED_TEST_KEYS)
    missing = [key for key in required if key not in opt]
    if missing:
        raise OptionError(f'{file}: missing top-level option(s) {", ".join(missing)} '
                          f'(needed to {"train" if is_train else "test"})')
    for key in ('datasets', 'path'):
        if not isinstance(opt[key], dict):
            raise OptionError(f'{file}: {key} must be a mapping, got {type(opt[key]).__name__}')
    for phase, dataset in opt['datasets'].items():
        if not isinstance(dataset, dict):
            raise OptionError(f'{file}: datasets:{phase} must be a mapping, got {type(dataset).__name__}')
        if not isinstance(phase, str):
            raise OptionError(f'{file}: datasets: {phase!r} is not a phase name (train, val, val_1, test_1, ...)')
        for key in ('dataroot_gt', 'dataroot_lq'):
            if dataset.get(key) is not None and not (isinstance(dataset[key], str) and dataset[key]):
                raise OptionError(f'{file}: datasets:{phase}:{key} must be a folder path (a string), '
                                  f'got {dataset[key]!r}')
    if not isinstance(opt['name'], str) or not opt['name'].strip():
        raise OptionError(f"{file}: name must be a non-empty string (the experiment's folder name), "
                          f"got {opt['name']!r}")
    if '/' in opt['name'] or '\\' in opt['name'] or opt['name'].strip() in ('.', '..'):
        # BasicSR joins it under experiments/ or results/ and renames an existing folder of that path
        raise OptionError(f"{file}: name must be a plain folder name (no '/', '\\', '.' or '..'), got {opt['name']!r}")
    if _name_bytes(opt['name']) > _MAX_NAME_BYTES:
        raise OptionError(f"{file}: name is {_name_bytes(opt['name'])} bytes long; file systems "
                          f'allow at most {_MAX_NAME_BYTES} per folder name')
    for key, value in opt['path'].items():
        if value is None:
            continue
        if ('resume_state' in str(key) or 'pretrain_network' in str(key)) and not (isinstance(value, str) and value):
            raise OptionError(f'{file}: path:{key} must be a file path (a string) or ~, got {value!r}')
        if str(key).startswith('strict_load') and not isinstance(value, bool):
            raise OptionError(f'{file}: path:{key} must be true or false, got {value!r}')
        if str(key).startswith('param_key') and not isinstance(value, str):
            raise OptionError(f'{file}: path:{key} must be a key name (a string) or ~, got {value!r}')
    for key, value in opt['path'].items():
        parts = value.replace('\\', '/').split('/') if isinstance(value, str) else []
        longest = max(map(_name_bytes, parts), default=0)
        if longest > _MAX_NAME_BYTES:
            raise OptionError(f'{file}: path:{key}: a part of the path is {longest} '
                              f'bytes long; file systems allow at most {_MAX_NAME_BYTES} per name')
    for key, value in opt['path'].items():
        # BasicSR's make_exp_dirs makes a folder of every other path: entry
        if not any(word in str(key) for word in ('strict_load', 'pretrain_network', 'resume', 'param_key')) and \
                not (isinstance(value, str) and value):
            raise OptionError(f'{file}: path:{key} must be a folder path (a string), got {value!r}')
    seed = opt.get('manual_seed')
    if seed is not None and not (isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2 ** 32 - 2 ** 16):
        raise OptionError(f'{file}: manual_seed must be an integer in [0, {2 ** 32 - 2 ** 16}) or ~, got {seed!r}')


def parse_options(root_path: str, is_train: bool = True, argv: Sequence[str] | None = None):
    """Drop-in for :func:`basicsr.utils.options.parse_options`: returns ``(opt, args)``.

    Same steps and the same ``opt`` as BasicSR 1.4.2, but: safe YAML; ``--force_yml`` without exec and
    applied right after reading (so it can also change ``manual_seed``, ``num_gpu`` or ``dist_params``);
    output folders under ``--root`` if given; ``num_gpu`` > 0 without CUDA is an error instead of a crash
    later. ``argv`` defaults to ``sys.argv[1:]`` (BasicSR parses the process's command line).
    """
    from basicsr.utils import set_random_seed
    from basicsr.utils.dist_util import get_dist_info

    from converse_plugin.engine.dist import init_dist

    args = build_parser(is_train).parse_args(list(sys.argv[1:] if argv is None else argv))
    root_path = osp.abspath(osp.expanduser(args.root or root_path))

    opt = load_options(args.opt)
    apply_force_yml(opt, args.force_yml)
    imports = opt.get('imports') or []
    if isinstance(imports, str):
        imports = [imports]
    if not isinstance(imports, list):
        raise OptionError(f'{args.opt}: imports: expected a list of module names, got {imports!r}')
    import_plugins(args.imports)
    import_plugins(imports, args.opt)
    _check_required(opt, args.opt, is_train)
    from converse_plugin.zoo import resolve_zoo_paths  # pretrain_network_g: zoo:NAME -> verified file
    resolve_zoo_paths(opt, args.opt)

    # distributed settings
    if args.launcher == 'none':
        opt['dist'] = False
        print('Disable distributed.', flush=True)
    else:
        opt['dist'] = True
        dist_params = opt.get('dist_params') or {}
        if not isinstance(dist_params, dict):
            raise OptionError(f'{args.opt}: dist_params must be a mapping, got {dist_params!r}')
        timeout = dist_params.get('timeout')
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
            raise OptionError(f'{args.opt}: dist_params:timeout must be a number of seconds > 0, got {timeout!r}')
        init_dist(args.launcher, port=dist_params.get('port') if args.launcher == 'slurm' else None,
                  backend=dist_params.get('backend', 'nccl'), timeout=timeout)
    opt['rank'], opt['world_size'] = get_dist_info()

    # random seed
    seed = opt.get('manual_seed')
    if seed is None:
        seed = random.randint(1, 10000)
        opt['manual_seed'] = seed
    set_random_seed(seed + opt['rank'])

    opt['auto_resume'] = args.auto_resume
    opt['is_train'] = is_train

    if args.debug and not str(opt['name']).startswith('debug'):
        opt['name'] = 'debug_' + str(opt['name'])

    if opt['num_gpu'] == 'auto':
        opt['num_gpu'] = torch.cuda.device_count()
    elif not isinstance(opt['num_gpu'], int) or opt['num_gpu'] < 0:
        raise OptionError(f"{args.opt}: num_gpu must be 'auto' or an integer >= 0, got {opt['num_gpu']!r}")
    elif opt['num_gpu'] > 0 and not torch.cuda.is_available():
        raise OptionError(f"{args.opt}: num_gpu is {opt['num_gpu']} but no CUDA device is available; "
                          "use num_gpu: auto (or --force_yml num_gpu=0) to run on the CPU")

    for phase, dataset in opt['datasets'].items():
        # several datasets per phase are named val_1, val_2, test_1, ...
        dataset['phase'] = phase.split('_')[0]
        if 'scale' in opt:
            dataset['scale'] = opt['scale']
        for key in ('dataroot_gt', 'dataroot_lq'):
            if dataset.get(key) is not None:
                dataset[key] = osp.expanduser(dataset[key])

    for key, val in opt['path'].items():
        if (val is not None) and ('resume_state' in key or 'pretrain_network' in key):
            opt['path'][key] = osp.expanduser(val)

    if is_train:
        experiments_root = osp.join(root_path, 'experiments', opt['name'])
        opt['path']['experiments_root'] = experiments_root
        opt['path']['models'] = osp.join(experiments_root, 'models')
        opt['path']['training_states'] = osp.join(experiments_root, 'training_states')
        opt['path']['log'] = experiments_root
        opt['path']['visualization'] = osp.join(experiments_root, 'visualization')
        if 'debug' in opt['name']:
            if 'val' in opt:
                opt['val']['val_freq'] = 8
            opt['logger']['print_freq'] = 1
            opt['logger']['save_checkpoint_freq'] = 8
    else:
        results_root = osp.join(root_path, 'results', opt['name'])
        opt['path']['results_root'] = results_root
        opt['path']['log'] = results_root
        opt['path']['visualization'] = osp.join(results_root, 'visualization')
    opt['root_path'] = root_path
    return opt, args


