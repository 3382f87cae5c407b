"""``basicsr train -opt FILE [--launcher L] [--auto_resume] [--debug] [--force_yml K:K=V ...] [--root DIR]
[--import MODULE]``.

Runs the plugin's training loop (:func:`converse_plugin.engine.train_pipeline`). Output goes to
``experiments/<name>/`` and ``tb_logger/<name>/`` under ``--root`` (default: the current directory).
Distributed: ``torchrun --nproc_per_node=N -m converse_plugin train -opt FILE --launcher pytorch``.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from converse_plugin.errors import UserError, user_message


def run(argv: Sequence[str], is_train: bool) -> int:
    """Check ``argv`` (``-h`` and usage errors exit here), then run the train or test pipeline on it.

    A user error (:class:`~converse_plugin.errors.UserError`: bad option file, data, checkpoint, or
    NaN/Inf in training) ends the command with one line ``basicsr <command>: error: <message>`` on stderr
    and the error's exit code (2; 3 for NaN/Inf in training), without a traceback. A preemption signal
    (SIGUSR1; SIGTERM under SLURM) saves a checkpoint and ends with exit status 75.
    """
    from converse_plugin.engine import test_pipeline, train_pipeline
    from converse_plugin.engine.dist import shutdown
    from converse_plugin.engine.options import build_parser
    from converse_plugin.engine.preemption import Preempted, StoppedByLauncher
    from converse_plugin.engine.watchdog import stopped_message

    command = 'train' if is_train else 'test'
    prog = f'basicsr {command}'
    argv = list(argv)
    args = build_parser(is_train, prog=prog).parse_args(argv)
    try:
        if is_train:
            train_pipeline(os.getcwd(), argv, prog=prog)  # --root, if given, wins
        else:
            test_pipeline(os.getcwd(), argv)
    except UserError as err:
        message = one_line(user_message(err))
        if args.opt not in message:  # every error names the option file it is about
            message = f'{args.opt}: {message}'
        print(f'{prog}: error: {message}', file=sys.stderr, flush=True)
        return err.exit_code
    except Preempted as stop:  # a preemption signal: the checkpoint is saved, the run continues with --auto_resume
        print(f'{prog}: preempted: {stop}', file=sys.stderr, flush=True)
        return stop.exit_code
    except StoppedByLauncher as stop:  # torchrun's agent ends its workers: say where this one was and why
        print(f'{prog}: error: {stopped_message(str(stop))}', file=sys.stderr, flush=True)
        return stop.exit_code
    finally:
        shutdown()  # a distributed run leaves its process group before the interpreter exits
    return 0


def one_line(message: str) -> str:
    """``message`` without the C++ stack frames a quoted torch error carries (``frame #N: ...`` lines)."""
    lines = str(message).splitlines()
    kept = [line for line in lines if not line.lstrip().startswith(('frame #', 'Exception raised from'))]
    return '\n'.join(kept) if kept else str(message)


def main(argv: Sequence[str] | None = None) -> int:
    return run(list(sys.argv[1:] if argv is None else argv), is_train=True)


if __name__ == '__main__':
    sys.exit(main())
