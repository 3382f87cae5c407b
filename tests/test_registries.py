"""Names resolve exactly as BasicSR 1.4.2's registries resolve them, for every name of every registry."""
from __future__ import annotations

import contextlib
import io

import pytest

import converse_plugin  # noqa: F401  (registers the plugin's types)
from converse_plugin.errors import OptionError
from converse_plugin.registries import REGISTRIES, build_network, known_names, lookup, registry

SUFFIX = '_basicsr'


def _basicsr_get(kind: str, name: str):
    with contextlib.redirect_stdout(io.StringIO()):
        return registry(kind).get(name)


CASES = [(kind, name) for kind in REGISTRIES for name in sorted(registry(kind).keys())]


@pytest.mark.parametrize('kind, name', CASES)
def test_every_registered_name_resolves_as_basicsr_does(kind, name):
    assert lookup(kind, name) is _basicsr_get(kind, name)
    if name.endswith(SUFFIX):  # the plain name too, as BasicSR's get(name) falls back to name_basicsr
        plain = name[:-len(SUFFIX)]
        assert lookup(kind, plain) is _basicsr_get(kind, plain)
        assert plain in known_names(kind)


def test_suffixed_names_exist_in_basicsr_1_4_2():
    suffixed = [name for _, name in CASES if name.endswith(SUFFIX)]
    for name in ('SRVGGNetCompact_basicsr', 'UNetDiscriminatorSN_basicsr', 'RealESRGANModel_basicsr',
                 'RealESRNetModel_basicsr'):
        assert name in suffixed


@pytest.mark.parametrize('kind', sorted(REGISTRIES))
def test_unknown_names_are_refused_like_basicsr_with_the_closest_names(kind):
    with pytest.raises(KeyError):
        _basicsr_get(kind, 'NoSuchThing')
    with pytest.raises(OptionError, match=rf"x\.yml: k:type: unknown {kind} type 'NoSuchThing'"):
        lookup(kind, 'NoSuchThing', 'x.yml: k:type')
    for bad in (None, 3, ['SRModel'], ''):
        with pytest.raises(OptionError, match=f'unknown {kind} type'):
            lookup(kind, bad)


def test_close_names_are_suggested():
    with pytest.raises(OptionError, match='closest registered: .*SRVGGNetCompact'):
        lookup('network', 'SRVGGNetCompakt')


def test_build_network_resolves_plain_names_and_names_constructor_errors():
    net = build_network({'type': 'SRVGGNetCompact', 'num_feat': 8, 'num_conv': 2, 'upscale': 2})
    assert type(net).__name__ == 'SRVGGNetCompact'
    with pytest.raises(OptionError, match=r"network_g: SRVGGNetCompact: .*num_fet.*\(it accepts: num_in_ch"):
        build_network({'type': 'SRVGGNetCompact', 'num_fet': 8})
    with pytest.raises(OptionError, match='network_g: missing required option network_g:type'):
        build_network({'num_feat': 8})
    with pytest.raises(OptionError, match='network_g: expected a mapping'):
        build_network(['SRVGGNetCompact'])


def test_converse_converted_resolves_the_nested_plain_name():
    net = build_network({'type': 'ConverseConverted',
                         'network': {'type': 'SRVGGNetCompact', 'num_feat': 8, 'num_conv': 2, 'upscale': 2}})
    from converse_plugin.ops import Converse2D
    assert any(isinstance(m, Converse2D) for m in net.modules())
