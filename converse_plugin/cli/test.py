"""``basicsr test -opt FILE [--launcher L] [--force_yml K:K=V ...] [--root DIR] [--import MODULE]``.

Runs the plugin's test loop (:func:`converse_plugin.engine.test_pipeline`). Logs and images go to
``results/<name>/`` under ``--root`` (default: the current directory). The released checkpoints are plain
state dicts: their option files set ``path: param_key_g: ~``.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence

from converse_plugin.cli.train import run


def main(argv: Sequence[str] | None = None) -> int:
    return run(list(sys.argv[1:] if argv is None else argv), is_train=False)


if __name__ == '__main__':
    sys.exit(main())
