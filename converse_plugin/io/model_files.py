"""Build a network and load its weights from a zoo name or a checkpoint file (for infer and export).

``resolve_model('converse_dncnn')`` takes the architecture from the zoo table
(:data:`converse_plugin.zoo.ZOO`) and the verified checkpoint from the zoo directory (``zoo_dir``, else
``$CONVERSE_ZOO_DIR``, else the default cache); ``resolve_model('w.pth', arch='ConverseDnCNN',
arch_kwargs={...})`` builds the named architecture (any in BasicSR's ARCH_REGISTRY) and loads the file
(``.pth`` or ``.safetensors``; a safetensors file that records ``arch``/``arch_kwargs`` needs no ``arch``).
"""
from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ['ZOO_ALIASES', 'LoadedModel', 'resolve_model', 'parse_arch_kwargs', 'model_scale', 'takes_kernel']

# short names accepted on the command line -> zoo entry
ZOO_ALIASES = {'dncnn': 'kair_dncnn_sigma25', 'converse_msrresnet': 'converse_srresnet'}


@dataclass
class LoadedModel:
    """A network in eval mode with what the tools need to know about it."""
    net: nn.Module
    arch: str
    arch_kwargs: dict[str, Any]
    checkpoint: str
    name: str
    trained_sigma: float | None = None  # noise level a zoo denoiser was trained for
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return channels_of(self.net, self.arch_kwargs, 'num_in_ch')

    @property
    def out_channels(self) -> int:
        return channels_of(self.net, self.arch_kwargs, 'num_out_ch')


def channels_of(net: nn.Module, kwargs: dict, key: str) -> int:
    if key in kwargs:
        return int(kwargs[key])
    param = inspect.signature(type(net)).parameters.get(key)
    if param is not None and isinstance(param.default, int):
        return param.default
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f'cannot tell {key} of {type(net).__name__}; give it in --arch-kwargs')
    return convs[0].in_channels if key == 'num_in_ch' else convs[-1].out_channels


def takes_kernel(net: nn.Module) -> bool:
    """True for networks whose forward takes the blur kernel (ConverseUSRNet)."""
    return 'kernel' in inspect.signature(net.forward).parameters


def model_scale(net: nn.Module) -> int | None:
    """The fixed upscaling factor of ``net`` (``upscale``), 1 for same-size networks, None when the caller
    chooses it (a ``sf`` argument of forward, as in ConverseUSRNet)."""
    if 'sf' in inspect.signature(net.forward).parameters:
        return None
    return int(getattr(net, 'upscale', 1))


def parse_arch_kwargs(text: str | None) -> dict[str, Any]:
    """``--arch-kwargs`` JSON -> dict (a clear error names the flag and what was expected)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f'--arch-kwargs: not valid JSON ({err.msg} at position {err.pos}): {text!r}') from None
    if not isinstance(value, dict):
        raise ValueError(f'--arch-kwargs: expected a JSON object such as {{"num_feat": 64}}, got {text!r}')
    return value


def _zoo_name(model: str) -> str | None:
    try:
        from converse_plugin import zoo
    except ImportError:  # pragma: no cover
        return None
    name = ZOO_ALIASES.get(model, model)
    name = name[len(zoo.ZOO_PREFIX):] if name.startswith(zoo.ZOO_PREFIX) else name
    return name if name in zoo.ZOO else None


def build_arch(arch: str, kwargs: dict[str, Any]) -> nn.Module:
    """The architecture ``arch`` built with ``kwargs`` (one of BasicSR's ARCH_REGISTRY names)."""
    import converse_plugin  # noqa: F401  (registers the architectures)
    from converse_plugin.registries import build_network
    return build_network({'type': arch, **kwargs}, '--arch')


def load_weights(net: nn.Module, path: str) -> None:
    """Load ``path`` strictly into ``net``; a mismatch lists the missing/unexpected/mis-shaped keys."""
    from converse_plugin.io.checkpoint import check_state_dict, load_state_dict_file
    sd = load_state_dict_file(path)
    check_state_dict(type(net).__name__, net.state_dict(), sd, path, strict=True,
                     hint='Check --arch and --arch-kwargs against the checkpoint.')
    net.load_state_dict(sd, strict=True)


def resolve_model(model: str, arch: str | None = None, arch_kwargs: dict[str, Any] | None = None,
                  zoo_dir: str | None = None) -> LoadedModel:
    """The network named by ``model`` (zoo name or checkpoint file), weights loaded, in eval mode.

    Raises:
        ValueError / FileNotFoundError (or the zoo's ZooError): unknown name, missing file, no ``arch`` for
            a checkpoint file, or weights that do not fit the architecture; each message says which.
    """
    arch_kwargs = dict(arch_kwargs or {})
    name = _zoo_name(model) if not os.path.isfile(model) else None
    trained_sigma = None
    if name is not None:
        from converse_plugin import zoo
        entry = zoo.ZOO[name]
        checkpoint = str(zoo.checkpoint_path(name, zoo_dir))
        net_opt = dict(entry.network_g)
        if arch and arch != net_opt['type']:
            raise ValueError(f'--arch {arch} does not match the zoo model {name} ({net_opt["type"]})')
        arch = net_opt.pop('type')
        arch_kwargs = {**net_opt, **arch_kwargs}
        if 'denois' in entry.task:
            trained_sigma = entry.test_dataset.get('sigma')
    else:
        if not os.path.isfile(model):
            known = ''
            try:
                from converse_plugin import zoo
                known = f'; zoo names: {", ".join([*zoo.ZOO, *ZOO_ALIASES])}'
            except ImportError:  # pragma: no cover
                pass
            raise FileNotFoundError(f'--model {model!r} is neither a zoo model name nor a checkpoint file{known}')
        checkpoint = model
        from converse_plugin.io.checkpoint import is_safetensors, read_safetensors_metadata
        if is_safetensors(model):
            meta = read_safetensors_metadata(model)
            arch = arch or meta.get('arch') or None
            if not arch_kwargs and meta.get('arch_kwargs'):
                arch_kwargs = json.loads(meta['arch_kwargs'])
        if not arch:
            raise ValueError(f'--model {model} is a checkpoint file: name its architecture with --arch '
                             '(e.g. --arch ConverseDnCNN --arch-kwargs \'{"num_feat": 64}\')')
        name = os.path.splitext(os.path.basename(model))[0]
    net = build_arch(arch, arch_kwargs)
    load_weights(net, checkpoint)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return LoadedModel(net, arch, arch_kwargs, checkpoint, name, trained_sigma)


def add_model_arguments(parser) -> None:
    """The ``--model``, ``--arch``, ``--arch-kwargs`` and ``--zoo-dir`` options of ``basicsr infer`` / ``export``."""
    parser.add_argument('--model', required=True,
                        help='zoo name (e.g. converse_dncnn) or checkpoint file (.pth/.safetensors)')
    parser.add_argument('--arch', default=None, help='architecture of a checkpoint file (e.g. ConverseDnCNN)')
    parser.add_argument('--arch-kwargs', default=None, metavar='JSON', help='its constructor arguments, as JSON')
    parser.add_argument('--zoo-dir', default=None, help='folder with the zoo checkpoints (default: $CONVERSE_ZOO_DIR)')
