"""Environment fixes, applied by ``converse_plugin/__init__.py`` before anything imports BasicSR.

This module holds only fixes for the environment BasicSR 1.4.2 runs in; it never replaces BasicSR's
logic (the plugin's own engine and model base class do that job) and imports nothing of the plugin.

1. ``torchvision.transforms.functional_tensor`` was removed in torchvision 0.17. BasicSR 1.4.2 imports
   ``rgb_to_grayscale`` from it at import time (``basicsr/data/degradations.py``), so ``import basicsr``
   fails with current torchvision. We register an alias module that re-exports
   ``torchvision.transforms.functional`` (which has had ``rgb_to_grayscale`` since 0.8).
"""
from __future__ import annotations

import importlib
import sys
import types

__all__ = ['FIXES', 'apply_all', 'alias_torchvision_functional_tensor']

ALIAS = 'torchvision.transforms.functional_tensor'


def alias_torchvision_functional_tensor() -> None:
    """Make ``import torchvision.transforms.functional_tensor`` work again (fix 1). Idempotent."""
    if ALIAS in sys.modules:
        return
    try:
        importlib.import_module(ALIAS)
        return  # an old torchvision still has it: nothing to do
    except ImportError:
        pass
    import torchvision.transforms as transforms
    import torchvision.transforms.functional as functional

    shim = types.ModuleType(ALIAS)
    shim.__doc__ = 'converse_plugin shim: alias of torchvision.transforms.functional (see converse_plugin.compat).'
    for attr in dir(functional):
        if not attr.startswith('__'):
            setattr(shim, attr, getattr(functional, attr))
    sys.modules[ALIAS] = shim
    transforms.functional_tensor = shim


FIXES = (alias_torchvision_functional_tensor, )


def apply_all() -> None:
    """Apply every fix (each is idempotent)."""
    for fix in FIXES:
        fix()
