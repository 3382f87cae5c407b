"""``python -m converse_plugin COMMAND ...`` is the same as ``basicsr COMMAND ...``."""
import sys

from converse_plugin.cli import main

sys.exit(main())
