"""The plugin's model base class: checkpoint policy and device placement for any BasicSR model.

:class:`PluginModel` is a mixin put before a BasicSR model class (``class ConverseModel(PluginModel,
SRModel)``). The plugin's training and test loops (:mod:`converse_plugin.engine`) build every model
through :func:`plugin_model_class`, which mixes :class:`PluginModel` into BasicSR's own classes too
(``SRModel``, ``SRGANModel``, ``RealESRGANModel``, another plugin's model), for that run only: nothing
of BasicSR is patched for the process. What it guarantees:

- **atomic saves**: ``save_network`` and ``save_training_state`` write through
  :func:`converse_plugin.io.checkpoint.atomic_save` (temporary file, fsync, rename), with BasicSR's three
  tries; a process killed while saving leaves the previous files intact;
- **exact resume**: :meth:`PluginModel.save` takes the loop's position (``progress``) explicitly and
  stores it in the ``.state`` file, with ``extra_training_state()`` (e.g. a GradScaler);
- **safe, checked loading**: ``load_network`` loads with ``weights_only=True`` (``.pth``) or from
  ``.safetensors``, picks the entry by the one key rule, and reports every missing, unexpected or
  mis-shaped key in one :class:`~converse_plugin.errors.CheckpointError`;
- ``path: save_format: safetensors`` also writes each saved network as ``.safetensors``;
- **DistributedDataParallel on the CPU**: device ids are passed only for a CUDA model;
- ``train: ema_warmup: true``: the EMA decay ramps up (:func:`ema_decay_at`), so that validations on the
  EMA weights are meaningful from the start.
"""
from __future__ import annotations

import os
import time
from typing import Any

import torch
from torch import nn

from converse_plugin.io.checkpoint import (atomic_save, check_state_dict, load_network_params, save_state_dict_file,
                                           strip_module_prefix)
from converse_plugin.errors import OptionError

__all__ = ['PluginModel', 'plugin_model_class', 'SAVE_FORMATS', 'ema_decay_at', 'parse_ema_warmup']

SAVE_FORMATS = ('pth', 'safetensors')
_SAVE_TRIES = 3  # BasicSR's


def _logger():
    from basicsr.utils import get_root_logger
    return get_root_logger()


class PluginModel:
    """Checkpoint policy and device placement (see the module docstring); put it first in the bases."""

    ema_step = 0  # training iteration of the coming EMA update (set by optimize_parameters)

    def __init__(self, opt: dict, *args, **kwargs) -> None:
        # read once (option errors before any work); BasicSR's __init__ already calls model_ema
        self.ema_warmup = parse_ema_warmup((opt.get('train') or {}).get('ema_warmup', False))
        self.opt = opt
        self.save_format()
        super().__init__(opt, *args, **kwargs)

    def _is_master(self) -> bool:
        return int(self.opt.get('rank', 0)) == 0

    # ------------------------------------------------------------------ EMA
    def optimize_parameters(self, current_iter: int) -> None:
        self.ema_step = current_iter
        super().optimize_parameters(current_iter)

    def model_ema(self, decay: float = 0.999) -> None:
        """BasicSR's EMA update, with the decay of :func:`ema_decay_at` under ``train: ema_warmup: true``."""
        super().model_ema(ema_decay_at(decay, self.ema_step, self.ema_warmup) if decay > 0 else decay)

    # ------------------------------------------------------------------ saving
    def save(self, epoch: int, current_iter: int, progress: dict | None = None) -> None:
        """Save every network (``net_g`` with ``net_g_ema`` as ``params``/``params_ema``, and each other
        ``net_<x>``, e.g. a GAN's ``net_d``) and the training state, with the loop position ``progress``.
        ``current_iter`` -1 saves ``*_latest.pth`` and no training state (BasicSR's convention)."""
        for label, nets, keys in self.networks_to_save():
            self.save_network(nets, label, current_iter, param_key=keys)
        self.save_training_state(epoch, current_iter, progress=progress)

    def networks_to_save(self) -> list[tuple[str, Any, Any]]:
        """``(label, net or [nets], param_key or [keys])`` per saved file, as BasicSR's models save them."""
        saved = []
        for name, net in vars(self).items():
            if not name.startswith('net_') or name.endswith('_ema') or not isinstance(net, nn.Module):
                continue
            ema = getattr(self, f'{name}_ema', None)
            if isinstance(ema, nn.Module):
                saved.append((name, [net, ema], ['params', 'params_ema']))
            else:
                saved.append((name, net, 'params'))
        return saved

    def save_network(self, net, net_label: str, current_iter: int, param_key='params') -> None:
        """``<models>/<net_label>_<iter|latest>.pth`` (rank 0 only, atomically): ``{param_key: state dict}``
        per network, parameters on the CPU, no ``module.`` prefix; plus ``.safetensors`` with
        ``path: save_format: safetensors`` (the EMA weights when kept)."""
        if not self._is_master():
            return
        label = 'latest' if current_iter == -1 else current_iter
        nets = net if isinstance(net, list) else [net]
        keys = param_key if isinstance(param_key, list) else [param_key]
        if len(nets) != len(keys):
            raise ValueError(f'save_network: {len(nets)} networks but {len(keys)} param keys')
        state = {key: {k: v.cpu() for k, v in strip_module_prefix(self.get_bare_model(n).state_dict()).items()}
                 for n, key in zip(nets, keys)}
        path = os.path.join(self.opt['path']['models'], f'{net_label}_{label}.pth')
        self._save_with_retries(lambda: atomic_save(state, path), path, 'model')
        if self.save_format() == 'safetensors':
            key = 'params_ema' if 'params_ema' in state else keys[0]
            path = os.path.join(self.opt['path']['models'], f'{net_label}_{label}.safetensors')
            arch = (self.opt.get(f'network_{net_label[len("net_"):]}') or {}).get('type', '')
            self._save_with_retries(lambda: save_state_dict_file(
                state[key], path, metadata={'param_key': key, 'arch': str(arch)}), path, 'model')

    def save_format(self) -> str:
        value = (self.opt.get('path') or {}).get('save_format') or 'pth'
        if value not in SAVE_FORMATS:
            raise OptionError(f"path:save_format: expected one of {', '.join(SAVE_FORMATS)}, got {value!r}")
        return value

    def extra_training_state(self) -> dict:
        """Entries the model adds to its ``.state`` files (e.g. TrainingSpeedMixin's GradScaler), if any."""
        parent = getattr(super(), 'extra_training_state', None)
        return parent() if callable(parent) else {}

    def save_training_state(self, epoch: int, current_iter: int, progress: dict | None = None) -> None:
        """``<training_states>/<iter>.state`` (rank 0 only, atomically): epoch, iter, optimizers,
        schedulers, ``progress`` (the loop position, for an exact resume) and ``extra_training_state()``."""
        if current_iter == -1 or not self._is_master():
            return
        state = {'epoch': epoch, 'iter': current_iter, 'optimizers': [o.state_dict() for o in self.optimizers],
                 'schedulers': [s.state_dict() for s in self.schedulers]}
        if progress is not None:
            state['progress'] = progress
        state.update(self.extra_training_state())
        path = os.path.join(self.opt['path']['training_states'], f'{current_iter}.state')
        self._save_with_retries(lambda: atomic_save(state, path), path, 'training state')

    @staticmethod
    def _save_with_retries(save, path: str, what: str) -> None:
        """BasicSR's three tries, each atomic; a final failure is logged (as BasicSR does), not raised."""
        for remaining in range(_SAVE_TRIES - 1, -1, -1):
            try:
                save()
                return
            except Exception as err:  # noqa: BLE001 (BasicSR's behaviour: a failed save must not end training)
                _logger().warning(f'Save {what} error: {err}, remaining retry times: {remaining}')
                if remaining:
                    time.sleep(1)
        _logger().warning(f'Still cannot save {path}. Just ignore it.')

    # ------------------------------------------------------------------ loading
    def load_network(self, net, load_path: str, strict: bool = True, param_key='params') -> None:
        """Load ``load_path`` into ``net`` safely; with ``strict`` every mismatch is one CheckpointError,
        without it BasicSR's warnings (mismatched shapes skipped)."""
        net = self.get_bare_model(net)
        params, used_key = load_network_params(str(load_path), param_key)
        if used_key != param_key and param_key is not None and used_key is not None:
            _logger().info(f'Loading: {param_key} does not exist, use {used_key}.')
        _logger().info(f'Loading {net.__class__.__name__} model from {load_path}, with param key: [{used_key}].')
        for line in check_state_dict(net.__class__.__name__, net.state_dict(), params, str(load_path), strict):
            _logger().warning(line)
        net.load_state_dict(params, strict=strict)

    # ------------------------------------------------------------------ devices
    def model_to_device(self, net: nn.Module) -> nn.Module:
        """Move ``net`` to ``self.device``; wrap it in DistributedDataParallel (distributed runs; device ids
        only for a CUDA model, so it also runs on CPUs with gloo) or DataParallel (several GPUs, one process)."""
        net = net.to(self.device)
        if self.opt['dist']:
            device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
            net = nn.parallel.DistributedDataParallel(
                net, device_ids=device_ids, find_unused_parameters=self.opt.get('find_unused_parameters', False))
        elif self.opt['num_gpu'] > 1:
            net = nn.DataParallel(net)
        return net


def parse_ema_warmup(value) -> bool:
    """``train: ema_warmup``: true or false (default false). Raises OptionError for anything else."""
    if value is None or isinstance(value, bool):
        return bool(value)
    raise OptionError(f'train:ema_warmup: expected true or false, got {value!r}')


def ema_decay_at(decay: float, step: int, warmup: bool) -> float:
    """The EMA decay used at training iteration ``step`` (1, 2, ...).

    Without warm-up: ``decay``. With warm-up (``train: ema_warmup: true``, as timm's ``ModelEmaV3`` and
    traiNNer-redux do): ``min(decay, (1 + step) / (10 + step))``, so the EMA follows the network closely
    while it changes fast: 0.18 at iteration 1, 0.9 at 80, 0.97 at 300, ``decay`` (0.999) from about
    iteration 9,000. Without it, with ``ema_decay: 0.999`` the EMA weights after 300 iterations are still
    74% the initialisation (0.999^300), which is what early validations then measure.
    """
    if not warmup:
        return decay
    return min(decay, (1.0 + step) / (10.0 + step))


_MIXED: dict[type, type] = {}


def plugin_model_class(cls: type) -> type:
    """``cls`` itself when it already is a :class:`PluginModel`, else a subclass ``(PluginModel, cls)`` with
    the same name (cached), so that the checkpoint policy applies to BasicSR's and other plugins' models."""
    if issubclass(cls, PluginModel):
        return cls
    if cls not in _MIXED:
        _MIXED[cls] = type(cls.__name__, (PluginModel, cls), {'__module__': cls.__module__,
                                                              '__doc__': cls.__doc__})
    return _MIXED[cls]
