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

import numbers
from collections.abc import Iterable, Mapping
from copy import deepcopy
from typing import Any

from torch import nn

from converse_plugin.errors import CheckpointError, DataError, DataFileNotFoundError, OptionError, UserError
from converse_plugin.registries import build_network, lookup, unknown_name_message

__all__ = ['validate_options', 'check_registered']

# BasicSR 1.4.2's BaseModel.get_optimizer / setup_schedulers accept only these
OPTIMIZERS = ('Adam', )
SCHEDULERS = ('MultiStepLR', 'MultiStepRestartLR', 'CosineAnnealingRestartLR')


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


def _positive(file: str, value: Any, key: str, allow_zero: bool = False, integer: bool = True) -> None:
    """A number > 0 (>= 0 with ``allow_zero``); with ``integer`` it must be integral (``5e3`` is fine)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok and integer:
        ok = float(value).is_integer()
    if ok:
        ok = value >= 0 if allow_zero else value > 0
    if not ok:
        kind = 'an integer' if integer else 'a number'
        bound = '>= 0' if allow_zero else '>= 1' if integer else '> 0'
        raise OptionError(f'{file}: {key} must be {kind} {bound}, got {value!r}')


def validate_options(opt: Mapping, file: str, is_train: bool) -> list[str]:
    """Check ``opt`` (as returned by ``parse_options``) before anything runs.

    Returns:
        notes for the log (e.g. gray images converted to RGB).
    Raises:
        OptionError, DataError: the first problem found; the message names ``file`` and the key.
    """
    model_cls = _lookup(file, 'model', _get(file, opt, 'model_type', ''), 'model_type')
    if 'scale' in opt:
        _positive(file, opt['scale'], 'scale')

    networks = {}
    for key in [k for k in opt if str(k).startswith('network_')]:
        net_opt = _mapping(file, opt[key], key)
        _lookup(file, 'network', _get(file, net_opt, 'type', key), f'{key}:type')
        networks[key] = _build_network(file, key, net_opt)

    _check_pretrained(file, opt, networks)

    notes: list[str] = []
    datasets = _mapping(file, opt['datasets'], 'datasets')
    if is_train and 'train' not in datasets:
        raise OptionError(f'{file}: missing required option datasets:train (the training set)')
    for phase, ds_opt in datasets.items():
        where = f'datasets:{phase}'
        prefix = str(phase).split('_')[0]
        if is_train and prefix not in ('train', 'val'):  # BasicSR's train pipeline knows only these
            raise OptionError(f"{file}: {where}: unknown dataset phase {phase!r}; use 'train' or 'val' "
                              '(several validation sets: val_1, val_2, ...)')
        _get(file, ds_opt, 'name', where)
        ds_cls = _lookup(file, 'dataset', _get(file, ds_opt, 'type', where), f'{where}:type')
        if prefix == 'train':
            _positive(file, _get(file, ds_opt, 'batch_size_per_gpu', where), f'{where}:batch_size_per_gpu')
            _positive(file, _get(file, ds_opt, 'num_worker_per_gpu', where), f'{where}:num_worker_per_gpu',
                      allow_zero=True)
            if 'dataset_enlarge_ratio' in ds_opt:
                _positive(file, ds_opt['dataset_enlarge_ratio'], f'{where}:dataset_enlarge_ratio')
            if ds_opt.get('prefetch_mode') not in (None, 'cpu', 'cuda'):
                raise OptionError(f"{file}: {where}:prefetch_mode must be ~, 'cpu' or 'cuda', "
                                  f"got {ds_opt['prefetch_mode']!r}")
        dataset = _build_dataset(file, where, ds_opt, ds_cls)
        notes += _check_images(file, where, dataset, networks.get('network_g'))

    if is_train:
        _check_train(file, opt, model_cls)
    if 'val' in opt or not is_train:
        val = _mapping(file, _get(file, opt, 'val', ''), 'val')
        if is_train:
            _positive(file, _get(file, val, 'val_freq', 'val'), 'val:val_freq')
        for name, metric in (val.get('metrics') or {}).items():
            metric = _mapping(file, metric, f'val:metrics:{name}')
            _lookup(file, 'metric', _get(file, metric, 'type', f'val:metrics:{name}'), f'val:metrics:{name}:type')
    return notes


def _lookup(file: str, kind: str, name: Any, key: str) -> Any:
    try:
        return lookup(kind, name, key)
    except OptionError as err:
        raise OptionError(f'{file}: {err}') from None


def _needs_pixel_or_perceptual_loss(model_cls: Any) -> bool:
    """True for models whose training settings are SRModel's (they refuse to start without pixel_opt or
    perceptual_opt); GAN models (SRGANModel and its subclasses) set up their own losses."""
    from basicsr.models.sr_model import SRModel
    from basicsr.models.srgan_model import SRGANModel
    return isinstance(model_cls, type) and issubclass(model_cls, SRModel) and not issubclass(model_cls, SRGANModel)


def _check_train(file: str, opt: Mapping, model_cls: Any) -> None:
    train = _mapping(file, opt['train'], 'train')
    _positive(file, _get(file, train, 'total_iter', 'train'), 'train:total_iter')
    optim = _mapping(file, _get(file, train, 'optim_g', 'train'), 'train:optim_g')
    check_registered(file, 'train:optim_g:type', _get(file, optim, 'type', 'train:optim_g'), OPTIMIZERS, 'optimizer')
    _positive(file, _get(file, optim, 'lr', 'train:optim_g'), 'train:optim_g:lr', allow_zero=True, integer=False)
    if train.get('scheduler') is not None:
        sched = _mapping(file, train['scheduler'], 'train:scheduler')
        check_registered(file, 'train:scheduler:type', _get(file, sched, 'type', 'train:scheduler'), SCHEDULERS,
                         'scheduler')
    losses = [k for k in train if str(k).endswith('_opt') and train[k] is not None]
    for key in losses:
        loss = _mapping(file, train[key], f'train:{key}')
        _lookup(file, 'loss', _get(file, loss, 'type', f'train:{key}'), f'train:{key}:type')
    if _needs_pixel_or_perceptual_loss(model_cls) and not any(train.get(k) for k in ('pixel_opt', 'perceptual_opt')):
        raise OptionError(f'{file}: train needs a loss: pixel_opt or perceptual_opt')
    logger = _mapping(file, opt['logger'], 'logger')
    for key in ('print_freq', 'save_checkpoint_freq'):
        _positive(file, _get(file, logger, key, 'logger'), f'logger:{key}')


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
    """Build the network once (constructor errors become an OptionError naming ``file`` and ``key``)."""
    try:
        return build_network(net_opt, key)
    except OptionError as err:
        raise OptionError(f'{file}: {err}') from None


def _build_dataset(file: str, where: str, ds_opt: Mapping, ds_cls: Any):
    """Build the dataset once (BasicSR's build_dataset, on a copy), naming ``where`` in errors."""
    kwargs = deepcopy(dict(ds_opt))
    try:
        return ds_cls(kwargs)
    except FileNotFoundError as err:
        raise DataFileNotFoundError(f'{file}: {where}: {_plain(err)}') from None
    except UserError as err:
        raise type(err)(f'{file}: {where}: {err}') from None
    except (ValueError, KeyError, TypeError, AssertionError) as err:
        raise OptionError(f'{file}: {where}: {_plain(err)}') from None


def _plain(err: BaseException) -> str:
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


def _image_header(path: str) -> tuple[int, int, str] | None:
    """(height, width, PIL mode) from the file's header, or None when it is not a readable image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.height, img.width, img.mode
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        import cv2  # some formats PIL does not know; cv2 reads the whole file
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if img is None:
            return None
        return img.shape[0], img.shape[1], 'L' if img.ndim == 2 or img.shape[2] == 1 else 'RGB'


_GRAY_MODES = ('1', 'L', 'LA', 'I', 'I;16', 'I;16B', 'I;16L', 'F', 'P')


def _check_images(file: str, where: str, dataset: Any, net: nn.Module | None) -> list[str]:
    """Header checks of a disk dataset's images: decodable, >= gt_size, large enough for the network."""
    paths = getattr(dataset, 'paths', None)
    backend = (getattr(dataset, 'io_backend_opt', None) or {}).get('type', 'disk')
    if not paths or backend != 'disk':
        return []
    color = getattr(dataset, 'color', None)
    gt_size = getattr(dataset, 'gt_size', None) if getattr(dataset, 'train', False) else None
    converted = []
    smallest = None
    for path in paths:
        header = _image_header(path)
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

