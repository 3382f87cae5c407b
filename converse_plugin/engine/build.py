"""Build the run's model and its data loaders through BasicSR's registries and public functions."""
from __future__ import annotations

import warnings
from copy import deepcopy
from typing import Any

import torch

from converse_plugin.errors import UserError, construction_hint, first_line
from converse_plugin.models.base_model import plugin_model_class
from converse_plugin.registries import lookup

__all__ = ['build_model', 'make_prefetcher', 'ModelBuildError']


def build_model(opt: dict) -> Any:
    """The model of ``opt['model_type']`` (resolved as BasicSR resolves it) with the plugin's checkpoint
    policy mixed in (:func:`~converse_plugin.models.base_model.plugin_model_class`)."""
    from basicsr.utils import get_root_logger

    from converse_plugin.errors import OptionError

    cls = plugin_model_class(lookup('model', opt['model_type'], 'model_type'))
    try:
        model = cls(deepcopy(opt))
    except UserError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, AssertionError, NotImplementedError) as err:
        # BasicSR's model constructors read the options (losses, optimizers, schedulers, EMA) without checks
        text = err.args[0] if isinstance(err, KeyError) and err.args else first_line(err, '(no message)')
        raise OptionError(f"model_type {opt['model_type']}: the model cannot be built from these options "
                          f'({type(err).__name__}: {text})') from None
    except Exception as err:  # noqa: BLE001 (a model's constructor builds networks, losses, optimizers...)
        message = first_line(err, '(no message)')
        raise ModelBuildError(f"model_type {opt['model_type']!r}: the model could not be built: "
                              f'{type(err).__name__}: {message}{construction_hint(err)}') from None
    get_root_logger().info(f'Model [{model.__class__.__name__}] is created.')
    return model


class ModelBuildError(UserError, RuntimeError):
    """The model's constructor failed on these options or this machine (the message says what it raised)."""


def make_prefetcher(opt: dict, loader: Any, logger: Any) -> Any:
    """BasicSR's CPU or CUDA prefetcher for ``datasets:train:prefetch_mode``; ``cuda`` without CUDA falls
    back to the CPU prefetcher with a warning."""
    from basicsr.data.prefetch_dataloader import CPUPrefetcher, CUDAPrefetcher

    from converse_plugin.errors import OptionError

    train_opt = opt['datasets']['train']
    mode = train_opt.get('prefetch_mode')
    if mode is None or mode == 'cpu':
        return CPUPrefetcher(loader)
    if mode != 'cuda':
        raise OptionError(f"datasets:train:prefetch_mode: expected ~, 'cpu' or 'cuda', got {mode!r}")
    if not torch.cuda.is_available():
        warnings.warn("prefetch_mode 'cuda' needs CUDA, which is not available: using the CPU prefetcher",
                      RuntimeWarning, stacklevel=2)
        logger.warning("prefetch_mode 'cuda' needs CUDA, which is not available: using the CPU prefetcher")
        return CPUPrefetcher(loader)
    if train_opt.get('pin_memory') is not True:
        raise OptionError('datasets:train:pin_memory must be true for prefetch_mode cuda')
    logger.info(f'Use {mode} prefetch dataloader')
    return CUDAPrefetcher(loader, opt)
