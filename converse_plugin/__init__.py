"""converse_plugin: reverse convolution (Converse2D) and ConverseNets for BasicSR.

``import converse_plugin`` first applies the environment fixes of :mod:`converse_plugin.compat` (so that
BasicSR 1.4.2 imports with current torchvision), then imports the architectures, datasets, models and
metrics, which registers them in BasicSR's registries. The engine (``basicsr train`` / ``basicsr test``)
and the commands are imported only when used; ``converse_plugin.train_pipeline`` and
``converse_plugin.test_pipeline`` are the engine's entry points for a user's own ``train.py``.
"""
from converse_plugin import compat as _compat

_compat.apply_all()

from converse_plugin.ops import Converse2D, converse2d  # noqa: E402
from converse_plugin import archs  # noqa: E402,F401  (registers architectures)
from converse_plugin.archs.converse_block import ConverseBlock, LayerNorm2d  # noqa: E402
from converse_plugin.archs.converse_upsampler import ConverseUpsampler  # noqa: E402
from converse_plugin.archs.convert import ConversionReport, ConvertOptions, LoadReport, convert_to_converse  # noqa: E402
from converse_plugin.archs.converse_converted_arch import ConverseConverted  # noqa: E402  (registers the YAML type)
from converse_plugin import data, metrics, models  # noqa: E402,F401  (register datasets, metrics, models)

__version__ = '0.1.0'
__all__ = ['Converse2D', 'converse2d', 'ConverseBlock', 'LayerNorm2d', 'ConverseUpsampler', 'convert_to_converse',
           'ConvertOptions', 'ConversionReport', 'LoadReport', 'ConverseConverted', 'train_pipeline', 'test_pipeline',
           '__version__']


def __getattr__(name: str):
    if name in ('train_pipeline', 'test_pipeline'):
        from converse_plugin import engine
        return getattr(engine, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
