"""``basicsr zoo list | download NAME... [--dir D] | verify [D]``: the released checkpoints.

``list`` prints the table (architecture, task, published numbers, address); ``download`` fetches and
checks the sha256 (nothing is kept on a mismatch); ``verify`` checks every entry in a directory and
exits 1 if any is missing or different. The directory defaults to ``$CONVERSE_ZOO_DIR``, else
``~/.cache/converse_plugin/zoo``.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from converse_plugin.zoo import ZOO, ZooError, download, verify_dir, zoo_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='basicsr zoo', description='the released ConverseNet checkpoints')
    sub = parser.add_subparsers(dest='action', required=True)
    sub.add_parser('list', help='print the zoo table')
    get = sub.add_parser('download', help='download checkpoints and verify their sha256')
    get.add_argument('names', nargs='+', metavar='NAME', help=f'zoo names ({", ".join(ZOO)}) or "all"')
    get.add_argument('--dir', default=None, help='destination (default: $CONVERSE_ZOO_DIR or the user cache)')
    check = sub.add_parser('verify', help='check the sha256 of every zoo file in a directory')
    check.add_argument('dir', nargs='?', default=None, help='zoo directory (default as for download)')
    return parser


def format_table() -> str:
    lines = ['| name | architecture | task | published | sha256 | address |', '|---|---|---|---|---|---|']
    for e in ZOO.values():
        published = ', '.join(f'{k} {v:g}' for k, v in e.published.items())
        lines.append(f'| {e.name} | {e.arch} | {e.task} | {published} | {e.sha256[:12]}… | {e.url} |')
    return '\n'.join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.action == 'list':
        print(format_table())
        print(f'\nzoo directory: {zoo_dir()}')
        return 0
    if args.action == 'download':
        names = list(ZOO) if args.names == ['all'] else args.names
        try:
            for name in names:
                print(f'{name}: {download(name, args.dir)}')
        except ZooError as err:
            print(f'basicsr zoo download: error: {err}', file=sys.stderr)
            return 2
        except OSError as err:
            print(f'basicsr zoo download: error: {name}: {err}', file=sys.stderr)
            return 2
        return 0
    status = verify_dir(args.dir)
    root = zoo_dir(args.dir)
    for name, state in status.items():
        print(f'{name:<20} {state}  ({root / ZOO[name].file})')
    return 0 if all(s == 'ok' for s in status.values()) else 1


if __name__ == '__main__':
    sys.exit(main())
