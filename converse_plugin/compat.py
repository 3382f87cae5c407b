"""Every patch the plugin applies to BasicSR 1.4.2 or torchvision, in one place.

Each patch is idempotent, explained where it is defined, and applied by :func:`apply_all`, which
``converse_plugin/__init__.py`` calls *before* anything imports :mod:`basicsr`.

1. ``torchvision.transforms.functional_tensor`` was removed in torchvision 0.17. BasicSR 1.4.2 imports
   ``rgb_to_grayscale`` from it at import time (``basicsr/data/degradations.py``), so ``import basicsr``
   fails with current torchvision. We register an alias module that re-exports
   ``torchvision.transforms.functional`` (which has had ``rgb_to_grayscale`` since 0.8).
"""
from __future__ import annotations

import importlib
import sys
import types

_APPLIED: set[str] = set()


def patch_torchvision_functional_tensor() -> None:
    """Make ``import torchvision.transforms.functional_tensor`` work again (patch 1)."""
    name = 'torchvision.transforms.functional_tensor'
    if name in sys.modules:
        return
    try:
        importlib.import_module(name)
        return  # old torchvision: nothing to do
    except ImportError:
        pass
    import torchvision.transforms.functional as F

    shim = types.ModuleType(name)
    shim.__doc__ = 'converse_plugin shim: alias of torchvision.transforms.functional (see converse_plugin.compat).'
    for attr in dir(F):
        if not attr.startswith('__'):
            setattr(shim, attr, getattr(F, attr))
    sys.modules[name] = shim
    import torchvision.transforms as T
    T.functional_tensor = shim


def apply_all() -> None:
    """Apply every patch once. Safe to call repeatedly."""
    for patch in (patch_torchvision_functional_tensor, ):
        if patch.__name__ not in _APPLIED:
            patch()
            _APPLIED.add(patch.__name__)
