"""Architectures, registered in BasicSR's ARCH_REGISTRY on import:
Converse2D, ConverseBlock, ConverseDnCNN, ConverseMSRResNet, ConverseNet, ConverseUSRNet, DnCNN."""
from converse_plugin.archs import converse2d_arch, converse_dncnn_arch, converse_usrnet_arch  # noqa: F401
from converse_plugin.archs import converse_msrresnet_arch, conversenet_arch, dncnn_arch  # noqa: F401
from converse_plugin.archs.converse_block import ConverseBlock, LayerNorm2d, make_operator
from converse_plugin.archs.converse_usrnet_arch import ConverseUSRNet
from converse_plugin.archs.conversenet_arch import ConverseNet
from converse_plugin.archs.converse_dncnn_arch import ConverseDnCNN
from converse_plugin.archs.converse_msrresnet_arch import ConverseMSRResNet
from converse_plugin.archs.dncnn_arch import DnCNN

__all__ = ['ConverseBlock', 'LayerNorm2d', 'make_operator', 'ConverseDnCNN', 'ConverseMSRResNet', 'ConverseNet',
           'ConverseUSRNet', 'DnCNN']
