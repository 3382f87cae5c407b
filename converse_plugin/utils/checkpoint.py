"""Checkpoint I/O that loses nothing and runs no code: atomic saves, safe loads, clear mismatch reports.

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

import os
import pickle
import re
import zipfile
from collections.abc import Callable, Mapping
from os import path as osp
from typing import Any

import torch

from converse_plugin.utils.errors import CheckpointError, CheckpointNotFoundError

__all__ = ['atomic_save', 'load_checkpoint', 'load_training_state', 'load_network_params', 'state_dict_mismatch',
           'mismatch_message', 'find_resume_state', 'SLOW_SAVE_ENV']

# Test hook (unset in normal use): when a saved file's name contains this variable's value, the save writes
# half of the bytes, prints a marker line to stderr and pauses for a minute, so that a test can kill the
# process in the middle of writing a checkpoint, deterministically.
SLOW_SAVE_ENV = 'CONVERSE_TEST_SLOW_SAVE'


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save(obj, path)``, atomically: the file at ``path`` is either the old one or the new one.

    The bytes go to ``<dir>/.<name>.<pid>.tmp`` first (same folder, so the rename never crosses file
    systems), are flushed and fsynced, and the temporary file is then renamed to ``path``.
    """
    folder, name = osp.split(osp.abspath(path))
    tmp = osp.join(folder, f'.{name}.{os.getpid()}.tmp')
    try:
        with open(tmp, 'wb') as f:
            pause_on = os.environ.get(SLOW_SAVE_ENV)
            if pause_on and pause_on in name:
                _slow_write(obj, f, 60.0)
            else:
                torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


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
    first = str(err).strip().splitlines()[0] if str(err).strip() else ''
    return f'{type(err).__name__}: {first}' if first else type(err).__name__


def load_training_state(path: str, map_location: Any = 'cpu') -> dict:
    """A BasicSR training state (``<iter>.state``), loaded safely and checked for its keys."""
    state = load_checkpoint(path, 'training state', map_location)
    if not isinstance(state, Mapping) or not all(k in state for k in ('epoch', 'iter', 'optimizers', 'schedulers')):
        keys = ', '.join(map(str, state)) if isinstance(state, Mapping) else type(state).__name__
        raise CheckpointError(f'training state {path} is not a BasicSR training state: expected the keys epoch, '
                              f'iter, optimizers, schedulers, found {keys}')
    return dict(state)


def load_network_params(path: str, param_key: str | None = 'params') -> tuple[dict, str | None]:
    """The state dict of a network checkpoint: entry ``param_key`` (BasicSR's ``params``/``params_ema``;
    ``params`` when ``params_ema`` is absent, as BasicSR does), or the whole file for ``param_key`` None;
    ``module.`` prefixes removed. Returns ``(state_dict, key used)``.

    Raises:
        CheckpointNotFoundError, CheckpointError: see :func:`load_checkpoint`; or no such entry, or the
            entry is not a dict of tensors.
    """
    loaded = load_checkpoint(path)
    used = param_key
    if param_key is not None:
        if not isinstance(loaded, Mapping):
            raise CheckpointError(f'checkpoint {path} is a {type(loaded).__name__}, not a dict with a {param_key!r} entry')
        if param_key not in loaded and 'params' in loaded:
            used = 'params'
        if used not in loaded:
            tensors = all(isinstance(v, torch.Tensor) for v in loaded.values())
            hint = ('it is a plain state dict: set path:param_key_g to ~' if tensors and loaded else
                    f"its entries are: {', '.join(map(str, loaded)) or 'none'}")
            raise CheckpointError(f'checkpoint {path} has no {param_key!r} entry; {hint}')
        loaded = loaded[used]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(f'checkpoint {path}: expected a dict of tensors (a state dict), got '
                              f'{type(loaded).__name__}' + (f' with entries {", ".join(map(str, loaded))}'
                                                            if isinstance(loaded, Mapping) else ''))
    return {(k[7:] if k.startswith('module.') else k): v for k, v in loaded.items()}, used


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


def mismatch_message(path: str, net_name: str, diff: dict[str, list], limit: int = 20) -> str:
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
            + '. Check network_g (type and sizes) and path:param_key_g against the checkpoint.')


def _iteration(name: str) -> int | None:
    stem = name[:-len('.state')] if name.endswith('.state') else None
    return int(stem) if stem is not None and stem.isdigit() else None


def find_resume_state(folder: str, warn: Callable[[str], None], map_location: Any = 'cpu') -> tuple[str, dict] | None:
    """The newest complete training state ``<iter>.state`` in ``folder``, loaded, or None.

    States are tried from the highest iteration down; one that does not load (truncated, corrupt, not a
    training state) is skipped with ``warn(message)`` naming it. Temporary files of interrupted saves
    (``.<name>.<pid>.tmp``) are ignored.
    """
    if not osp.isdir(folder):
        return None
    states = sorted(((it, name) for name in os.listdir(folder) if (it := _iteration(name)) is not None),
                    reverse=True)
    for _, name in states:
        path = osp.join(folder, name)
        try:
            return path, load_training_state(path, map_location)
        except CheckpointError as err:
            warn(f'auto_resume: skipping {path}: {err}')
    return None
