"""Put reverse convolution into an existing architecture: :func:`convert_to_converse`.

The rules (each can be switched off):

- ``upsample``: a ``Conv2d(C_in, C * r**2)`` whose output goes straight into an ``nn.PixelShuffle(r)``
  becomes a :class:`ConverseUpsampler` (the same conv with C outputs, then ``Converse2D(C, scale=r)``)
  and the PixelShuffle ``nn.Identity``; an ``nn.ConvTranspose2d`` with stride s that upsamples by exactly
  s becomes a 1x1 conv (none if depthwise) then ``Converse2D(C_out, scale=s)``. x4 stages written as two
  x2 stages stay two stages. Defaults are those of the released x4 model (k = 2, p = 2, 'replicate',
  eps = 1e-3).
- ``depthwise``: a depthwise ``Conv2d(C, C, k, groups=C)`` with stride 1 and 'same' output becomes
  ``Converse2D(C, k, scale=1)``.
- ``resblocks``: a residual block whose class name is in ``resblock_types`` (BasicSR's
  ``ResidualBlockNoBN`` by default) and keeps its input shape becomes a ``ConverseBlock(C)``.

What calls what is found by running the network once on a small input with forward hooks, so stages
written as attributes used in ``forward`` (MSRResNet's ``upconv1`` + ``self.pixel_shuffle``) are found as
well as ``nn.Sequential`` ones (EDSR, RCAN, SwinIR ``Upsample``). Unchanged layers keep their module
paths, so an original checkpoint loads into the converted network path by path (``strict=False``).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from converse_plugin.archs.converse_block import ConverseBlock
from converse_plugin.archs.converse_upsampler import ConverseUpsampler
from converse_plugin.ops import Converse2D
from converse_plugin.ops.functional import PADDING_MODES

__all__ = ['ConvertOptions', 'Replacement', 'ConversionReport', 'LoadReport', 'convert_to_converse']

TRACE_SIZE = 16  # default spatial size of the tracing input


@dataclass(frozen=True)
class ConvertOptions:
    """The conversion rules and their layer settings (the keys of a YAML ``convert:`` block)."""

    upsample: bool = True
    upsample_kernel_size: int = 2
    upsample_padding: int = 2
    upsample_padding_mode: str = 'replicate'
    upsample_eps: float = 1e-3
    depthwise: bool = False
    depthwise_padding: int | None = None  # None: kernel_size - 1 (the authors' recommendation)
    depthwise_padding_mode: str = 'circular'
    depthwise_eps: float = 1e-5
    resblocks: bool = False
    resblock_types: tuple[str, ...] = ('ResidualBlockNoBN', )
    resblock_kernel_size: int = 5
    resblock_padding: int = 4
    resblock_padding_mode: str = 'replicate'
    resblock_eps: float = 1e-5
    exclude: tuple[str, ...] = ()  # module paths (and everything under them) left as they are
    input_shape: tuple[int, int, int] | None = None  # (C, H, W) of the tracing input; None: (C_in, 16, 16)

    @classmethod
    def from_dict(cls, options: Mapping[str, Any] | None, where: str = 'convert') -> ConvertOptions:
        """Validated options from a mapping; ``where`` (e.g. 'network_g.convert') prefixes error messages.

        Raises:
            ValueError: an unknown key or a value of the wrong kind; the message names the key.
        """
        options = dict(options or {})
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise ValueError(f'{where}: unknown option(s) {unknown}; expected some of {names}')
        for key in ('resblock_types', 'exclude', 'input_shape'):
            if isinstance(options.get(key), str):
                options[key] = [options[key]]
            if options.get(key) is not None:
                options[key] = tuple(options[key])
        opts = cls(**options)
        opts._validate(where)
        return opts

    def _validate(self, where: str) -> None:
        def fail(key: str, expected: str) -> None:
            raise ValueError(f'{where}.{key}: expected {expected}, got {getattr(self, key)!r}')

        for key in ('upsample', 'depthwise', 'resblocks'):
            if not isinstance(getattr(self, key), bool):
                fail(key, 'true or false')
        for key in ('upsample_kernel_size', 'resblock_kernel_size'):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                fail(key, 'an integer >= 1')
        for key in ('upsample_padding', 'resblock_padding', 'depthwise_padding'):
            value = getattr(self, key)
            if value is None and key == 'depthwise_padding':
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                fail(key, 'an integer >= 0')
        for key in ('upsample_padding_mode', 'depthwise_padding_mode', 'resblock_padding_mode'):
            if getattr(self, key) not in PADDING_MODES:
                fail(key, f'one of {PADDING_MODES}')
        for key in ('upsample_eps', 'depthwise_eps', 'resblock_eps'):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                fail(key, 'a number > 0')
        if not all(isinstance(t, str) for t in self.resblock_types):
            fail('resblock_types', 'a list of class names')
        if not all(isinstance(p, str) for p in self.exclude):
            fail('exclude', 'a list of module paths')
        if self.input_shape is not None and (len(self.input_shape) != 3 or not all(
                isinstance(v, int) and v >= 1 for v in self.input_shape)):
            fail('input_shape', 'three positive integers [C, H, W]')
        if not (self.upsample or self.depthwise or self.resblocks):
            raise ValueError(f'{where}: every rule is off (upsample, depthwise and resblocks are all false); '
                             'nothing would be converted')


@dataclass(frozen=True)
class Replacement:
    """One replaced module: its path (plus other paths of the same shared module), the rule, one-line
    descriptions of the old and new module, and their parameter counts."""

    path: str
    rule: str  # 'upsample' | 'pixel_shuffle' | 'transposed' | 'depthwise' | 'resblock'
    old: str
    new: str
    params_before: int
    params_after: int
    aliases: tuple[str, ...] = ()

    def line(self) -> str:
        delta = self.params_after - self.params_before
        return (f'{self.path} [{self.rule}]: {self.old} -> {self.new}; parameters {self.params_before:,} -> '
                f'{self.params_after:,} ({delta:+,})')


@dataclass
class ConversionReport:
    """What :func:`convert_to_converse` did.

    ``removed_keys``: state-dict keys of the original network that the converted one no longer has (an
    original checkpoint's values for them are not used); ``added_keys``: keys only the converted network
    has (freshly initialised when an original checkpoint is loaded); ``skipped``: (path, reason) for
    candidates that were left as they were.
    """

    network: str
    replacements: list[Replacement] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    removed_keys: list[str] = field(default_factory=list)
    added_keys: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A multi-line, human-readable account (what the YAML path logs)."""
        delta = self.params_after - self.params_before
        lines = [f'Converted {self.network} to reverse convolution: {len(self.replacements)} module(s) replaced, '
                 f'parameters {self.params_before:,} -> {self.params_after:,} ({delta:+,})']
        lines += [f'  {r.line()}' for r in self.replacements]
        lines += [f'  left as is: {path}: {reason}' for path, reason in self.skipped]
        if self.removed_keys:
            lines.append(f'  keys of the original no longer present (not loaded from an original checkpoint): '
                         f'{", ".join(self.removed_keys)}')
        if self.added_keys:
            lines.append(f'  new keys (initialised, not in an original checkpoint): {", ".join(self.added_keys)}')
        return '\n'.join(lines)


@dataclass
class LoadReport:
    """What a ``load_state_dict`` into a converted network used: ``loaded`` keys took the checkpoint's
    values, ``initialised`` keys were not in it (they keep their initialisation), ``unused`` checkpoint keys
    match nothing in the network (BasicSR marks size-mismatched ones with a ``.ignore`` suffix)."""

    loaded: list[str]
    initialised: list[str]
    unused: list[str]

    def summary(self) -> str:
        total = len(self.loaded) + len(self.initialised)
        lines = [f'Loading into the converted network: {len(self.loaded)} of {total} tensors loaded, '
                 f'{len(self.initialised)} initialised, {len(self.unused)} checkpoint key(s) unused']
        if self.initialised:
            lines.append(f'  initialised (not in the checkpoint): {", ".join(self.initialised)}')
        if self.unused:
            lines.append(f'  unused checkpoint keys: {", ".join(self.unused)}')
        return '\n'.join(lines)


def basicsr_logger() -> logging.Logger:
    """BasicSR's root logger ('basicsr'), without initialising it: ``get_root_logger()`` called before the
    training pipeline sets the logger up (e.g. while options are validated) would stop it from ever
    writing its log file. Before that, INFO messages go nowhere."""
    return logging.getLogger('basicsr')


def _log_load_report(module: nn.Module, incompatible: Any) -> None:
    """``load_state_dict`` post-hook of converted networks: log (and keep) a :class:`LoadReport`."""
    missing = set(incompatible.missing_keys)
    report = LoadReport(loaded=[k for k in module.state_dict() if k not in missing],
                        initialised=sorted(missing), unused=sorted(incompatible.unexpected_keys))
    module.converse_load_report = report
    if report.initialised or report.unused:
        basicsr_logger().info(report.summary())


# ---------------------------------------------------------------------------------------------- tracing


@dataclass
class _Call:
    """One call of a module during the tracing forward (tensors kept alive so their ids stay unique)."""
    inp: torch.Tensor | None
    inp_version: int
    out: torch.Tensor | None
    out_version: int


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return None


def _tensor_shapes(value: Any) -> list[tuple[int, ...]]:
    if isinstance(value, torch.Tensor):
        return [tuple(value.shape)]
    if isinstance(value, (tuple, list)):
        return [s for v in value for s in _tensor_shapes(v)]
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _tensor_shapes(v)]
    return []


def _trace_input(model: nn.Module, opts: ConvertOptions) -> torch.Tensor:
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device('cpu')
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    if opts.input_shape is not None:
        shape = opts.input_shape
    else:
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if first is None:
            raise ValueError(f'convert: {type(model).__name__} has no Conv2d to infer its input channels from; '
                             'set convert.input_shape: [C, H, W]')
        shape = (first.in_channels, TRACE_SIZE, TRACE_SIZE)
    gen = torch.Generator().manual_seed(0)
    return torch.rand(1, *shape, generator=gen).to(device=device, dtype=dtype)


def _run(model: nn.Module, x: torch.Tensor) -> Any:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():  # not inference_mode: the tensors' version counters are needed
            return model(x)
    except Exception as err:
        raise RuntimeError(f'convert: the tracing forward of {type(model).__name__} on an input of shape '
                           f'{tuple(x.shape)} failed ({err}); set convert.input_shape: [C, H, W] to one the '
                           'network accepts') from err
    finally:
        model.train(was_training)


def _trace(model: nn.Module, x: torch.Tensor) -> tuple[dict[int, list[_Call]], list[tuple[int, ...]]]:
    """Run ``model`` once on ``x``: the calls of every module (by ``id``) and the output shapes."""
    calls: dict[int, list[_Call]] = defaultdict(list)

    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        inp, out = _first_tensor(args), _first_tensor(output)
        calls[id(module)].append(_Call(inp, inp._version if inp is not None else -1, out,
                                       out._version if out is not None else -1))

    handles = [m.register_forward_hook(hook) for m in {id(m): m for m in model.modules()}.values()]
    try:
        output = _run(model, x)
    finally:
        for handle in handles:
            handle.remove()
    return calls, _tensor_shapes(output)


# ---------------------------------------------------------------------------------------------- helpers


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _describe(module: nn.Module) -> str:
    """One line: the repr of a leaf module, ``Type(child=..., ...)`` one level deep otherwise."""
    children = list(module.named_children())
    if not children:
        return repr(module)
    parts = [f'{name}={repr(c) if not list(c.children()) else type(c).__name__ + "(...)"}' for name, c in children]
    return f'{type(module).__name__}({", ".join(parts)})'


def _module_paths(model: nn.Module) -> dict[int, list[str]]:
    paths: dict[int, list[str]] = defaultdict(list)
    for name, module in model.named_modules(remove_duplicate=False):
        if name and name not in paths[id(module)]:
            paths[id(module)].append(name)
    return paths


def _under(path: str, prefixes: Iterable[str]) -> bool:
    return any(path == p or path.startswith(p + '.') for p in prefixes)


def _like(new: nn.Module, old: nn.Module) -> nn.Module:
    param = next(old.parameters(), None)
    return new.to(device=param.device, dtype=param.dtype) if param is not None else new


def _set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition('.')
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, new)


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------- the rules


class _Converter:
    """Finds the replacements of one network from its trace; :meth:`apply` installs them."""

    def __init__(self, model: nn.Module, opts: ConvertOptions, calls: dict[int, list[_Call]]) -> None:
        self.model, self.opts, self.calls = model, opts, calls
        self.paths = _module_paths(model)
        self.modules = {id(m): m for m in model.modules()}
        self.plan: list[tuple[nn.Module, nn.Module, str]] = []  # (old, new, rule)
        self.skipped: list[tuple[str, str]] = []
        self.taken: set[str] = set()  # paths replaced (their submodules are off limits)
        self.order = {name: i for i, (name, _) in enumerate(model.named_modules(remove_duplicate=False))}

    def path(self, module: nn.Module) -> str:
        return self.paths[id(module)][0]

    def free(self, module: nn.Module) -> bool:
        paths = self.paths.get(id(module), [])
        return bool(paths) and not any(_under(p, self.taken) or _under(p, self.opts.exclude) for p in paths)

    def add(self, old: nn.Module, new: nn.Module, rule: str) -> None:
        self.plan.append((old, _like(new, old), rule))
        self.taken.update(self.paths[id(old)])

    def skip(self, module: nn.Module, reason: str) -> None:
        self.skipped.append((self.path(module), reason))

    # -- rules

    def resblocks(self) -> None:
        o = self.opts
        for module in self.modules.values():
            if type(module).__name__ not in o.resblock_types or not self.free(module):
                continue
            calls = self.calls.get(id(module), [])
            if not calls:
                self.skip(module, 'residual block not called in the tracing forward')
                continue
            if not all(c.inp is not None and c.out is not None and c.inp.dim() == 4 and c.inp.shape == c.out.shape
                       for c in calls):
                self.skip(module, 'residual block does not map (B, C, H, W) to the same shape')
                continue
            channels = calls[0].inp.shape[1]
            self.add(module, ConverseBlock(channels, channels, o.resblock_kernel_size, o.resblock_padding,
                                           o.resblock_padding_mode, o.resblock_eps), 'resblock')

    def upsample(self) -> None:
        o = self.opts
        producers: dict[int, tuple[nn.Module, _Call]] = {}
        for module in self.modules.values():
            if isinstance(module, nn.Conv2d):
                for call in self.calls.get(id(module), []):
                    if call.out is not None:
                        producers[id(call.out)] = (module, call)
        # conv id -> [(PixelShuffle, r)] for each call of the conv whose output went straight (unmodified) into it
        feeds: dict[int, list[tuple[nn.Module, int]]] = defaultdict(list)
        for shuffle in self.modules.values():
            if not isinstance(shuffle, nn.PixelShuffle):
                continue
            for call in self.calls.get(id(shuffle), []):
                source = producers.get(id(call.inp)) if call.inp is not None else None
                if source is not None and source[1].out is call.inp and source[1].out_version == call.inp_version:
                    feeds[id(source[0])].append((shuffle, shuffle.upscale_factor))
        chosen: dict[int, tuple[nn.Module, int]] = {}
        for conv_id, targets in feeds.items():
            conv = self.modules[conv_id]
            shuffle, r = targets[0]
            if not self.free(conv):
                continue
            if len(targets) != len(self.calls[conv_id]) or any(t[0] is not shuffle for t in targets):
                self.skip(conv, 'its output does not always go straight into the same PixelShuffle')
            elif conv.groups != 1 or conv.out_channels % (r * r):
                self.skip(conv, f'grouped conv or {conv.out_channels} output channels not divisible by {r * r}')
            else:
                chosen[conv_id] = (shuffle, r)
        # a PixelShuffle becomes Identity when every input it gets comes from a converted conv
        fed_by_chosen: dict[int, int] = defaultdict(int)  # calls of each PixelShuffle fed by a chosen conv
        for conv_id, (shuffle, _) in chosen.items():
            fed_by_chosen[id(shuffle)] += len(feeds[conv_id])
        identity = {sid for sid, n in fed_by_chosen.items()
                    if n == len(self.calls[sid]) and self.free(self.modules[sid])}
        for conv_id, (shuffle, r) in chosen.items():
            conv = self.modules[conv_id]
            channels = conv.out_channels // (r * r)
            new_conv = nn.Conv2d(conv.in_channels, channels, conv.kernel_size, conv.stride, conv.padding,
                                 conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode)
            up = Converse2D(channels, channels, o.upsample_kernel_size, r, o.upsample_padding,
                            o.upsample_padding_mode, o.upsample_eps)
            self.add(conv, ConverseUpsampler(new_conv, up, 1 if id(shuffle) in identity else r), 'upsample')
        for sid in identity:
            self.add(self.modules[sid], nn.Identity(), 'pixel_shuffle')
        for module in self.modules.values():
            if isinstance(module, nn.ConvTranspose2d) and self.free(module):
                self._transposed(module)

    def _transposed(self, convt: nn.ConvTranspose2d) -> None:
        stride = _pair(convt.stride)
        calls = self.calls.get(id(convt), [])
        s = stride[0]
        if stride[0] != stride[1] or s < 2:
            self.skip(convt, f'stride {convt.stride} is not one integer factor >= 2')
            return
        if not calls or not all(c.inp is not None and c.out is not None and c.inp.dim() == 4
                                and tuple(c.out.shape[-2:]) == (s * c.inp.shape[-2], s * c.inp.shape[-1])
                                for c in calls):
            self.skip(convt, f'its output is not exactly {s}x its input size (or it is not called)')
            return
        depthwise = convt.groups == convt.in_channels == convt.out_channels
        conv = None if depthwise else nn.Conv2d(convt.in_channels, convt.out_channels, 1, groups=convt.groups,
                                                bias=convt.bias is not None)
        o = self.opts
        up = Converse2D(convt.out_channels, convt.out_channels, o.upsample_kernel_size, s, o.upsample_padding,
                        o.upsample_padding_mode, o.upsample_eps)
        self.add(convt, ConverseUpsampler(conv, up), 'transposed')

    def depthwise(self) -> None:
        o = self.opts
        for module in self.modules.values():
            if type(module) is not nn.Conv2d or not self.free(module):
                continue
            c = module.in_channels
            if not (module.groups == c == module.out_channels and c > 1):
                continue
            kernel = _pair(module.kernel_size)
            calls = self.calls.get(id(module), [])
            if (kernel[0] != kernel[1] or kernel[0] < 2 or _pair(module.stride) != (1, 1)
                    or _pair(module.dilation) != (1, 1)):
                self.skip(module, 'depthwise conv that is not square k >= 2, stride 1, dilation 1')
                continue
            if not calls or not all(x.inp is not None and x.out is not None and x.inp.shape == x.out.shape
                                    for x in calls):
                self.skip(module, 'depthwise conv whose output size differs from its input size (or not called)')
                continue
            k = kernel[0]
            padding = k - 1 if o.depthwise_padding is None else o.depthwise_padding
            self.add(module, Converse2D(c, c, k, 1, padding, o.depthwise_padding_mode, o.depthwise_eps),
                     'depthwise')

    def apply(self) -> list[Replacement]:
        done = []
        for old, new, rule in self.plan:
            paths = self.paths[id(old)]
            done.append(Replacement(paths[0], rule, _describe(old), _describe(new), _count(old), _count(new),
                                    tuple(paths[1:])))
            for path in paths:
                _set_module(self.model, path, new)
        return sorted(done, key=lambda r: self.order[r.path])


def convert_to_converse(model: nn.Module, options: ConvertOptions | Mapping[str, Any] | None = None, *,
                        inplace: bool = False, **kwargs: Any) -> tuple[nn.Module, ConversionReport]:
    """Replace upsamplers (and optionally depthwise convs and residual blocks) of ``model`` by reverse
    convolution; see the module docstring for the rules and :class:`ConvertOptions` for the settings.

    Args:
        model: any network; it is run once on a (1, C, 16, 16) input (``input_shape`` to change that).
        options: a :class:`ConvertOptions` or a mapping of its fields (the YAML ``convert:`` block);
            keyword arguments override single fields.
        inplace: modify ``model`` itself instead of a deep copy.

    Returns:
        The converted network (same input and output shapes; unchanged layers keep their module paths and
        weights) and a :class:`ConversionReport`. Loading a state dict into it logs a :class:`LoadReport`
        via BasicSR's root logger and keeps it as ``model.converse_load_report``.

    Raises:
        ValueError: an unknown or invalid option, or nothing to convert.
        RuntimeError: the tracing forward fails, or the converted network's output shapes differ.

    Example:
        >>> from basicsr.archs.srresnet_arch import MSRResNet
        >>> net, report = convert_to_converse(MSRResNet(num_feat=16, num_block=1, upscale=4))
        >>> [r.path for r in report.replacements]
        ['upconv1', 'upconv2', 'pixel_shuffle']
        >>> net(torch.rand(1, 3, 8, 8)).shape
        torch.Size([1, 3, 32, 32])
    """
    if isinstance(options, ConvertOptions):
        opts = dataclasses.replace(options, **kwargs) if kwargs else options
        opts._validate('convert')
    else:
        opts = ConvertOptions.from_dict({**dict(options or {}), **kwargs})
    if not inplace:
        model = copy.deepcopy(model)
    name = type(model).__name__
    x = _trace_input(model, opts)
    keys_before = list(model.state_dict())
    params_before = _count(model)
    calls, shapes = _trace(model, x)

    converter = _Converter(model, opts, calls)
    if opts.resblocks:
        converter.resblocks()
    if opts.upsample:
        converter.upsample()
    if opts.depthwise:
        converter.depthwise()
    if not converter.plan:
        rules = [r for r in ('upsample', 'depthwise', 'resblocks') if getattr(opts, r)]
        found = '; '.join(f'{p}: {why}' for p, why in converter.skipped) or 'no candidate layer at all'
        raise ValueError(f'convert: nothing to convert in {name} with the rules {rules} (upsample: Conv2d -> '
                         f'PixelShuffle or ConvTranspose2d; depthwise: Conv2d with groups = channels; resblocks: '
                         f'{list(opts.resblock_types)}); {found}')
    replacements, skipped = converter.apply(), list(dict.fromkeys(converter.skipped))
    del calls, converter  # the traced tensors

    new_shapes = _tensor_shapes(_run(model, x))
    if new_shapes != shapes:
        raise RuntimeError(f'convert: the converted {name} outputs shapes {new_shapes} instead of {shapes} on an '
                           f'input of shape {tuple(x.shape)}; replaced: {[r.path for r in replacements]}. Leave '
                           'the offending layers out with convert.exclude: [path, ...]')
    keys_after = list(model.state_dict())
    report = ConversionReport(name, replacements, skipped, params_before, _count(model),
                              [k for k in keys_before if k not in set(keys_after)],
                              [k for k in keys_after if k not in set(keys_before)])
    if _log_load_report not in model._load_state_dict_post_hooks.values():  # converted twice: one hook
        model.register_load_state_dict_post_hook(_log_load_report)
    return model, report
