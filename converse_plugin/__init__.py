"""converse_plugin: reverse convolution (Converse2D) and ConverseNets for BasicSR.

``import converse_plugin`` first applies the compatibility patches of :mod:`converse_plugin.compat`
(so that BasicSR 1.4.2 imports with current torchvision), then imports the subpackages, which registers
the architectures, datasets, models and metrics in BasicSR's registries.
"""
from converse_plugin import compat as _compat

_compat.apply_all()

from converse_plugin.ops import Converse2D, converse2d  # noqa: E402
from converse_plugin import archs  # noqa: E402,F401  (registers architectures)
from converse_plugin.archs.converse_block import ConverseBlock, LayerNorm2d  # noqa: E402

__version__ = '0.1.0'
__all__ = ['Converse2D', 'converse2d', 'ConverseBlock', 'LayerNorm2d', '__version__']


def _register_optional() -> None:
    # data/models/metrics register on import; they are added as they land.
    import importlib
    for sub in ('data', 'models', 'metrics'):
        try:
            importlib.import_module(f'converse_plugin.{sub}')
        except ModuleNotFoundError as err:  # only tolerate a missing subpackage, not a broken one
            if err.name != f'converse_plugin.{sub}':
                raise


_register_optional()
