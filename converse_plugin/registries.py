"""Names in BasicSR's registries, resolved exactly as BasicSR 1.4.2 resolves them.

BasicSR registers some classes under a suffixed name (``SRVGGNetCompact_basicsr``,
``UNetDiscriminatorSN_basicsr``, ``RealESRGANModel_basicsr``, ...) so that a project such as Real-ESRGAN
can register the plain name itself; its ``Registry.get(name)`` tries ``name`` and then ``name_basicsr``.
Every lookup of the plugin (early option checks, ``ConverseConverted``'s nested ``network:``, the tools)
goes through :func:`lookup`, which asks BasicSR's own ``get`` (silencing the line it prints for a suffixed
name), so the plugin accepts exactly the names BasicSR accepts.
"""
from __future__ import annotations

import contextlib
import difflib
import io
from collections.abc import Iterable
from typing import Any

from converse_plugin.errors import OptionError, first_line

__all__ = ['REGISTRIES', 'registry', 'lookup', 'known_names', 'closest_names', 'unknown_name_message',
           'uses_plugin_types']

# what the option files call each registry -> BasicSR's registry object name
REGISTRIES = {'network': 'ARCH_REGISTRY', 'model': 'MODEL_REGISTRY', 'dataset': 'DATASET_REGISTRY',
              'loss': 'LOSS_REGISTRY', 'metric': 'METRIC_REGISTRY'}


def registry(kind: str):
    """BasicSR's registry of ``kind`` (network, model, dataset, loss, metric)."""
    from basicsr.utils import registry as basicsr_registry
    return getattr(basicsr_registry, REGISTRIES[kind])


def lookup(kind: str, name: Any, where: str = '') -> Any:
    """The class (or function) that BasicSR's ``get`` returns for ``name``.

    Raises:
        OptionError: BasicSR would not find ``name``; the message names ``where`` (e.g. ``x.yml:
            network_g:type``) and the closest registered names.
    """
    reg = registry(kind)
    if isinstance(name, str) and name:
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # BasicSR prints 'Name X is not found, use X_basicsr'
                return reg.get(name)
        except KeyError:
            pass
    raise OptionError(unknown_name_message(kind, name, where))


def uses_plugin_types(opt: Any) -> bool:
    """Whether the option tree ``opt`` names one of the plugin's own models or networks (``model_type``,
    ``network_*:type``): such a file opts into the plugin's defaults where they differ from BasicSR's. Names
    that do not resolve count as not the plugin's (the option checks report them)."""
    if not isinstance(opt, dict):
        return False
    names = [('model', opt.get('model_type'))]
    names += [('network', v.get('type')) for k, v in opt.items() if str(k).startswith('network_') and isinstance(v, dict)]
    for kind, name in names:
        try:
            found = lookup(kind, name)
        except OptionError:
            continue
        if str(getattr(found, '__module__', '')).split('.')[0] == 'converse_plugin':
            return True
    return False


def known_names(kind: str) -> list[str]:
    """Every name ``lookup`` accepts for ``kind``: the registered keys and, for suffixed ones, the plain name."""
    keys = set(registry(kind).keys())
    return sorted(keys | {k[:-len('_basicsr')] for k in keys if k.endswith('_basicsr')})


def closest_names(name: str, names: Iterable[str], n: int = 5) -> list[str]:
    """Up to ``n`` of ``names`` closest to ``name`` (case-insensitive ``difflib`` ratio)."""
    lowered = {x.lower(): x for x in sorted(set(names))}
    close = difflib.get_close_matches(str(name).lower(), list(lowered), n=n, cutoff=0.5)
    return [lowered[x] for x in close]


def unknown_name_message(kind: str, name: Any, where: str = '', names: Iterable[str] | None = None) -> str:
    names = known_names(kind) if names is None else sorted(set(names))
    close = closest_names(str(name), names)
    hint = f'closest registered: {", ".join(close)}' if close else f'registered: {", ".join(names)}'
    prefix = f'{where}: ' if where else ''
    return f'{prefix}unknown {kind} type {name!r}; {hint}'


def build_network(net_opt: Any, where: str = 'network_g') -> Any:
    """Build the network of an option block ``{type: NAME, key: value, ...}`` (the one way the plugin builds
    networks from options: option checks, ConverseConverted's ``network:``, infer, export, flops).

    Raises:
        OptionError: ``net_opt`` is not a mapping with a ``type``, the type is unknown, or the constructor
            rejects the keys or values; the message names ``where`` and what the constructor accepts.
    """
    import inspect
    from collections.abc import Mapping

    if not isinstance(net_opt, Mapping):
        raise OptionError(f'{where}: expected a mapping with a type, got {type(net_opt).__name__} {net_opt!r}')
    if 'type' not in net_opt:
        raise OptionError(f'{where}: missing required option {where}:type (the architecture)')
    kwargs = {str(k): v for k, v in net_opt.items() if k != 'type'}
    cls = lookup('network', net_opt['type'], f'{where}:type')
    try:
        return cls(**kwargs)
    except TypeError as err:
        try:
            params = [p for p in inspect.signature(cls).parameters if p not in ('self', 'args', 'kwargs')]
        except (TypeError, ValueError):
            params = []
        accepted = f' (it accepts: {", ".join(params)})' if params else ''
        raise OptionError(f'{where}: {net_opt["type"]}: {err}{accepted}') from None
    except OptionError as err:  # a nested block (ConverseConverted's network:) already names its key
        raise OptionError(str(err) if str(err).startswith(where) else f'{where}: {err}') from None
    except Exception as err:  # noqa: BLE001 (a constructor that fails on these keys: the options are at fault)
        text = first_line(err)
        raise OptionError(f'{where}: {net_opt["type"]}: {type(err).__name__}{": " + text if text else ""}') from None
