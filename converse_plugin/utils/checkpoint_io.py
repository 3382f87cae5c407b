"""Network weights as ``.pth`` or ``.safetensors``, chosen by the file's suffix.

safetensors files hold a flat ``name -> tensor`` map and no code, so loading one can never run anything;
they are what model hubs prefer. :func:`save_state_dict_file` writes a plain state dict (one network)
in either format; :func:`load_state_dict_file` reads one back, whatever the format. For ``.pth`` files it
also accepts BasicSR's ``{'params': ..., 'params_ema': ...}`` layout and picks ``param_key`` (default:
``params_ema`` when present, else ``params``). A safetensors file written here records the key it came
from in its metadata (``param_key``), and the architecture, if given (``arch``, ``arch_kwargs`` as JSON).
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from os import path as osp
from typing import Any

import torch

from converse_plugin.utils.errors import CheckpointError, CheckpointNotFoundError

__all__ = ['SAFETENSORS_SUFFIX', 'is_safetensors', 'load_state_dict_file', 'save_state_dict_file',
           'read_safetensors_metadata']

SAFETENSORS_SUFFIX = '.safetensors'


def is_safetensors(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(SAFETENSORS_SUFFIX)


def _strip_module(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {(k[7:] if k.startswith('module.') else k): v for k, v in sd.items()}


def load_state_dict_file(path: str | os.PathLike, param_key: str | None = None,
                         map_location: str | torch.device = 'cpu') -> dict[str, torch.Tensor]:
    """The state dict stored in ``path`` (``.safetensors`` or a torch checkpoint), ``module.`` prefixes removed.

    Args:
        path: the file.
        param_key: for BasicSR checkpoints ``{'params': sd, 'params_ema': sd}``, the entry to use
            (default: ``params_ema`` if present, else ``params``); ignored for plain state dicts and
            safetensors files.
        map_location: device for the tensors.

    Raises:
        CheckpointNotFoundError (a FileNotFoundError): no such file.
        CheckpointError (a ValueError): the file is not a state dict (message names the file and what was found).
    """
    path = str(path)
    if not osp.isfile(path):
        raise CheckpointNotFoundError(f'checkpoint {path} does not exist')
    if is_safetensors(path):
        try:
            from safetensors import SafetensorError
            from safetensors.torch import load_file
        except ImportError:
            raise CheckpointError(f'checkpoint {path}: reading .safetensors files needs the safetensors package '
                                  "(pip install 'converse-plugin[export]' or pip install safetensors)") from None
        try:
            return _strip_module(load_file(path, device=str(map_location)))
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f'checkpoint {path} is not a valid safetensors file ({err})') from None
    try:
        from converse_plugin.utils.checkpoint import load_checkpoint  # safe load, clear errors
        loaded = load_checkpoint(path, map_location=map_location)
    except ImportError:  # pragma: no cover - the checkpoint helpers ship with the plugin
        loaded = torch.load(path, map_location=map_location, weights_only=True)
    if isinstance(loaded, Mapping) and not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        keys = [param_key] if param_key else ['params_ema', 'params']
        for key in keys:
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
        else:
            raise CheckpointError(f'checkpoint {path} has no {" or ".join(map(repr, keys))} entry with a state dict; '
                             f'its entries are: {", ".join(map(str, loaded)) or "none"}')
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(f'checkpoint {path}: expected a state dict (names -> tensors), got {type(loaded).__name__}')
    return _strip_module(loaded)


def save_state_dict_file(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike,
                         metadata: Mapping[str, Any] | None = None) -> None:
    """Write ``state_dict`` to ``path``: safetensors for a ``.safetensors`` suffix, else ``torch.save``.

    Tensors are moved to the CPU and made contiguous (safetensors requires it; shared storage is copied).
    ``metadata`` (safetensors only; a ``.pth`` stays a plain state dict) is stored as strings, non-string
    values as JSON. The file is written to a temporary name and renamed, so an
    interrupted save never leaves a truncated file at ``path``.
    """
    path = str(path)
    sd = {k: v.detach().cpu().contiguous().clone() for k, v in _strip_module(state_dict).items()}
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = osp.join(folder, f'.{osp.basename(path)}.{os.getpid()}.tmp')
    try:
        if is_safetensors(path):
            from safetensors.torch import save_file
            meta = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
            save_file(sd, tmp, metadata=meta or None)
        else:
            torch.save(sd, tmp)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata map of a safetensors file ({} when it has none)."""
    from safetensors import safe_open
    with safe_open(str(path), framework='pt') as f:
        return dict(f.metadata() or {})
