"""Environment fixes, applied by ``converse_plugin/__init__.py`` before anything imports BasicSR.

This module holds only fixes for the environment BasicSR 1.4.2 runs in; it never replaces BasicSR's
logic (the plugin's own engine and model base class do that job) and imports nothing of the plugin.

1. ``torchvision.transforms.functional_tensor`` was removed in torchvision 0.17. BasicSR 1.4.2 imports
   ``rgb_to_grayscale`` from it at import time (``basicsr/data/degradations.py``), so ``import basicsr``
   fails with current torchvision. We register an alias module that re-exports
   ``torchvision.transforms.functional`` (which has had ``rgb_to_grayscale`` since 0.8).

   The same alias is also offered to modules imported *before* the plugin (``import realesrgan`` first,
   or any other BasicSR project): installing the package writes ``converse_plugin_compat.pth`` into
   site-packages (:func:`startup_hook_line`; ``make venv`` calls :func:`install_startup_hook` for the
   editable install, which skips it). Python runs its one line at start-up: it appends a finder to the
   *end* of ``sys.meta_path`` that answers only for ``torchvision.transforms.functional_tensor``, so it
   costs nothing until that import happens and never shadows a torchvision that still has the module.
"""
from __future__ import annotations

import importlib
import sys

__all__ = ['FIXES', 'apply_all', 'alias_torchvision_functional_tensor', 'startup_hook_line', 'install_startup_hook',
           'STARTUP_HOOK_FILE']

ALIAS = 'torchvision.transforms.functional_tensor'
STARTUP_HOOK_FILE = 'converse_plugin_compat.pth'


# The finder of fix 1, kept as source: the .pth line executes it at every interpreter start and cannot import
# the plugin (whose __init__ imports torch and BasicSR); the plugin's import executes the same source.
_FINDER = '''
class ConverseFunctionalTensorAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """converse_plugin compat fix 1: torchvision.transforms.functional_tensor as an alias of
    torchvision.transforms.functional, found only when no finder before it provides the module."""
    name = 'torchvision.transforms.functional_tensor'

    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname == self.name else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        import torchvision.transforms as transforms
        import torchvision.transforms.functional as functional
        module.__dict__.update({k: getattr(functional, k) for k in dir(functional) if not k.startswith('__')})
        transforms.functional_tensor = module


if not any(type(f).__name__ == 'ConverseFunctionalTensorAlias' for f in sys.meta_path):
    sys.meta_path.append(ConverseFunctionalTensorAlias())
'''


def startup_hook_line() -> str:
    """The one line of ``converse_plugin_compat.pth``. Python executes ``.pth`` lines that start with
    ``import`` when it starts; this one defines the finder of fix 1 and appends it to ``sys.meta_path``."""
    namespace = "{'sys': sys, 'importlib': importlib, '__name__': 'converse_plugin_compat'}"
    return f'import sys, importlib.abc, importlib.util; exec({_FINDER!r}, {namespace})\n'


def install_startup_hook(site_packages: str | None = None) -> str:
    """Write ``converse_plugin_compat.pth`` into ``site_packages`` (default: this interpreter's purelib
    folder, i.e. the virtual environment's site-packages) and return its path."""
    import os
    import sysconfig

    folder = site_packages or sysconfig.get_paths()['purelib']
    path = os.path.join(folder, STARTUP_HOOK_FILE)
    with open(path, 'w', encoding='utf-8') as f:
        f.write(startup_hook_line())
    return path


def _install_finder() -> None:
    """Append the finder of fix 1 to ``sys.meta_path`` (once), exactly as the start-up line does."""
    import importlib.abc  # noqa: F401  (the finder's bases)
    import importlib.util  # noqa: F401

    exec(compile(_FINDER, 'converse_plugin_compat', 'exec'),  # noqa: S102 (our own source, above)
         {'sys': sys, 'importlib': importlib, '__name__': 'converse_plugin_compat'})


def alias_torchvision_functional_tensor() -> None:
    """Make ``import torchvision.transforms.functional_tensor`` work again (fix 1). Idempotent. The finder is
    last in ``sys.meta_path``, so an old torchvision that still has the module keeps its own."""
    if ALIAS in sys.modules:
        return
    _install_finder()
    importlib.import_module(ALIAS)


FIXES = (alias_torchvision_functional_tensor, )


def apply_all() -> None:
    """Apply every fix (each is idempotent)."""
    for fix in FIXES:
        fix()
