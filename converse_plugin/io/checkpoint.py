"""Checkpoint I/O that loses nothing and runs no code: the plugin's one module for network and training
state files (``.pth``, ``.state``, ``.safetensors``).

- :func:`atomic_write` / :func:`atomic_save`: the one atomic writer (temporary file, fsync, rename).
- :func:`select_params`: the one rule for ``params`` / ``params_ema`` / plain state dicts;
  :func:`strip_module_prefix`: the one ``module.`` stripper; :func:`check_state_dict`: the one mismatch
  report.

- :func:`atomic_save` writes ``torch.save(obj)`` to a temporary file in the target folder, flushes and
  fsyncs it, then renames it over the target (``os.replace`` is atomic on POSIX and Windows). A process
  killed while saving leaves the previous file intact and, at worst, a ``.<name>.<pid>.tmp`` file.
- :func:`load_checkpoint` reads with ``torch.load(weights_only=True)``: tensors, numbers, strings and
  containers only, never arbitrary Python objects. Every failure is a :class:`CheckpointError` that names
  the file: missing, truncated or not a checkpoint, or needing arbitrary unpickling (with the command that
  converts a trusted file).
- :func:`state_dict_mismatch` lists missing, unexpected and shape-mismatched keys in one message.
- :func:`find_resume_state` picks the newest *complete* ``<iter>.state`` of a folder, skipping (with a
  warning) states that do not load.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from collections.abc import Callable, Mapping
from os import path as osp
from typing import Any

import torch

from converse_plugin.errors import CheckpointError, CheckpointNotFoundError, first_line

__all__ = ['atomic_write', 'atomic_save', 'load_checkpoint', 'load_training_state', 'load_network_params',
           'load_state_dict_file', 'select_params', 'strip_module_prefix', 'save_state_dict_file', 'is_safetensors',
           'read_safetensors_metadata', 'state_dict_mismatch', 'mismatch_message', 'check_state_dict',
           'find_resume_state', 'training_states', 'PARAM_KEYS', 'SLOW_SAVE_ENV', 'SAFETENSORS_SUFFIX']

# BasicSR's entries of a network checkpoint, in the order the automatic rule prefers them
PARAM_KEYS = ('params_ema', 'params')
MODULE_PREFIX = 'module.'
SAFETENSORS_SUFFIX = '.safetensors'

# Test hook (unset in normal use): when a saved file's name contains this variable's value, the save writes
# half of the bytes, prints a marker line to stderr and pauses for a minute, so that a test can kill the
# process in the middle of writing a checkpoint, deterministically.
SLOW_SAVE_ENV = 'CONVERSE_TEST_SLOW_SAVE'


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> None:
    """Write a file atomically: the file at ``path`` is either the old one or the complete new one.

    ``write(f)`` writes the bytes to ``f``, an open binary file ``<dir>/.<name>.<pid>.tmp`` in the same
    folder (so the rename never crosses file systems); it is flushed and fsynced, then renamed to ``path``.
    This is the plugin's one atomic writer: checkpoints, training states, safetensors files, downloads.
    """
    folder, name = osp.split(osp.abspath(str(path)))
    os.makedirs(folder, exist_ok=True)
    tmp = osp.join(folder, f'.{name}.{os.getpid()}.tmp')
    try:
        with open(tmp, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` through :func:`atomic_write`."""
    name = osp.basename(str(path))

    def write(f) -> None:
        pause_on = os.environ.get(SLOW_SAVE_ENV)
        if pause_on and pause_on in name:
            _slow_write(obj, f, 60.0)
        else:
            torch.save(obj, f)

    atomic_write(path, write)


def _slow_write(obj: Any, f, delay: float) -> None:
    """Write half of the serialised bytes, print a marker, sleep ``delay`` s, write the rest (tests only)."""
    import io
    import sys
    import time

    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    f.write(data[:len(data) // 2])
    f.flush()
    print(f'[converse-test] half-written {f.name}', file=sys.stderr, flush=True)
    time.sleep(delay)
    f.write(data[len(data) // 2:])


_CONVERT_HINT = (
    "If you trust the file, convert it once to a plain checkpoint:\n"
    "  python -c \"import torch; c = torch.load('{path}', map_location='cpu', weights_only=False); "
    "torch.save(c.state_dict() if hasattr(c, 'state_dict') else c, '{stem}_weights.pth')\"\n"
    "and use {stem}_weights.pth (a plain dict of tensors) instead.")


def load_checkpoint(path: str, what: str = 'checkpoint', map_location: Any = 'cpu') -> Any:
    """``torch.load(path, weights_only=True)`` with errors a user can act on.

    Args:
        path: the file.
        what: how the message calls it (``checkpoint``, ``training state``, ``path:pretrain_network_g``).
        map_location: as for :func:`torch.load`.

    Raises:
        CheckpointNotFoundError: ``path`` does not exist.
        CheckpointError: the file is empty, truncated or not a PyTorch checkpoint, or it holds Python
            objects that only arbitrary unpickling could rebuild (refused; the message says how to convert).
    """
    if not osp.isfile(path):
        where = 'is a folder, not a file' if osp.isdir(path) else 'does not exist'
        raise CheckpointNotFoundError(f'{what} {path} {where}')
    if osp.getsize(path) == 0:
        raise CheckpointError(f'{what} {path} is empty (0 bytes): a save was interrupted or the copy failed')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        if 'Weights only load failed' in text or 'weights_only' in text:
            found = re.search(r'(?:Unsupported global|GLOBAL|global):? ?(?:GLOBAL )?([\w.]+)', text)
            detail = f' (it contains {found.group(1)})' if found else ''
            stem = osp.splitext(path)[0]
            raise CheckpointError(
                f'{what} {path} holds Python objects that only arbitrary unpickling can rebuild{detail}; '
                'it is refused because unpickling can run code. '
                + _CONVERT_HINT.format(path=path, stem=stem)) from None
        raise CheckpointError(f'{what} {path} is not a PyTorch checkpoint or is corrupt ({_short(err)})') from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, UnicodeDecodeError, KeyError,
            IndexError, TypeError, AttributeError, ImportError) as err:
        size = osp.getsize(path)
        raise CheckpointError(f'{what} {path} ({size} bytes) is truncated or not a PyTorch checkpoint '
                              f'({_short(err)})') from None


def _short(err: BaseException) -> str:
    first = first_line(err)
    return f'{type(err).__name__}: {first}' if first else type(err).__name__


def load_training_state(path: str, map_location: Any = 'cpu') -> dict:
    """A BasicSR training state (``<iter>.state``), loaded safely and checked for its keys."""
    state = load_checkpoint(path, 'training state', map_location)
    if not isinstance(state, Mapping) or not all(k in state for k in ('epoch', 'iter', 'optimizers', 'schedulers')):
        keys = ', '.join(map(str, state)) if isinstance(state, Mapping) else type(state).__name__
        raise CheckpointError(f'training state {path} is not a BasicSR training state: expected the keys epoch, '
                              f'iter, optimizers, schedulers, found {keys}')
    return dict(state)


def strip_module_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """``state_dict`` without the ``module.`` prefix that DataParallel / DistributedDataParallel add."""
    return {(k[len(MODULE_PREFIX):] if k.startswith(MODULE_PREFIX) else k): v for k, v in state_dict.items()}


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def select_params(loaded: Any, param_key: str | None, path: str) -> tuple[dict, str | None]:
    """The one rule that picks a network's state dict out of a loaded checkpoint.

    - ``param_key`` given (BasicSR's ``path:param_key_g``, default ``params``): that entry; when it is
      absent but ``params`` exists, ``params`` (as BasicSR 1.4.2 does for ``params_ema``).
    - ``param_key`` None (``param_key_g: ~``, and every tool that takes "a checkpoint"): the file itself
      when it is a plain state dict, else ``params_ema`` when present (the EMA weights are the ones to
      evaluate), else ``params``.

    Returns ``(state dict without 'module.' prefixes, the entry used or None)``.

    Raises:
        CheckpointError: no such entry, or the entry is not a dict of tensors (the message names ``path``
            and what was found).
    """
    used: str | None = param_key
    if param_key is None:
        if not _is_state_dict(loaded) and isinstance(loaded, Mapping):
            used = next((k for k in PARAM_KEYS if isinstance(loaded.get(k), Mapping)), None)
    else:
        if not isinstance(loaded, Mapping):
            raise CheckpointError(f'checkpoint {path} is a {type(loaded).__name__}, not a dict with a '
                                  f'{param_key!r} entry')
        if param_key not in loaded and 'params' in loaded:
            used = 'params'
        if used not in loaded:
            hint = ('it is a plain state dict: set path:param_key_g to ~' if _is_state_dict(loaded) else
                    f"its entries are: {', '.join(map(str, loaded)) or 'none'}")
            raise CheckpointError(f'checkpoint {path} has no {param_key!r} entry; {hint}')
    params = loaded if used is None else loaded[used]
    if not _is_state_dict(params):
        found = type(params).__name__
        if isinstance(params, Mapping):
            found += f" with entries {', '.join(map(str, params)) or 'none'}"
        raise CheckpointError(f'checkpoint {path}: expected a state dict (names -> tensors), got {found}')
    return strip_module_prefix(params), used


def load_network_params(path: str, param_key: str | None = 'params',
                        map_location: Any = 'cpu') -> tuple[dict, str | None]:
    """The state dict of a network checkpoint, ``.pth`` (loaded with ``weights_only=True``) or
    ``.safetensors`` (a plain state dict; loading runs no code), chosen by :func:`select_params`.

    Raises:
        CheckpointNotFoundError, CheckpointError: see :func:`load_checkpoint` and :func:`select_params`.
    """
    path = str(path)
    if is_safetensors(path):
        return strip_module_prefix(_load_safetensors(path, map_location)), None
    return select_params(load_checkpoint(path, map_location=map_location), param_key, path)


def load_state_dict_file(path: str | os.PathLike, param_key: str | None = None,
                         map_location: Any = 'cpu') -> dict[str, torch.Tensor]:
    """Just the state dict of :func:`load_network_params` (default: the automatic key rule)."""
    return load_network_params(str(path), param_key, map_location)[0]


def _load_safetensors(path: str, map_location: Any) -> dict[str, torch.Tensor]:
    if not osp.isfile(path):
        where = 'is a folder, not a file' if osp.isdir(path) else 'does not exist'
        raise CheckpointNotFoundError(f'checkpoint {path} {where}')
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError:
        raise CheckpointError(f'checkpoint {path}: reading .safetensors files needs the safetensors package '
                              "(pip install 'converse-plugin[export]' or pip install safetensors)") from None
    try:
        return load_file(path, device=str(map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f'checkpoint {path} is not a valid safetensors file ({err})') from None


def is_safetensors(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(SAFETENSORS_SUFFIX)


def save_state_dict_file(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike,
                         metadata: Mapping[str, Any] | None = None) -> None:
    """Write one network's ``state_dict`` to ``path`` atomically: safetensors for a ``.safetensors``
    suffix (``metadata`` stored as strings, other values as JSON), else ``torch.save`` of the plain dict.
    Tensors are moved to the CPU and made contiguous; ``module.`` prefixes removed."""
    sd = {k: v.detach().cpu().contiguous().clone() for k, v in strip_module_prefix(state_dict).items()}
    if not is_safetensors(path):
        atomic_save(sd, path)
        return
    from safetensors.torch import save as to_bytes
    meta = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    data = to_bytes(sd, metadata=meta or None)
    atomic_write(path, lambda f: f.write(data))


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata map of a safetensors file ({} when it has none)."""
    from safetensors import safe_open
    with safe_open(str(path), framework='pt') as f:
        return dict(f.metadata() or {})


def check_state_dict(net_name: str, expected: Mapping[str, torch.Tensor], params: dict, path: str,
                     strict: bool = True, hint: str = '') -> list[str]:
    """Compare ``params`` with a network's ``state_dict()``: the one mismatch report.

    With ``strict``, any difference raises :class:`CheckpointError` listing all of them. Without, the
    shape-mismatched entries are removed from ``params`` (BasicSR's ``strict_load: false``) and one warning
    line per difference is returned.
    """
    diff = state_dict_mismatch(expected, params)
    if strict and any(diff.values()):
        raise CheckpointError(mismatch_message(path, net_name, diff, hint=hint))
    warnings = [f'Key not loaded (strict_load false): {key}' for key in diff['missing'] + diff['unexpected']]
    for key, got, want in diff['mismatched']:
        warnings.append(f'Size different, ignore [{key}]: crt_net: {want}; load_net: {got}')
        params.pop(key)
    return warnings


def state_dict_mismatch(expected: Mapping[str, torch.Tensor], loaded: Mapping[str, Any]) -> dict[str, list]:
    """Differences between a network's ``state_dict()`` and a loaded one.

    Returns:
        ``{'missing': [...], 'unexpected': [...], 'mismatched': [(key, loaded_shape, expected_shape)]}``
        (each sorted; all empty when they match).
    """
    missing = sorted(set(expected) - set(loaded))
    unexpected = sorted(set(loaded) - set(expected))
    mismatched = []
    for key in sorted(set(expected) & set(loaded)):
        value = loaded[key]
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        if shape != tuple(expected[key].shape):
            mismatched.append((key, shape, tuple(expected[key].shape)))
    return {'missing': missing, 'unexpected': unexpected, 'mismatched': mismatched}


def mismatch_message(path: str, net_name: str, diff: dict[str, list], limit: int = 20, hint: str = '') -> str:
    """One message listing the missing, unexpected and mismatched keys of :func:`state_dict_mismatch`."""

    def listed(items: list) -> str:
        text = ', '.join(map(str, items[:limit]))
        return text + (f', ... ({len(items) - limit} more)' if len(items) > limit else '')

    parts = []
    if diff['missing']:
        parts.append(f"missing keys ({len(diff['missing'])}): {listed(diff['missing'])}")
    if diff['unexpected']:
        parts.append(f"unexpected keys ({len(diff['unexpected'])}): {listed(diff['unexpected'])}")
    if diff['mismatched']:
        shapes = [f'{k} (checkpoint {list(a) if isinstance(a, tuple) else a}, network {list(b)})'
                  for k, a, b in diff['mismatched']]
        parts.append(f"mismatched shapes ({len(shapes)}): {listed(shapes)}")
    return (f'checkpoint {path} does not match the network {net_name}: ' + '; '.join(parts)
            + '. ' + (hint or 'Check network_g (type and sizes) and path:param_key_g against the checkpoint.'))


def _iteration(name: str) -> int | None:
    stem = name[:-len('.state')] if name.endswith('.state') else None
    return int(stem) if stem is not None and stem.isdigit() else None


def training_states(folder: str) -> list[str]:
    """The training states ``<iter>.state`` in ``folder``, newest (highest iteration) first; temporary files of
    interrupted saves are not among them. Written atomically, each one is complete."""
    if not osp.isdir(folder):
        return []
    states = sorted(((it, name) for name in os.listdir(folder) if (it := _iteration(name)) is not None), reverse=True)
    return [osp.join(folder, name) for _, name in states]


def find_resume_state(folder: str, warn: Callable[[str], None], map_location: Any = 'cpu') -> tuple[str, dict] | None:
    """The newest complete training state ``<iter>.state`` in ``folder``, loaded, or None.

    States are tried from the highest iteration down; one that does not load (truncated, corrupt, not a
    training state) is skipped with ``warn(message)`` naming it. Temporary files of interrupted saves
    (``.<name>.<pid>.tmp``) are ignored.
    """
    for path in training_states(folder):
        try:
            return path, load_training_state(path, map_location)
        except CheckpointError as err:
            warn(f'auto_resume: skipping {path}: {err}')
    return None
