"""ConverseNets in spandrel, the model loader behind chaiNNer, ComfyUI and traiNNer-redux.

:func:`install` adds ConverseDnCNN, ConverseMSRResNet, ConverseNet and ConverseUSRNet to spandrel's
``MAIN_REGISTRY`` (or a registry you pass). ``spandrel.ModelLoader().load_from_file(path)`` then detects
a ConverseNet state dict (released file, ``basicsr train``'s ``{'params', 'params_ema'}`` file, or a
``.safetensors`` export) and returns an ``ImageModelDescriptor`` around the plugin's own model class.

Hyperparameters are read from tensor shapes and key counts (channels, ``num_feat``, ``num_block``, kernel
sizes, the gates, the number of upsampling stages). What the tensors cannot tell is taken from the
architecture's defaults (those of the released models) unless given to the ``*Arch`` constructor:

- every arch: ``padding`` (default ``kernel_size - 1``, as in all released models), ``padding_mode``, ``eps``;
- ConverseDnCNN: ``residual``; ConverseNet: ``num_iter`` (the prior is shared: any count has the same tensors);
- ConverseMSRResNet: ``up_padding``, ``up_eps``, and ``upscale`` when there is one upsampling stage
  (x2 or x3 look the same; x2 is assumed);
- ConverseUSRNet: ``data_eps``.

ConverseUSRNet needs a blur kernel beside the image; a spandrel descriptor takes one image. Loading it
through ``ModelLoader`` raises :class:`ConverseSpandrelError` that says so; :func:`load_usrnet` builds a
descriptor whose model has one kernel (and scale) fixed, for callers who know the blur.

Only the ``'converse'`` operator is detected (not the paper's Conv-/ConvT- ablation checkpoints).
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

try:
    from spandrel import (MAIN_REGISTRY, ArchRegistry, ArchSupport, Architecture, ImageModelDescriptor,
                          ModelLoader, ModelTiling, SizeRequirements, StateDict, UnsupportedModelError,
                          canonicalize_state_dict)
    from spandrel.util import KeyCondition, get_seq_len
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("converse_plugin.integrations.spandrel needs spandrel: pip install 'converse-plugin[spandrel]' "
                      f'(spandrel==0.4.2) ({err})') from err

from converse_plugin.archs import ConverseDnCNN, ConverseMSRResNet, ConverseNet, ConverseUSRNet
from converse_plugin.ops import Converse2D
from converse_plugin.errors import CheckpointError

__all__ = ['install', 'load_usrnet', 'ConverseSpandrelError', 'ConverseDnCNNArch', 'ConverseMSRResNetArch',
           'ConverseNetArch', 'ConverseUSRNetArch', 'FixedKernelUSRNet', 'ARCHITECTURES']


class ConverseSpandrelError(CheckpointError, UnsupportedModelError):
    """A state dict detected as a ConverseNet that cannot be loaded as a single-image spandrel model
    (tensors of unexpected shapes, or a ConverseUSRNet, which needs a blur kernel). Both a
    ``ValueError`` (the plugin's ``CheckpointError``) and spandrel's ``UnsupportedModelError``."""


# ----------------------------------------------------------------------------------------------------
# State-dict inspection
# ----------------------------------------------------------------------------------------------------
def _shape(sd: Mapping[str, Any], key: str) -> tuple[int, ...] | None:
    value = sd.get(key)
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


_BLOCK_KEYS = ('conv1.0.weight', 'conv1.0.bias', 'conv1.1.weight', 'conv1.1.bias', 'conv1.5.weight',
               'conv1.5.bias', 'conv2.0.weight', 'conv2.0.bias', 'conv2.1.weight', 'conv2.3.weight')


def _is_converse_block(sd: Mapping[str, Any], prefix: str) -> bool:
    """Whether ``prefix.*`` holds a ConverseBlock (spec §2) with a Converse2D operator: its LayerNorm /
    1x1 keys, and ``conv1.3`` with weight (1, 2C, k, k) and bias (1, 2C, 1, 1), a shape no Conv2d has."""
    if not all(f'{prefix}.{k}' in sd for k in _BLOCK_KEYS):
        return False
    weight, bias = _shape(sd, f'{prefix}.conv1.3.weight'), _shape(sd, f'{prefix}.conv1.3.bias')
    expand = _shape(sd, f'{prefix}.conv1.1.weight')  # (2C, C, 1, 1)
    if weight is None or bias is None or expand is None or len(weight) != 4 or len(expand) != 4:
        return False
    hidden = expand[0]
    return weight[0] == 1 and weight[1] == hidden and weight[2] == weight[3] and bias == (1, hidden, 1, 1)


def _is_converse2d(sd: Mapping[str, Any], prefix: str) -> bool:
    weight, bias = _shape(sd, f'{prefix}.weight'), _shape(sd, f'{prefix}.bias')
    return (weight is not None and len(weight) == 4 and weight[0] == 1 and weight[2] == weight[3]
            and bias == (1, weight[1], 1, 1))


def _block_kernel_size(sd: Mapping[str, Any], prefix: str) -> int:
    return int(sd[f'{prefix}.conv1.3.weight'].shape[-1])


def _size_requirements(model: nn.Module) -> SizeRequirements:
    """The smallest input side every Converse2D can pad: 'circular' needs side >= p, 'reflect' p + 1,
    'replicate' and 'zeros' nothing. Conservative for operators that run after an upsampling stage."""
    minimum = 0
    for module in model.modules():
        if isinstance(module, Converse2D) and module.padding:
            if module.padding_mode == 'circular':
                minimum = max(minimum, module.padding)
            elif module.padding_mode == 'reflect':
                minimum = max(minimum, module.padding + 1)
    return SizeRequirements(minimum=minimum)


def _check_matches(name: str, model: nn.Module, sd: Mapping[str, Any], hyper: Mapping[str, Any]) -> None:
    """Raise ConverseSpandrelError naming the keys that do not fit ``model`` (instead of torch's
    load_state_dict traceback)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f'{k} {_shape(sd, k)} (expected {tuple(v.shape)})' for k, v in expected.items()
             if k in sd and _shape(sd, k) != tuple(v.shape)]
    if not (missing or unexpected or wrong):
        return
    parts = []
    for label, items in (('missing', missing), ('unexpected', unexpected), ('wrong shape', wrong)):
        if items:
            more = f' and {len(items) - 5} more' if len(items) > 5 else ''
            parts.append(f'{label}: {", ".join(items[:5])}{more}')
    raise ConverseSpandrelError(f'{name} state dict does not fit the network its tensors describe '
                                f'({_format(hyper)}): {"; ".join(parts)}')


def _format(hyper: Mapping[str, Any]) -> str:
    return ', '.join(f'{k}={v!r}' for k, v in hyper.items())


# ----------------------------------------------------------------------------------------------------
# Architectures
# ----------------------------------------------------------------------------------------------------
class _ConverseArch(Architecture[nn.Module]):
    """Shared loading: read hyperparameters from the tensors, add the ``fixed`` ones (constructor
    overrides, else the released defaults), build the plugin's model, check every key and shape."""

    model_class: type[nn.Module]
    #: hyperparameters that no tensor records, with their defaults (None: derived, see ``_defaults``)
    fixed_defaults: dict[str, Any] = {}

    def __init__(self, detect, **fixed: Any) -> None:
        unknown = sorted(set(fixed) - set(self.fixed_defaults))
        if unknown:
            raise TypeError(f'{type(self).__name__}: {", ".join(unknown)} cannot be set; the hyperparameters '
                            f'not read from tensors are {", ".join(self.fixed_defaults)}')
        name = self.model_class.__name__
        super().__init__(id=name, name=name, detect=detect)
        self.fixed = {**self.fixed_defaults, **fixed}

    def read_hyperparameters(self, state_dict: StateDict) -> dict[str, Any]:
        """The constructor arguments that the tensors determine."""
        raise NotImplementedError

    def _defaults(self, hyper: dict[str, Any]) -> dict[str, Any]:
        fixed = dict(self.fixed)
        if 'padding' in fixed and fixed['padding'] is None:
            # ConverseUSRNet's kernel_size is the blur kernel's; its blocks use prior_kernel_size
            fixed['padding'] = hyper.get('prior_kernel_size', hyper.get('kernel_size')) - 1
        return fixed

    def hyperparameters(self, state_dict: StateDict) -> dict[str, Any]:
        """All constructor arguments of the model class for this state dict (tensor-derived + fixed).

        Raises ConverseSpandrelError when the tensors do not have the layout of this architecture."""
        name = self.model_class.__name__
        try:
            hyper = self.read_hyperparameters(state_dict)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:
            raise ConverseSpandrelError(f'{name} state dict: cannot read the hyperparameters from its tensors '
                                        f'({type(err).__name__}: {err})') from None
        return {**hyper, **self._defaults(hyper)}

    def build(self, state_dict: StateDict, model_class: type[nn.Module] | None = None,
              **extra: Any) -> tuple[nn.Module, dict[str, Any]]:
        """The model that ``state_dict`` fits (random weights; ``model_class(**extra, **hyperparameters)``,
        by default the architecture's class), and its hyperparameters."""
        name = self.model_class.__name__
        hyper = self.hyperparameters(state_dict)
        try:
            model = (model_class or self.model_class)(**extra, **hyper)
        except ValueError as err:
            raise ConverseSpandrelError(f'{name} ({_format(hyper)}): {err}') from None
        _check_matches(name, model, state_dict, hyper)
        return model, hyper

    def _descriptor(self, model: nn.Module, state_dict: StateDict, hyper: dict[str, Any], *, scale: int,
                    tags: list[str]) -> ImageModelDescriptor[nn.Module]:
        return ImageModelDescriptor(
            model, state_dict, architecture=self, purpose='SR' if scale > 1 else 'Restoration', tags=tags,
            # Converse2D computes in float32 and returns float32, so a model cast to fp16/bf16 fails at
            # the next layer (dtype mismatch): neither is supported (see the README's limitations)
            supports_half=False, supports_bfloat16=False, scale=scale,
            input_channels=hyper['num_in_ch'], output_channels=hyper['num_out_ch'],
            size_requirements=_size_requirements(model), tiling=ModelTiling.SUPPORTED)

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[nn.Module]:
        model, hyper = self.build(state_dict)
        return self._descriptor(model, state_dict, hyper, scale=1, tags=self.tags(hyper))

    @staticmethod
    def tags(hyper: Mapping[str, Any]) -> list[str]:
        tags = [f'{hyper["num_feat"]}nf', f'{hyper["num_block"]}nb']
        if 'kernel_size' in hyper:
            tags.append(f'k{hyper["kernel_size"]}')
        return tags


class ConverseDnCNNArch(_ConverseArch):
    """ConverseDnCNN: keys m_head.0.*, m_body.{i}.* (ConverseBlocks), m_tail.0.*."""

    model_class = ConverseDnCNN
    fixed_defaults = {'padding': None, 'padding_mode': 'circular', 'eps': 1e-5, 'residual': False}

    def __init__(self, **fixed: Any) -> None:
        keys = KeyCondition.has_all('m_head.0.weight', 'm_head.0.bias', 'm_tail.0.weight', 'm_tail.0.bias')
        super().__init__(lambda sd: keys(sd) and _is_converse_block(sd, 'm_body.0'), **fixed)

    def read_hyperparameters(self, state_dict: StateDict) -> dict[str, Any]:
        head, tail = state_dict['m_head.0.weight'].shape, state_dict['m_tail.0.weight'].shape
        return {'num_in_ch': head[1], 'num_out_ch': tail[0], 'num_feat': head[0],
                'num_block': get_seq_len(state_dict, 'm_body'),
                'kernel_size': _block_kernel_size(state_dict, 'm_body.0'),
                'gated': 'm_body.0.alpha1' in state_dict}

    @staticmethod
    def tags(hyper: Mapping[str, Any]) -> list[str]:
        return _ConverseArch.tags(hyper) + (['gated'] if hyper['gated'] else [])


class ConverseMSRResNetArch(_ConverseArch):
    """ConverseMSRResNet: conv_first, conv_body.{i}, upconv{i} + up{i} per x2/x3 stage, conv_hres,
    conv_last (no bias)."""

    model_class = ConverseMSRResNet
    fixed_defaults = {'upscale': None, 'padding': None, 'padding_mode': 'replicate', 'eps': 1e-5,
                      'up_padding': 2, 'up_eps': 1e-3}
    #: upscale -> number of Converse2D upsampling stages (x2 and x3 both have one: the tensors cannot tell)
    STAGES_OF = {1: 0, 2: 1, 3: 1, 4: 2, 8: 3}
    #: number of stages -> the upscale assumed
    UPSCALE_OF = {0: 1, 1: 2, 2: 4, 3: 8}

    def __init__(self, **fixed: Any) -> None:
        keys = KeyCondition.has_all('conv_first.weight', 'conv_first.bias', 'conv_last.weight')
        super().__init__(lambda sd: (keys(sd) and 'conv_last.bias' not in sd and _is_converse_block(sd, 'conv_hres')
                                     and ('up1.weight' not in sd or (_is_converse2d(sd, 'up1')
                                                                     and _is_converse_block(sd, 'upconv1')))),
                         **fixed)

    def read_hyperparameters(self, state_dict: StateDict) -> dict[str, Any]:
        first = state_dict['conv_first.weight'].shape
        stages = sum(1 for i in range(1, 10) if f'up{i}.weight' in state_dict)
        hyper = {'num_in_ch': first[1], 'num_out_ch': state_dict['conv_last.weight'].shape[0],
                 'num_feat': first[0], 'num_block': get_seq_len(state_dict, 'conv_body'),
                 'kernel_size': _block_kernel_size(state_dict, 'conv_hres')}
        if stages not in self.UPSCALE_OF:
            raise ValueError(f'{stages} upsampling stages (up1 ... up{stages}); expected at most 3')
        hyper['upscale'] = self.UPSCALE_OF[stages]
        if stages:
            hyper['up_kernel_size'] = int(state_dict['up1.weight'].shape[-1])
        return hyper

    def _defaults(self, hyper: dict[str, Any]) -> dict[str, Any]:
        fixed = super()._defaults(hyper)
        if fixed['upscale'] is None:
            fixed['upscale'] = hyper['upscale']
        elif self.STAGES_OF.get(fixed['upscale']) != self.STAGES_OF[hyper['upscale']]:
            raise ConverseSpandrelError(f'ConverseMSRResNet state dict: upscale={fixed["upscale"]!r} does not fit '
                                        f'its {self.STAGES_OF[hyper["upscale"]]} upsampling stage(s)')
        return fixed

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[nn.Module]:
        model, hyper = self.build(state_dict)
        return self._descriptor(model, state_dict, hyper, scale=hyper['upscale'],
                                tags=[f'{hyper["upscale"]}x', *self.tags(hyper)])


class ConverseNetArch(_ConverseArch):
    """ConverseNet (blind deblurring): conv1, p.m_body.{i} (plain ConverseBlocks), conv2; no data step."""

    model_class = ConverseNet
    fixed_defaults = {'num_iter': 5, 'padding': None, 'padding_mode': 'circular', 'eps': 1e-5}

    def __init__(self, **fixed: Any) -> None:
        keys = KeyCondition.has_all('conv1.weight', 'conv1.bias', 'conv2.weight', 'conv2.bias')
        super().__init__(lambda sd: (keys(sd) and 'd.alpha' not in sd and 'kernelnet.fc1.weight' not in sd
                                     and 'p.m_body.0.alpha1' not in sd and _is_converse_block(sd, 'p.m_body.0')),
                         **fixed)

    def read_hyperparameters(self, state_dict: StateDict) -> dict[str, Any]:
        first = state_dict['conv1.weight'].shape
        return {'num_in_ch': first[1], 'num_out_ch': state_dict['conv2.weight'].shape[0], 'num_feat': first[0],
                'num_block': get_seq_len(state_dict, 'p.m_body'),
                'kernel_size': _block_kernel_size(state_dict, 'p.m_body.0')}

    @staticmethod
    def tags(hyper: Mapping[str, Any]) -> list[str]:
        return _ConverseArch.tags(hyper) + [f'{hyper["num_iter"]}it']


class FixedKernelUSRNet(ConverseUSRNet):
    """ConverseUSRNet with one blur kernel and scale fixed at construction, so it maps one image to one
    image. ``fixed_kernel`` is a non-persistent buffer (the state dict keys are ConverseUSRNet's).

    Shapes: (B, num_in_ch, H, W) -> (B, num_out_ch, sf*H, sf*W).
    """

    def __init__(self, kernel: torch.Tensor, sf: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        k = self.kernel_size
        kernel = torch.as_tensor(kernel, dtype=torch.float32)
        if kernel.numel() != k * k:
            raise ValueError(f'this ConverseUSRNet takes a {k}x{k} blur kernel, got shape {tuple(kernel.shape)}')
        if not isinstance(sf, int) or sf < 1:
            raise ValueError(f'sf must be an integer >= 1, got {sf!r}')
        self.sf = sf
        self.register_buffer('fixed_kernel', kernel.reshape(k, k).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, self.fixed_kernel, self.sf)


class ConverseUSRNetArch(_ConverseArch):
    """ConverseUSRNet (non-blind deblurring): detected so that the user gets a clear message, but
    :meth:`load` refuses (a spandrel descriptor takes one image, this network also needs the blur
    kernel). :func:`load_usrnet` loads it with a fixed kernel."""

    model_class = ConverseUSRNet
    fixed_defaults = {'padding': None, 'padding_mode': 'circular', 'eps': 1e-5, 'data_eps': 1e-3}

    def __init__(self, **fixed: Any) -> None:
        keys = KeyCondition.has_all('d.alpha', 'conv1.weight', 'conv2.weight', 'kernelnet.fc1.weight',
                                    'kernelnet.fc3.weight', 'convs.0.weight')
        super().__init__(lambda sd: keys(sd) and _is_converse_block(sd, 'p.m_body.0'), **fixed)

    def read_hyperparameters(self, state_dict: StateDict) -> dict[str, Any]:
        first = state_dict['conv1.weight'].shape
        fc1, fc3 = state_dict['kernelnet.fc1.weight'].shape, state_dict['kernelnet.fc3.weight'].shape
        kernel_size = math.isqrt(fc1[1])
        if kernel_size * kernel_size != fc1[1]:
            raise ValueError(f'kernelnet.fc1.weight {tuple(fc1)}: {fc1[1]} inputs is not a square kernel')
        return {'num_in_ch': first[1], 'num_out_ch': state_dict['conv2.weight'].shape[0], 'num_feat': first[0],
                'num_block': get_seq_len(state_dict, 'p.m_body'), 'num_iter': get_seq_len(state_dict, 'convs'),
                'kernel_size': kernel_size, 'kernel_feat': fc3[0] // fc1[1], 'kernel_hidden': fc1[0],
                'prior_kernel_size': _block_kernel_size(state_dict, 'p.m_body.0')}

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[nn.Module]:
        raise ConverseSpandrelError(
            'ConverseUSRNet (non-blind deblurring) needs the blur kernel of each image beside the image, and a '
            'spandrel model takes only the image, so it cannot be loaded as a spandrel model. Use '
            'converse_plugin.integrations.spandrel.load_usrnet(path, kernel) for a model with one fixed kernel, '
            'or the plugin itself (basicsr infer / ConverseUSRNet(x, kernel)).')

    def load_with_kernel(self, state_dict: StateDict, kernel: torch.Tensor,
                         sf: int = 1) -> ImageModelDescriptor[nn.Module]:
        """A descriptor whose model is a :class:`FixedKernelUSRNet` (``kernel`` k x k, scale ``sf``)."""
        model, hyper = self.build(state_dict, FixedKernelUSRNet, kernel=kernel, sf=sf)
        tags = [*self.tags(hyper), f'{hyper["num_iter"]}it', 'fixed-kernel']
        return self._descriptor(model, state_dict, hyper, scale=sf, tags=tags)


ARCHITECTURES: tuple[ArchSupport, ...] = (
    # spandrel's SCUNet detector only asks for m_head.0.weight and m_tail.0.weight: it claims
    # ConverseDnCNN files unless ConverseDnCNN is tried first (its own detector is much stricter)
    ArchSupport.from_architecture(ConverseDnCNNArch(), before=('SCUNet', )),
    ArchSupport.from_architecture(ConverseMSRResNetArch()),
    ArchSupport.from_architecture(ConverseNetArch()),
    ArchSupport.from_architecture(ConverseUSRNetArch()),
)
"""The registry entries :func:`install` adds (ids ConverseDnCNN, ConverseMSRResNet, ConverseNet, ConverseUSRNet)."""


def install(registry: ArchRegistry | None = None) -> list[ArchSupport]:
    """Add the ConverseNet architectures to ``registry`` (default: ``spandrel.MAIN_REGISTRY``, used by
    every ``spandrel.ModelLoader()``). Idempotent: returns the entries added, ``[]`` when all were there."""
    registry = MAIN_REGISTRY if registry is None else registry
    return registry.add(*ARCHITECTURES, ignore_duplicates=True)


def load_usrnet(source: str | os.PathLike | StateDict, kernel: torch.Tensor, sf: int = 1,
                device: str | torch.device | None = None, **fixed: Any) -> ImageModelDescriptor[nn.Module]:
    """Load a ConverseUSRNet as a single-image spandrel model whose blur ``kernel`` (k x k, e.g. 7 x 7,
    summing to 1 like the training kernels) and scale ``sf`` are fixed. ``source``: a file spandrel can
    read (.pth, .safetensors; BasicSR's params/params_ema layout too) or a state dict. ``fixed``: the
    hyperparameters not read from tensors (padding, padding_mode, eps, data_eps)."""
    loader = ModelLoader(device=device)
    if isinstance(source, Mapping):
        state_dict, where = canonicalize_state_dict(dict(source)), 'the state dict'
    else:
        state_dict, where = loader.load_state_dict_from_file(source), str(source)
    arch = ConverseUSRNetArch(**fixed)
    if not arch.detect(state_dict):
        raise ConverseSpandrelError(f'{where} is not a ConverseUSRNet checkpoint (expected d.alpha, kernelnet.*, '
                                    'convs.*, p.m_body.* with Converse2D blocks)')
    return arch.load_with_kernel(state_dict, kernel, sf).to(loader.device)
