"""Former home of the deblurring ConverseNets, kept so that old imports work: ConverseNet and ConversePrior
live in :mod:`converse_plugin.archs.conversenet_arch`, ConverseUSRNet, DataStep and KernelNet in
:mod:`converse_plugin.archs.converse_usrnet_arch` (each YAML type in a file named after it)."""
from converse_plugin.archs.converse_usrnet_arch import ConverseUSRNet, DataStep, KernelNet  # noqa: F401
from converse_plugin.archs.conversenet_arch import ConverseNet, ConversePrior  # noqa: F401

__all__ = ['ConverseNet', 'ConversePrior', 'ConverseUSRNet', 'DataStep', 'KernelNet']
