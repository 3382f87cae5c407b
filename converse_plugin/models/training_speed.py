"""Mixed precision and ``torch.compile`` for BasicSR models (a mixin).

Option keys (all optional, all off by default):

``train: amp``
    ``false`` (default), ``bf16`` or ``fp16``. The training forward pass runs under
    ``torch.autocast(dtype)``; losses are computed in float32 on the output cast back. ``fp16`` uses
    ``torch.amp.GradScaler`` (dynamic loss scaling; its state is saved in the ``.state`` files and restored
    on resume); it is meant for CUDA and also runs, slowly, on the CPU. ``bf16`` needs no scaling.
    Converse2D always computes in float32 (or float64) inside autocast, so only the convolutions, norms and
    activations around it change precision. Validation and testing stay in float32.
``train: compile``
    ``false`` (default), ``true`` or a mapping of :func:`torch.compile` arguments (e.g. ``{mode:
    max-autotune}``). On the CPU, without a mode, inductor's ``aggressive_fusion`` is on (``{options:
    {aggressive_fusion: false}}`` turns it off). The network is compiled in place (``nn.Module.compile``),
    so its state-dict names, saving, EMA and resuming are unchanged. The optimizer is not compiled; instead,
    an ``optim_g`` of type ``Adam`` or ``AdamW`` that sets neither ``fused`` nor ``foreach`` gets ``fused:
    true`` (the same update in one kernel for all parameters: PyTorch's default on the CPU is a loop of about
    ten operations per parameter, as many as the compiled ConverseDnCNN step itself runs). Set ``fused`` or
    ``foreach`` to choose yourself.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch

from converse_plugin.errors import OptionError

__all__ = ['TrainingSpeedMixin', 'fuse_optimizer', 'parse_amp', 'parse_compile']

AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}


def parse_amp(value: Any, device: torch.device) -> torch.dtype | None:
    """``train: amp`` -> the autocast dtype, or None when off. Raises OptionError for a bad value."""
    if value in (None, False, 'false', 'False', 'off', 'none', 'fp32'):
        return None
    if value not in AMP_DTYPES:
        raise OptionError(f'train:amp: expected false, bf16 or fp16, got {value!r}')
    if value == 'bf16' and device.type == 'cuda' and not torch.cuda.is_bf16_supported():
        raise OptionError('train:amp: bf16 is not supported by this GPU; use fp16 or false')
    return AMP_DTYPES[value]


COMPILE_MODES = ('default', 'reduce-overhead', 'max-autotune', 'max-autotune-no-cudagraphs')
# inductor settings for CPU training when the option file names no mode; ``options`` entries win. aggressive_fusion
# also fuses loops over the same iteration space that share no input, e.g. the recomputed GELU and the GELU
# backward after each Converse2D (ConverseDnCNN's compiled step ~4% faster, docs/training.md)
CPU_INDUCTOR_OPTIONS = {'aggressive_fusion': True}
COMPILE_KEYS = ('mode', 'fullgraph', 'dynamic', 'backend', 'options')
FUSABLE_OPTIMIZERS = ('Adam', 'AdamW')


def fuse_optimizer(optim_opt: Any) -> bool:
    """Under ``train: compile``: add ``fused: true`` to an Adam/AdamW option block that chooses no
    implementation (``fused``/``foreach`` absent). Returns whether it did."""
    if not isinstance(optim_opt, dict) or optim_opt.get('type') not in FUSABLE_OPTIMIZERS:
        return False
    if 'fused' in optim_opt or 'foreach' in optim_opt:
        return False
    optim_opt['fused'] = True
    return True


def parse_compile(value: Any, device: torch.device | None = None) -> dict | None:
    """``train: compile`` -> keyword arguments for :func:`torch.compile`, or None when off.

    ``true`` (default mode), a mode name (``default``, ``reduce-overhead`` = CUDA graphs for fixed crop
    sizes, ``max-autotune``, ``max-autotune-no-cudagraphs``), or a mapping of torch.compile arguments
    (``mode``, ``fullgraph``, ``dynamic``, ``backend``, ``options``). Modes that capture CUDA graphs need a
    CUDA device: on ``device`` cpu they are refused with a message saying what to use instead. On the CPU with
    inductor and no mode, :data:`CPU_INDUCTOR_OPTIONS` are added to ``options`` (an entry given there wins).
    """
    if value in (None, False, 'false', 'False'):
        return None
    if value is True or value in ('true', 'True'):
        kwargs: dict = {}
    elif isinstance(value, str):
        kwargs = {'mode': value}
    elif isinstance(value, dict):
        kwargs = dict(value)
    else:
        raise OptionError(f'train:compile: expected true, false, a mode ({", ".join(COMPILE_MODES)}) or a mapping '
                          f'of torch.compile arguments ({", ".join(COMPILE_KEYS)}), got {value!r}')
    unknown = sorted(set(map(str, kwargs)) - set(COMPILE_KEYS))
    if unknown:
        raise OptionError(f'train:compile: unknown key(s) {", ".join(unknown)}; torch.compile takes {", ".join(COMPILE_KEYS)}')
    mode = kwargs.get('mode')
    if mode is not None and mode not in COMPILE_MODES:
        raise OptionError(f'train:compile:mode: expected one of {", ".join(COMPILE_MODES)}, got {mode!r}')
    for key in ('fullgraph', 'dynamic'):
        if key in kwargs and kwargs[key] is not None and not isinstance(kwargs[key], bool):
            raise OptionError(f'train:compile:{key}: expected true, false or ~, got {kwargs[key]!r}')
    if 'options' in kwargs and not isinstance(kwargs['options'], dict):
        raise OptionError(f'train:compile:options: expected a mapping, got {kwargs["options"]!r}')
    if 'backend' in kwargs and not isinstance(kwargs['backend'], str):
        raise OptionError(f'train:compile:backend: expected a backend name such as inductor, got {kwargs["backend"]!r}')
    if mode in ('reduce-overhead', 'max-autotune') and device is not None and device.type != 'cuda':
        raise OptionError(f'train:compile:mode {mode!r} captures CUDA graphs, which need a CUDA device; this run is on '
                          f'{device.type}: use mode default or max-autotune-no-cudagraphs')
    if mode is None:
        kwargs.pop('mode', None)
    if (device is not None and device.type == 'cpu' and kwargs.get('backend', 'inductor') == 'inductor'
            and 'mode' not in kwargs):  # torch.compile takes a mode or options, not both
        kwargs['options'] = {**CPU_INDUCTOR_OPTIONS, **(kwargs.get('options') or {})}
    return kwargs


class TrainingSpeedMixin:
    """Adds ``train: amp`` and ``train: compile`` to an SRModel subclass.

    Put it before the model in the bases: ``class M(TrainingSpeedMixin, SRModel)``. With every option
    off, training runs SRModel's own ``optimize_parameters`` unchanged.
    """

    amp_dtype: torch.dtype | None = None
    grad_scaler: Any = None

    def init_training_settings(self) -> None:
        train_opt = self.opt['train']
        self.amp_dtype = parse_amp(train_opt.get('amp', False), self.device)
        compile_kwargs = parse_compile(train_opt.get('compile', False), self.device)
        fused = compile_kwargs is not None and fuse_optimizer(train_opt.get('optim_g'))
        super().init_training_settings()
        if self.amp_dtype is torch.float16:
            self.grad_scaler = torch.amp.GradScaler(self.device.type)
        if compile_kwargs is not None:
            self.get_bare_model(self.net_g).compile(**compile_kwargs)
        from basicsr.utils import get_root_logger
        logger = get_root_logger()
        if self.amp_dtype is not None:
            logger.info(f'Mixed precision: autocast {self.amp_dtype} on {self.device.type}'
                        + (' with GradScaler' if self.grad_scaler is not None else ''))
            if self.amp_dtype is torch.float16 and self.device.type == 'cpu':
                logger.warning('train:amp: fp16 on the CPU is emulated by most CPUs and slower than float32; '
                               'bf16 is the CPU choice')
        if compile_kwargs is not None:
            logger.info(f'torch.compile: net_g compiled with {compile_kwargs or "default arguments"}'
                        + ('; optim_g: fused: true (set fused or foreach under optim_g to choose)' if fused else ''))

    def extra_training_state(self) -> dict:
        """Saved in each ``.state`` file beside the optimizers (PluginModel.save_training_state)."""
        return {'grad_scaler': self.grad_scaler.state_dict()} if self.grad_scaler is not None else {}

    def resume_training(self, resume_state: dict) -> None:
        super().resume_training(resume_state)
        if self.grad_scaler is None:
            return
        if resume_state.get('grad_scaler'):
            self.grad_scaler.load_state_dict(resume_state['grad_scaler'])
        else:
            from basicsr.utils import get_root_logger
            get_root_logger().warning('train:amp fp16: the training state has no GradScaler state (saved without '
                                      'fp16); loss scaling starts again from its initial scale')

    def _pixel_losses(self) -> tuple[torch.Tensor, OrderedDict]:
        """SRModel's losses (pixel, perceptual, style) on ``self.output`` and ``self.gt``."""
        l_total = 0
        loss_dict = OrderedDict()
        if self.cri_pix:
            l_pix = self.cri_pix(self.output, self.gt)
            l_total += l_pix
            loss_dict['l_pix'] = l_pix
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(self.output, self.gt)
            if l_percep is not None:
                l_total += l_percep
                loss_dict['l_percep'] = l_percep
            if l_style is not None:
                l_total += l_style
                loss_dict['l_style'] = l_style
        return l_total, loss_dict

    def optimize_parameters(self, current_iter: int) -> None:
        if self.amp_dtype is None:
            return super().optimize_parameters(current_iter)
        self.optimizer_g.zero_grad()
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype):
            output = self.net_g(self.lq)
        self.output = output.float()  # losses in float32
        l_total, loss_dict = self._pixel_losses()
        if self.grad_scaler is not None:
            self.grad_scaler.scale(l_total).backward()
            self.grad_scaler.step(self.optimizer_g)
            self.grad_scaler.update()
        else:
            l_total.backward()
            self.optimizer_g.step()
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
