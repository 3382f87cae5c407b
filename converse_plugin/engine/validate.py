"""Check a parsed option tree before a pipeline writes or trains anything.

:func:`validate_options` is called by the plugin's train and test pipelines right after option parsing
(:mod:`converse_plugin.engine.loops`). It turns what BasicSR would report as a ``KeyError`` or a
traceback from deep inside a constructor, minutes or hours later, into one :class:`OptionError` /
:class:`DataError` naming the file and key:

- every ``type`` (network, dataset, model, loss, metric) is resolved as BasicSR's registries resolve it
  (:func:`converse_plugin.registries.lookup`: plain and ``_basicsr``-suffixed names), optimizers and
  schedulers are ones BasicSR supports; otherwise the message lists the closest names;
- the keys the pipelines read unconditionally exist and have the right type and range;
- each network is built once (its constructor checks sizes, kernel sizes, padding modes, ...);
- each dataset is built once (it checks its options and that ``dataroot_*`` holds images), then the image
  headers are read: an image that cannot be decoded, is smaller than ``gt_size``, or too small for the
  padding of the network's Converse2D layers is reported by name. Gray images where RGB is expected and
  the reverse are converted by the datasets; the returned notes say so.
"""
from __future__ import annotations

import math
import numbers
from os import path as osp
from collections.abc import Iterable, Mapping
from copy import deepcopy
from typing import Any

from torch import nn

from converse_plugin.errors import (CheckpointError, DataError, DataFileNotFoundError, OptionError, UserError,
                                    construction_hint)
from converse_plugin.engine.image_folders import check_image_folders, check_shared_lmdbs
from converse_plugin.io.images import image_header
from converse_plugin.registries import build_network, lookup, unknown_name_message

__all__ = ['validate_options', 'check_registered', 'check_test_dataset']

# BasicSR 1.4.2's BaseModel.get_optimizer / setup_schedulers accept only these
OPTIMIZERS = ('Adam', )
SCHEDULERS = ('MultiStepLR', 'MultiStepRestartLR', 'CosineAnnealingRestartLR')
# sanity bounds: beyond them BasicSR overflows, forks without end or allocates the sampler's permutation forever
MAX_BATCH = 2 ** 20
MAX_WORKERS = 256
MAX_SAMPLES = 10 ** 8
MAX_NETWORK_INT = 2 ** 16
MAX_NETWORK_ELEMENTS = 2 ** 31


def check_registered(file: str, key: str, name: Any, names: Iterable[str], what: str) -> None:
    """Raise :class:`OptionError` when ``name`` is not one of ``names`` (a fixed list such as the optimizers
    BasicSR supports), listing the closest ones."""
    if isinstance(name, str) and name in set(names):
        return
    raise OptionError(f'{file}: ' + unknown_name_message(what, name, key, names))


def _get(file: str, tree: Mapping, key: str, where: str) -> Any:
    if not isinstance(tree, Mapping) or key not in tree:
        raise OptionError(f'{file}: missing required option {where}:{key}' if where else
                          f'{file}: missing required option {key}')
    return tree[key]


def _mapping(file: str, value: Any, key: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise OptionError(f'{file}: {key} must be a mapping, got {type(value).__name__} {value!r}')
    return value


def _positive(file: str, value: Any, key: str, allow_zero: bool = False, integer: bool = True,
              maximum: float | None = None) -> None:
    """A finite number > 0 (>= 0 with ``allow_zero``), at most ``maximum``; with ``integer`` it must be
    integral (``5e3`` is fine)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok:
        ok = value >= 0 if allow_zero else value > 0
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        kind = 'an integer' if integer else 'a number'
        bound = '>= 0' if allow_zero else '>= 1' if integer else '> 0'
        upper = f' and <= {maximum}' if maximum is not None else ''
        raise OptionError(f'{file}: {key} must be {kind} {bound}{upper}, got {value!r}')


def _string(file: str, value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise OptionError(f'{file}: {key} must be a non-empty string, got {value!r}')
    return value


def _number(file: str, value: Any, key: str, low: float | None = None, high: float | None = None) -> None:
    """A finite real number in [low, high] (either bound optional)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        rng = f' in [{low}, {high}]' if low is not None and high is not None else (
            f' >= {low}' if low is not None else f' <= {high}' if high is not None else '')
        raise OptionError(f'{file}: {key} must be a finite number{rng}, got {value!r}')


def validate_options(opt: Mapping, file: str, is_train: bool) -> list[str]:
    """Check ``opt`` (as returned by ``parse_options``) before anything runs.

    The checks build networks, datasets, losses and a sample, which draw random numbers: every random state
    (torch, numpy, Python) is the same afterwards, so the run that follows draws what BasicSR's would.

    Returns:
        notes for the log (e.g. gray images converted to RGB).
    Raises:
        OptionError, DataError: the first problem found; the message names ``file`` and the key.
    """
    from converse_plugin.engine.rng import preserved_rng

    with preserved_rng():
        return _validate_options(opt, file, is_train)


def _validate_options(opt: Mapping, file: str, is_train: bool) -> list[str]:
    model_cls = _lookup(file, 'model', _get(file, opt, 'model_type', ''), 'model_type')
    if 'scale' in opt:
        _positive(file, opt['scale'], 'scale')

    _mapping(file, _get(file, opt, 'network_g', ''), 'network_g')  # every BasicSR model builds net_g
    networks = {}
    for key in [k for k in opt if str(k).startswith('network_')]:
        net_opt = _mapping(file, opt[key], key)
        _lookup(file, 'network', _get(file, net_opt, 'type', key), f'{key}:type')
        networks[key] = _build_network(file, key, net_opt)

    _check_pretrained(file, opt, networks)
    resume = (opt.get('path') or {}).get('resume_state')
    if isinstance(resume, str) and not osp.isfile(resume):
        from converse_plugin.errors import CheckpointNotFoundError
        raise CheckpointNotFoundError(f'{file}: path:resume_state: training state {resume} does not exist '
                                      '(a file, or ~ to start from scratch)')

    notes: list[str] = []
    datasets = _mapping(file, opt['datasets'], 'datasets')
    if is_train and 'train' not in datasets:
        raise OptionError(f'{file}: missing required option datasets:train (the training set)')
    classes: dict = {}
    for phase, ds_opt in datasets.items():
        where = f'datasets:{phase}'
        prefix = str(phase).split('_')[0]
        if is_train and prefix not in ('train', 'val'):  # BasicSR's train pipeline knows only these
            raise OptionError(f"{file}: {where}: unknown dataset phase {phase!r}; use 'train' or 'val' "
                              '(several validation sets: val_1, val_2, ...)')
        _string(file, _get(file, ds_opt, 'name', where), f'{where}:name')
        for key in ('dataroot_gt', 'dataroot_lq', 'meta_info_file'):
            if ds_opt.get(key) is not None:
                _string(file, ds_opt[key], f'{where}:{key}')
        ds_cls = _lookup(file, 'dataset', _get(file, ds_opt, 'type', where), f'{where}:type')
        if prefix == 'train':
            _positive(file, _get(file, ds_opt, 'batch_size_per_gpu', where), f'{where}:batch_size_per_gpu',
                      maximum=MAX_BATCH)
            _positive(file, _get(file, ds_opt, 'num_worker_per_gpu', where), f'{where}:num_worker_per_gpu',
                      allow_zero=True, maximum=MAX_WORKERS)
            if 'dataset_enlarge_ratio' in ds_opt:
                _positive(file, ds_opt['dataset_enlarge_ratio'], f'{where}:dataset_enlarge_ratio', maximum=MAX_SAMPLES)
            if ds_opt.get('prefetch_mode') not in (None, 'cpu', 'cuda'):
                raise OptionError(f"{file}: {where}:prefetch_mode must be ~, 'cpu' or 'cuda', "
                                  f"got {ds_opt['prefetch_mode']!r}")
        notes += check_image_folders(file, where, ds_opt, ds_cls)
        classes[phase] = ds_cls
        dataset = _build_dataset(file, where, ds_opt, ds_cls)
        if prefix == 'train':
            samples = _length(file, where, dataset) * ds_opt.get('dataset_enlarge_ratio', 1)
            if samples > MAX_SAMPLES:
                raise OptionError(f'{file}: {where}:dataset_enlarge_ratio {ds_opt["dataset_enlarge_ratio"]} gives '
                                  f'{samples} samples per epoch, more than {MAX_SAMPLES}; lower it')
        notes += _check_images(file, where, dataset, networks.get('network_g'))
        sample = _first_sample(file, where, dataset)
        _dry_run(file, where, model_cls, networks.get('network_g'), sample)
    check_shared_lmdbs(file, datasets, classes)

    if is_train:
        _check_train(file, opt, model_cls)
    if 'val' in opt or not is_train:
        val = _mapping(file, _get(file, opt, 'val', ''), 'val')
        if is_train:
            _positive(file, _get(file, val, 'val_freq', 'val'), 'val:val_freq')
        metrics = val.get('metrics')
        for name, metric in (_mapping(file, metrics, 'val:metrics') if metrics is not None else {}).items():
            metric = _mapping(file, metric, f'val:metrics:{name}')
            fn = _lookup(file, 'metric', _get(file, metric, 'type', f'val:metrics:{name}'), f'val:metrics:{name}:type')
            _check_metric(file, f'val:metrics:{name}', fn, metric)
        if val.get('save_img') and 'suffix' not in val and not is_train:  # BasicSR's test reads it, training not
            raise OptionError(f'{file}: val:save_img is true but val:suffix is missing (~ for none); BasicSR reads it')
        for key in ('save_img', 'pbar'):
            if val.get(key) is not None and not isinstance(val[key], bool):
                raise OptionError(f'{file}: val:{key} must be true or false, got {val[key]!r}')
        if val.get('suffix') is not None:
            _string(file, val['suffix'], 'val:suffix')
        if 'cpu_allocator' in val:
            if is_train:  # one process: its allocator is set up once, by train:cpu_allocator
                raise OptionError(f'{file}: val:cpu_allocator is for basicsr test; validation while training runs '
                                  'in the training process: set train:cpu_allocator instead')
            from converse_plugin.engine.allocator import parse_cpu_allocator
            _in_file(file, parse_cpu_allocator, val['cpu_allocator'], 'val:cpu_allocator')
    return notes


def check_test_dataset(file: str, where: str, ds_opt: Any, net: nn.Module | None = None) -> Any:
    """Check one test set's options (``name``, ``type``, paths) and build it once, as ``basicsr test`` does;
    returns the dataset. Errors are :class:`UserError` naming ``file`` and ``where``."""
    ds_opt = _mapping(file, ds_opt, where)
    _string(file, _get(file, ds_opt, 'name', where), f'{where}:name')
    for key in ('dataroot_gt', 'dataroot_lq'):
        if ds_opt.get(key) is not None:
            _string(file, ds_opt[key], f'{where}:{key}')
    ds_cls = _lookup(file, 'dataset', _get(file, ds_opt, 'type', where), f'{where}:type')
    check_image_folders(file, where, ds_opt, ds_cls)
    dataset = _build_dataset(file, where, ds_opt, ds_cls)
    _check_images(file, where, dataset, net)
    _first_sample(file, where, dataset)
    return dataset


def _in_file(file: str, fn: Any, *args: Any) -> Any:
    """``fn(*args)``, its OptionError prefixed with the option file's name."""
    try:
        return fn(*args)
    except OptionError as err:
        raise OptionError(f'{file}: {err}') from None


def _lookup(file: str, kind: str, name: Any, key: str) -> Any:
    return _in_file(file, lookup, kind, name, key)


def _needs_pixel_or_perceptual_loss(model_cls: Any) -> bool:
    """True for models whose training settings are SRModel's (they refuse to start without pixel_opt or
    perceptual_opt); GAN models (SRGANModel and its subclasses) set up their own losses."""
    from basicsr.models.sr_model import SRModel
    from basicsr.models.srgan_model import SRGANModel
    return isinstance(model_cls, type) and issubclass(model_cls, SRModel) and not issubclass(model_cls, SRGANModel)


def _check_train(file: str, opt: Mapping, model_cls: Any) -> None:
    train = _mapping(file, opt['train'], 'train')
    _positive(file, _get(file, train, 'total_iter', 'train'), 'train:total_iter')
    _get(file, train, 'optim_g', 'train')
    optimizer = None
    for key in [k for k in train if str(k).startswith('optim_') and train[k] is not None]:  # optim_g, a GAN's optim_d
        optim = _mapping(file, train[key], f'train:{key}')
        check_registered(file, f'train:{key}:type', _get(file, optim, 'type', f'train:{key}'), OPTIMIZERS, 'optimizer')
        _positive(file, _get(file, optim, 'lr', f'train:{key}'), f'train:{key}:lr', allow_zero=True, integer=False)
        built = _build_optimizer(file, f'train:{key}', optim)
        optimizer = built if key == 'optim_g' else optimizer
    for key in [k for k in train if str(k).endswith(('_iter', '_iters')) and k not in ('total_iter', 'warmup_iter')]:
        if train[key] is not None:  # e.g. a GAN's net_d_iters (>= 1) and net_d_init_iters (>= 0)
            _positive(file, train[key], f'train:{key}', allow_zero=not str(key).endswith('d_iters'))
    if train.get('scheduler') is not None:
        sched = _mapping(file, train['scheduler'], 'train:scheduler')
        check_registered(file, 'train:scheduler:type', _get(file, sched, 'type', 'train:scheduler'), SCHEDULERS,
                         'scheduler')
        _build_scheduler(file, 'train:scheduler', sched, optimizer)
    if 'warmup_iter' in train:  # ~ too: BasicSR compares it with the iteration
        value = train['warmup_iter']
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= -1):
            raise OptionError(f'{file}: train:warmup_iter must be an integer >= -1 (-1: no warm-up), got {value!r}')
    if train.get('ema_decay') is not None:
        _number(file, train['ema_decay'], 'train:ema_decay', 0, 1)
    from converse_plugin.engine.allocator import parse_cpu_allocator
    from converse_plugin.engine.denormals import parse_flush_denormal
    for key, parse in (('cpu_allocator', parse_cpu_allocator), ('flush_denormal', parse_flush_denormal)):
        _in_file(file, parse, train.get(key))
    if 'ema_warmup' in train:
        from converse_plugin.models.base_model import parse_ema_warmup
        _in_file(file, parse_ema_warmup, train['ema_warmup'])
    losses = [k for k in train if str(k).endswith('_opt') and train[k] is not None]
    for key in losses:
        loss = _mapping(file, train[key], f'train:{key}')
        loss_cls = _lookup(file, 'loss', _get(file, loss, 'type', f'train:{key}'), f'train:{key}:type')
        _build_loss(file, f'train:{key}', loss_cls, loss)
    if _needs_pixel_or_perceptual_loss(model_cls) and not any(train.get(k) for k in ('pixel_opt', 'perceptual_opt')):
        raise OptionError(f'{file}: train needs a loss: pixel_opt or perceptual_opt')
    logger = _mapping(file, opt['logger'], 'logger')
    for key in ('print_freq', 'save_checkpoint_freq'):
        _positive(file, _get(file, logger, key, 'logger'), f'logger:{key}')
    if not isinstance(_get(file, logger, 'use_tb_logger', 'logger'), bool):  # BasicSR's MessageLogger reads it
        raise OptionError(f"{file}: logger:use_tb_logger must be true or false, got {logger['use_tb_logger']!r}")
    if logger.get('wandb') is not None:
        wandb = _mapping(file, logger['wandb'], 'logger:wandb')
        if wandb.get('project') is not None:
            import importlib.util
            _string(file, wandb['project'], 'logger:wandb:project')
            if not logger['use_tb_logger']:
                raise OptionError(f'{file}: logger:wandb:project needs logger:use_tb_logger: true (BasicSR)')
            if importlib.util.find_spec('wandb') is None:
                raise OptionError(f'{file}: logger:wandb:project is set but wandb is not installed '
                                  '(pip install wandb, or set logger:wandb:project: ~)')


def _build_optimizer(file: str, where: str, optim: Mapping) -> Any:
    """The optimizer of ``optim`` on a dummy parameter, as BasicSR's ``get_optimizer`` builds it: its
    constructor checks ``lr``, ``betas``, ``weight_decay``, ... (errors name ``where``)."""
    import torch

    kwargs = deepcopy(dict(optim))
    kwargs.pop('type')
    lr = kwargs.pop('lr')
    for key, value in kwargs.items():  # Adam's numeric options (a boolean passes its constructor, not its step)
        if key in ('weight_decay', 'eps') and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            raise OptionError(f'{file}: {where}:{key} must be a number, got {value!r}')
    try:
        param = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.Adam([param], lr, **kwargs)
        param.grad = torch.ones(1)
        optimizer.step()  # one step on a dummy parameter: options its constructor does not check
        return optimizer
    except Exception as err:  # noqa: BLE001 (any constructor error is a bad option value)
        raise OptionError(f'{file}: {where}: the optimizer rejects these options: {type(err).__name__}: {err}') from None


_SCHEDULER_INT_LISTS = ('milestones', 'restarts', 'periods')


def _build_scheduler(file: str, where: str, sched: Mapping, optimizer: Any) -> None:
    """The scheduler of ``sched`` on ``optimizer``, as BasicSR's ``setup_schedulers`` builds it, stepped a few
    times; list options must be lists of integers (errors name ``where`` or the key)."""
    from basicsr.models import lr_scheduler

    kwargs = deepcopy(dict(sched))
    name = kwargs.pop('type')
    for key in _SCHEDULER_INT_LISTS:
        if key in kwargs:
            value = kwargs[key]
            if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                      for v in value):
                raise OptionError(f'{file}: {where}:{key} must be a list of integers >= 0, got {value!r}')
    if 'restart_weights' in kwargs:
        value = kwargs['restart_weights']
        if not isinstance(value, list):
            raise OptionError(f'{file}: {where}:restart_weights must be a list of numbers, got {value!r}')
        for i, weight in enumerate(value):
            _number(file, weight, f'{where}:restart_weights:{i}')
    for key in ('gamma', 'eta_min'):
        if key in kwargs:
            _number(file, kwargs[key], f'{where}:{key}')
    cls = lr_scheduler.CosineAnnealingRestartLR if name == 'CosineAnnealingRestartLR' else \
        lr_scheduler.MultiStepRestartLR
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # "lr_scheduler.step() before optimizer.step()": a dry run
            scheduler = cls(optimizer, **kwargs)
            for _ in range(3):
                scheduler.step()
    except Exception as err:  # noqa: BLE001 (any constructor error is a bad option value)
        raise OptionError(f'{file}: {where}: the {name} scheduler rejects these options: '
                          f'{type(err).__name__}: {err}') from None


def _build_loss(file: str, where: str, loss_cls: Any, loss: Mapping) -> None:
    """Build the loss once as BasicSR's ``build_loss`` does (type popped, the rest as keyword arguments);
    ``loss_weight`` must be a number; a pixel loss is also applied once to a small pair of tensors."""
    import inspect

    import torch

    kwargs = deepcopy(dict(loss))
    kwargs.pop('type')
    for key, value in kwargs.items():
        if str(key).endswith('weight') and not isinstance(value, Mapping):
            _number(file, value, f'{where}:{key}')
    try:
        built = loss_cls(**kwargs)
    except UserError as err:
        raise type(err)(f'{file}: {where}: {err}') from None
    except Exception as err:  # noqa: BLE001 (any constructor error is a bad option value)
        raise OptionError(f'{file}: {where}: the loss {loss.get("type")} cannot be built: '
                          f'{type(err).__name__}: {_plain(err)}{construction_hint(err)}') from None
    try:
        params = list(inspect.signature(built.forward).parameters)
    except (TypeError, ValueError):
        return
    if params[:2] != ['pred', 'target']:
        return  # not a pixel loss (GAN, perceptual with its own inputs, ...)
    pred, target = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    try:
        with torch.no_grad():
            built(pred, target)
    except Exception as err:  # noqa: BLE001 (the options, not the tensors, are what can be wrong)
        raise OptionError(f'{file}: {where}: the loss {loss.get("type")} fails with these options: '
                          f'{type(err).__name__}: {_plain(err)}') from None


def _check_metric(file: str, where: str, fn: Any, metric: Mapping) -> None:
    """``crop_border`` an integer >= 0, ``test_y_channel`` a boolean; BasicSR's own metrics are also
    computed once on a small pair of images with these options."""
    import numpy as np

    if 'crop_border' in metric:
        _positive(file, metric['crop_border'], f'{where}:crop_border', allow_zero=True, maximum=2 ** 16)
    for key in ('test_y_channel', 'better'):
        if key == 'test_y_channel' and key in metric and not isinstance(metric[key], bool):
            raise OptionError(f'{file}: {where}:{key} must be true or false, got {metric[key]!r}')
    if metric.get('better') is not None and metric['better'] not in ('higher', 'lower'):
        raise OptionError(f"{file}: {where}:better must be 'higher' or 'lower', got {metric['better']!r}")
    if not getattr(fn, '__module__', '').startswith('basicsr.metrics.') or 'niqe' in fn.__module__:
        return
    kwargs = deepcopy(dict(metric))
    kwargs.pop('type')
    kwargs.pop('better', None)
    rng = np.random.default_rng(0)
    img, img2 = (rng.integers(0, 256, (32, 32, 3)).astype(np.float64) for _ in range(2))
    try:
        fn(img, img2, **kwargs)
    except Exception as err:  # noqa: BLE001 (the options, not the images, are what can be wrong)
        raise OptionError(f'{file}: {where}: the metric {metric.get("type")} fails with these options: '
                          f'{type(err).__name__}: {_plain(err)}') from None


def _check_pretrained(file: str, opt: Mapping, networks: dict[str, nn.Module]) -> None:
    """``path:pretrain_network_<x>`` loads safely and matches network_<x> (unless a resume replaces it)."""
    from converse_plugin.io.checkpoint import load_network_params, mismatch_message, state_dict_mismatch

    paths = opt.get('path') or {}
    if opt.get('auto_resume') or paths.get('resume_state'):
        return  # check_resume points the pretrain paths at the resumed iteration's files
    for key, net in networks.items():
        label = key[len('network_'):]
        load_path = paths.get(f'pretrain_network_{label}')
        if load_path is None:
            continue
        param_key = paths.get(f'param_key_{label}', 'params')
        try:
            params, _ = load_network_params(str(load_path), param_key)
        except UserError as err:
            raise type(err)(f'{file}: path:pretrain_network_{label}: {err}') from None
        diff = state_dict_mismatch(net.state_dict(), params)
        if paths.get(f'strict_load_{label}', True) and any(diff.values()):
            raise CheckpointError(f'{file}: path:pretrain_network_{label}: '
                                  + mismatch_message(str(load_path), f"{key} ({opt[key]['type']})", diff))


def _build_network(file: str, key: str, net_opt: Mapping) -> nn.Module:
    """Build the network once (constructor errors become an OptionError naming ``file`` and ``key``).

    Integer options above ``MAX_NETWORK_INT`` are refused, and the network is first built on the ``meta``
    device (no memory) to refuse one with more than ``MAX_NETWORK_ELEMENTS`` parameters and buffers: a typo
    such as ``num_feat: 640000`` must not allocate (or loop) for minutes before it fails.
    """
    import torch

    _check_network_ints(file, key, net_opt)
    try:
        with torch.device('meta'):
            meta = build_network(net_opt, key)
        elements = sum(t.numel() for t in [*meta.parameters(), *meta.buffers()])
    except Exception:  # noqa: BLE001 (the real build below reports it, or the network cannot be built on meta)
        elements = 0
    if elements > MAX_NETWORK_ELEMENTS:
        raise OptionError(f'{file}: {key}: these options give {elements:.3g} parameters and buffers, more than '
                          f'{MAX_NETWORK_ELEMENTS:.3g}; check num_feat, num_block and the other sizes')
    return _in_file(file, build_network, net_opt, key)


def _check_network_ints(file: str, where: str, tree: Any) -> None:
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            _check_network_ints(file, f'{where}:{k}', v)
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            _check_network_ints(file, f'{where}:{i}', v)
    elif isinstance(tree, numbers.Real) and not isinstance(tree, bool) and math.isfinite(tree) and \
            float(tree).is_integer() and abs(tree) > MAX_NETWORK_INT:
        raise OptionError(f'{file}: {where} is {tree!r}, more than {MAX_NETWORK_INT}: not a plausible network size')


def _build_dataset(file: str, where: str, ds_opt: Mapping, ds_cls: Any):
    """Build the dataset once (BasicSR's build_dataset, on a copy), naming ``where`` in errors."""
    kwargs = deepcopy(dict(ds_opt))
    io_opt = kwargs.get('io_backend')
    if io_opt is not None:
        _check_io_backend(file, f'{where}:io_backend', io_opt)
    try:
        return ds_cls(kwargs)
    except FileNotFoundError as err:
        raise DataFileNotFoundError(f'{file}: {where}: {_plain(err)}') from None
    except UserError as err:
        raise type(err)(f'{file}: {where}: {err}') from None
    except (ValueError, KeyError, TypeError, AssertionError) as err:
        raise OptionError(f'{file}: {where}: {_plain(err)}') from None
    except Exception as err:  # noqa: BLE001 (any other constructor error is still a bad option value)
        raise OptionError(f'{file}: {where}: {type(err).__name__}: {_plain(err)}') from None


def _check_io_backend(file: str, where: str, io_opt: Any) -> None:
    """``io_backend`` is a mapping whose ``type`` and other keys BasicSR's FileClient accepts (LMDB: the
    dataset adds the databases, so only its type is checked here)."""
    from basicsr.utils import FileClient

    io_opt = dict(_mapping(file, io_opt, where))
    backend = io_opt.pop('type', None)
    if not isinstance(backend, str):
        raise OptionError(f"{file}: {where}:type must be a backend name ('disk', 'lmdb', ...), got {backend!r}")
    try:
        if backend == 'lmdb':
            FileClient(backend, db_paths=[], client_keys=[])  # the dataset adds its db_paths and client_keys and opens them
        else:
            FileClient(backend, **io_opt)
    except Exception as err:  # noqa: BLE001 (a constructor error is a bad option value: unknown type, keys)
        raise OptionError(f'{file}: {where}: the io backend {backend!r} rejects these options: '
                          f'{type(err).__name__}: {_plain(err)}') from None


def _length(file: str, where: str, dataset: Any) -> int:
    """``len(dataset)`` (BasicSR's training sampler needs it); a dataset whose ``len()`` fails, or that has
    none, is refused naming ``where``."""
    try:
        return len(dataset)
    except UserError as err:
        raise type(err)(f'{file}: {where}: {err}') from None
    except Exception as err:  # noqa: BLE001 (another package's dataset: its error, with these options)
        raise OptionError(f'{file}: {where}: len() of the dataset fails with these options (BasicSR needs it): '
                          f'{type(err).__name__}: {_plain(err)}') from None


def _first_sample(file: str, where: str, dataset: Any) -> Any:
    """Load the dataset's first sample once (random states preserved): options that the dataset reads only
    per sample (noise seeds, kernels, crops) fail here, with the key's section named, not in the loop."""
    from converse_plugin.engine.rng import preserved_rng

    try:
        if len(dataset) == 0:
            return None
        with preserved_rng():
            sample = dataset[0]
    except UserError as err:
        raise type(err)(f'{file}: {where}: {err}') from None
    except FileNotFoundError as err:
        raise DataFileNotFoundError(f'{file}: {where}: {_plain(err)}') from None
    except Exception as err:  # noqa: BLE001 (the options, not the code, are what a user can fix)
        raise OptionError(f'{file}: {where}: loading the first sample fails with these options: '
                          f'{type(err).__name__}: {_plain(err)}') from None
    import torch
    for key, value in (sample.items() if isinstance(sample, Mapping) else ()):
        if key in ('lq', 'gt') and isinstance(value, torch.Tensor) and value.numel() == 0:
            raise DataError(f'{file}: {where}: its first sample has an empty {key} image {tuple(value.shape)} with '
                            'these options (e.g. modcrop or gt_size larger than the images)')
    return sample


_DRY_RUN_SIZE = 32


def _dry_run(file: str, where: str, model_cls: Any, net: nn.Module | None, sample: Any) -> None:
    """Run ``network_g`` once, without gradients, on a corner (at most 32 x 32) of the first sample's ``lq``
    (with its ``kernel`` for networks that take one), as an SRModel-like model feeds it: a network that
    cannot process this data (channels that do not match ``color``, ``num_out_ch: 0``, ...) is reported
    here, naming the dataset, instead of failing in the first training step. Only for image models
    (``lq`` of shape (C, H, W)) whose training settings are SRModel's; anything else is left to the model."""
    import inspect

    import torch

    from basicsr.models.sr_model import SRModel

    if net is None or not isinstance(sample, Mapping) or not (isinstance(model_cls, type) and issubclass(model_cls, SRModel)):
        return
    lq = sample.get('lq')
    if not isinstance(lq, torch.Tensor) or lq.dim() != 3 or not lq.is_floating_point():
        return
    try:
        params = inspect.signature(net.forward).parameters
    except (TypeError, ValueError):
        return
    kwargs = {}
    if 'kernel' in params and isinstance(sample.get('kernel'), torch.Tensor):
        kwargs['kernel'] = sample['kernel'][None]
    required = [p for name, p in params.items() if p.default is inspect.Parameter.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and name not in kwargs]
    if len(required) != 1:
        return
    x = lq[None, :, :_DRY_RUN_SIZE, :_DRY_RUN_SIZE]
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            out = net(x, **kwargs)
    except UserError as err:
        raise type(err)(f'{file}: network_g cannot process the images of {where}: {err}') from None
    except Exception as err:  # noqa: BLE001 (BasicSR would fail the same way in its first step)
        raise OptionError(f'{file}: network_g cannot process the images of {where} ({lq.shape[0]} channels; '
                          f'check network_g:num_in_ch / num_out_ch against {where}:color): '
                          f'{type(err).__name__}: {_plain(err)}') from None
    finally:
        net.train(was_training)
    if not isinstance(out, torch.Tensor):
        return
    if out.numel() == 0:
        raise OptionError(f'{file}: network_g gives an empty output {tuple(out.shape)} for the images of {where}; '
                          'check its channel options (num_out_ch, num_feat, ...)')
    gt = sample.get('gt')
    if isinstance(gt, torch.Tensor) and gt.dim() == 3 and out.dim() == 4:
        ratios = [g / l for g, l in zip(gt.shape[-2:], lq.shape[-2:])]
        expected = tuple(int(round(n * r)) for n, r in zip(x.shape[-2:], ratios))
        if all(float(r).is_integer() for r in ratios) and tuple(out.shape[-2:]) != expected:
            factor = out.shape[-1] / x.shape[-1]
            raise OptionError(f'{file}: network_g scales its input by {factor:g}, but {where} gives ground truth '
                              f'{ratios[-1]:g} times the size of its input; check scale (top level and the '
                              'dataset) against network_g (upscale)')


def _plain(err: BaseException) -> str:
    """The message of ``err`` for a one-line error: a KeyError's key unquoted, only the first non-empty line
    (torch, OpenCV and other packages' errors can carry a C++ stack or more lines below it)."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return text.strip().splitlines()[0] if text.strip() else ''


_GRAY_MODES = ('1', 'L', 'LA', 'I', 'I;16', 'I;16B', 'I;16L', 'F', 'P')


def _check_images(file: str, where: str, dataset: Any, net: nn.Module | None) -> list[str]:
    """Header checks of the images of the plugin's own disk datasets (whose attributes are ours): decodable,
    >= gt_size, large enough for the network. Other packages' datasets are checked through their public
    contract only (length and first sample, :func:`_first_sample`), and BasicSR's paired and single-image
    folders from their options (:mod:`converse_plugin.engine.image_folders`)."""
    from converse_plugin.data.common import GTImageDataset

    if not isinstance(dataset, GTImageDataset):
        return []
    paths = getattr(dataset, 'paths', None)
    backend = (getattr(dataset, 'io_backend_opt', None) or {}).get('type', 'disk')
    if not paths or backend != 'disk':
        return []
    color = getattr(dataset, 'color', None)
    gt_size = getattr(dataset, 'gt_size', None) if getattr(dataset, 'train', False) else None
    converted = []
    smallest = None
    for path in paths:
        header = image_header(path)
        if header is None:
            raise DataError(f'{file}: {where}: cannot decode image file {path}: not a readable image '
                            '(remove it from the folder or replace it)')
        height, width, mode = header
        if gt_size is not None and (height < gt_size or width < gt_size):
            raise DataError(f'{file}: {where}: image {path} is {height}x{width} (HxW), smaller than gt_size '
                            f'{gt_size}x{gt_size}; remove it or lower gt_size')
        if smallest is None or min(height, width) < min(smallest[0], smallest[1]):
            smallest = (height, width, path)
        gray = mode in _GRAY_MODES
        if (color == 'rgb' and gray and mode != 'P') or (color == 'gray' and not gray):
            converted.append(path)
    notes = []
    if converted:
        how = ('gray images are replicated to 3 equal channels' if color == 'rgb' else
               'color images are converted to gray (luma 0.299 R + 0.587 G + 0.114 B)')
        notes.append(f'{where}: {len(converted)} of {len(paths)} images are not {color} ({converted[0]}, ...): '
                     f'{how} (color: {color})')
    if net is not None and smallest is not None:
        _check_network_fits(file, where, dataset, net, smallest, gt_size)
    return notes


def _check_network_fits(file: str, where: str, dataset: Any, net: nn.Module, smallest: tuple[int, int, str],
                        gt_size: int | None) -> None:
    """Every Converse2D layer of ``net`` can pad the smallest network input this dataset gives.

    The input is the LQ image: the crop (training) or the whole image, divided by the dataset's ``scale``
    (super-resolution) and cropped to a multiple of ``mod`` (deblurring). The check assumes that layers
    never see less than the input size (true for the ConverseNets: nothing downsamples).
    """
    from converse_plugin.ops import Converse2D
    from converse_plugin.ops.functional import check_padding

    height, width, path = smallest
    if gt_size is not None:
        height = width = gt_size
    mod = getattr(dataset, 'mod', None) if not getattr(dataset, 'train', False) else None
    if isinstance(mod, int) and mod > 1:
        height, width = height - height % mod, width - width % mod
    scale = getattr(dataset, 'scale', 1)
    scale = scale if isinstance(scale, int) and scale > 0 else 1
    h_in, w_in = height // scale, width // scale
    for name, module in net.named_modules():
        if not isinstance(module, Converse2D):
            continue
        try:
            check_padding(h_in, w_in, module.padding, module.padding_mode)
            grid = module.scale * (min(h_in, w_in) + 2 * module.padding)
            if module.kernel_size > grid:
                raise ValueError(f'kernel {module.kernel_size}x{module.kernel_size} is larger than the padded, '
                                 f'upscaled grid {grid}x{grid}')
        except ValueError as err:
            what = f'crops of gt_size {gt_size}' if gt_size is not None else f'image {path} ({smallest[0]}x{smallest[1]})'
            raise DataError(f'{file}: {where}: {what} give a network input of {h_in}x{w_in}, too small for '
                            f'network_g layer {name} (Converse2D, padding {module.padding}, '
                            f'{module.padding_mode!r}): {err}') from None

