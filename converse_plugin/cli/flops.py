"""``basicsr flops -opt FILE [--input BxCxHxW]`` or ``basicsr flops --arch NAME [--kwargs JSON] [--input ...]``
or ``basicsr flops --zoo NAME``: parameters and multiply-adds per module type, FFTs counted
(convention in :mod:`converse_plugin.engine.complexity`). The input defaults to 1 x num_in_ch x 256 x 256.
No checkpoint is loaded: the counts depend on the architecture and the input size only.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from torch import nn

from converse_plugin.engine.complexity import analyze, example_inputs, format_report, parse_input_size
from converse_plugin.engine.options import OptionError, load_options
from converse_plugin.registries import build_network


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='basicsr flops', description='params and multiply-adds per module type')
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument('-opt', '--opt', dest='opt', help='a BasicSR option file (its network_g is analysed)')
    src.add_argument('--arch', help='a registered architecture, e.g. ConverseDnCNN')
    src.add_argument('--zoo', help='a zoo model name, e.g. converse_dncnn')
    parser.add_argument('--kwargs', default='{}', help='JSON constructor arguments for --arch')
    parser.add_argument('--input', default=None, help='input size BxCxHxW (default 1 x num_in_ch x 256 x 256)')
    return parser


def network_options(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """The ``network_g`` dict (with ``type``) and a title for the report."""
    if args.opt:
        opt = load_options(args.opt)
        if not isinstance(opt.get('network_g'), dict) or 'type' not in opt['network_g']:
            raise OptionError(f'{args.opt}: network_g with a type is needed to count FLOPs')
        return dict(opt['network_g']), args.opt
    if args.zoo:
        from converse_plugin.zoo import get_entry
        return dict(get_entry(args.zoo).network_g), f'zoo:{args.zoo}'
    try:
        kwargs = json.loads(args.kwargs)
    except json.JSONDecodeError as err:
        raise OptionError(f'--kwargs is not valid JSON: {err}') from None
    if not isinstance(kwargs, dict):
        raise OptionError(f'--kwargs must be a JSON object, got {args.kwargs!r}')
    return {'type': args.arch, **kwargs}, args.arch


def default_input(network_g: dict[str, Any]) -> tuple[int, ...]:
    return (1, int(network_g.get('num_in_ch', 3)), 256, 256)


def main(argv: Sequence[str] | None = None) -> int:
    import converse_plugin  # noqa: F401  (registers the architectures)
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        network_g, title = network_options(args)
        size = parse_input_size(args.input) if args.input else default_input(network_g)
        net = build_network(network_g, 'network_g')
    except (OptionError, ValueError, TypeError) as err:
        print(f'basicsr flops: error: {err}', file=sys.stderr)
        return 2
    print(format_report(analyze(net, example_inputs(net, size)), title))
    return 0


if __name__ == '__main__':
    sys.exit(main())
