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
from converse_plugin.archs.converse_upsampler import ConverseUpsampler  # noqa: E402
from converse_plugin.archs.convert import ConversionReport, ConvertOptions, LoadReport, convert_to_converse  # noqa: E402
from converse_plugin.archs.converted_arch import ConverseConverted  # noqa: E402  (registers the YAML type)
from converse_plugin import data, metrics, models  # noqa: E402,F401  (register datasets, metrics, models)

__version__ = '0.1.0'
__all__ = ['Converse2D', 'converse2d', 'ConverseBlock', 'LayerNorm2d', 'ConverseUpsampler', 'convert_to_converse',
           'ConvertOptions', 'ConversionReport', 'LoadReport', 'ConverseConverted', '__version__']
