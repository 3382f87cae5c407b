"""ConverseConverted: any registered BasicSR architecture with reverse convolution put in, from YAML.

    network_g:
      type: ConverseConverted
      network:              # the original architecture, exactly as it would be written on its own
        type: MSRResNet
        num_feat: 64
        num_block: 16
        upscale: 4
      convert:              # optional; these are the defaults (ConvertOptions)
        upsample: true
        upsample_kernel_size: 2
        upsample_padding: 2
        upsample_padding_mode: replicate
        upsample_eps: !!float 1e-3
        depthwise: false
        resblocks: false

The built network is the original one with modules swapped in place (no wrapper module), so its
state-dict keys are the original's wherever a layer is unchanged: ``pretrain_network_g`` of the original
architecture loads with ``strict_load_g: false``, and a :class:`~converse_plugin.archs.convert.LoadReport`
of the keys used and not used is logged.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from converse_plugin.archs.convert import ConvertOptions, basicsr_logger, convert_to_converse

WHERE = 'network_g'


@ARCH_REGISTRY.register()
def ConverseConverted(network: Mapping[str, Any] | None = None, convert: Mapping[str, Any] | None = None,
                      **unexpected: Any) -> nn.Module:  # noqa: N802 (the YAML type name)
    """Build ``network`` (a nested option block with its own ``type``) from ARCH_REGISTRY and convert it
    with :func:`~converse_plugin.archs.convert.convert_to_converse` using the ``convert`` block.

    Shapes: those of the original network.

    Raises:
        ValueError: ``network`` is missing or not a mapping, its ``type`` is missing or not registered,
            ``convert`` has an unknown or invalid key, or there is nothing to convert.
    """
    if unexpected:
        raise ValueError(f'{WHERE}: ConverseConverted takes the keys network and convert; got also '
                         f'{sorted(unexpected)} (options of the original architecture go under network:)')
    if not isinstance(network, Mapping):
        raise ValueError(f'{WHERE}.network: expected the original architecture as a mapping with a type '
                         f'(e.g. {{type: MSRResNet, upscale: 4}}), got {network!r}')
    arch = network.get('type')
    if arch is None:
        raise ValueError(f'{WHERE}.network.type: missing; expected a registered architecture such as MSRResNet')
    from converse_plugin.registries import build_network, lookup
    if lookup('network', arch, f'{WHERE}.network.type') is ConverseConverted:
        raise ValueError(f'{WHERE}.network.type: {arch!r} cannot be converted again; give the original architecture')
    opts = ConvertOptions.from_dict(convert, where=f'{WHERE}.convert')
    original = build_network(network, f'{WHERE}.network')
    model, report = convert_to_converse(original, opts, inplace=True)
    basicsr_logger().info(f'ConverseConverted: {report.summary()}')
    return model
