"""``basicsr train -opt FILE [--launcher L] [--auto_resume] [--debug] [--force_yml K:K=V ...] [--root DIR]``.

Runs BasicSR's own :func:`basicsr.train.train_pipeline` (with the patches of :mod:`converse_plugin.compat`:
safe option parsing, ``--root``, CPU distributed training, resuming from any directory). Output goes
to ``experiments/<name>/`` and ``tb_logger/<name>/`` under ``--root`` (default: the current directory).
Distributed: ``torchrun --nproc_per_node=N -m converse_plugin train -opt FILE --launcher pytorch``.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from converse_plugin.tools.options import build_parser, patched_argv
from converse_plugin.utils.errors import UserError, user_message


def run(argv: Sequence[str], is_train: bool) -> int:
    """Check ``argv`` (``-h`` and usage errors exit here), then run BasicSR's train or test pipeline on it.

    A user error (:class:`~converse_plugin.utils.errors.UserError`: bad option file, data, checkpoint, or
    NaN/Inf in training) ends the command with one line ``basicsr <command>: error: <message>`` on stderr
    and the error's exit code (2; 3 for NaN/Inf in training), without a traceback.
    """
    import basicsr.test
    import basicsr.train

    command = 'train' if is_train else 'test'
    prog = f'basicsr {command}'
    build_parser(is_train, prog=prog).parse_args(argv)
    pipeline = basicsr.train.train_pipeline if is_train else basicsr.test.test_pipeline
    try:
        with patched_argv(prog, argv):
            pipeline(os.getcwd())  # --root, if given, wins (compat patch 6)
    except UserError as err:
        print(f'{prog}: error: {user_message(err)}', file=sys.stderr, flush=True)
        return err.exit_code
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(list(sys.argv[1:] if argv is None else argv), is_train=True)


if __name__ == '__main__':
    sys.exit(main())
