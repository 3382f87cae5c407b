"""Registers the operator and the block themselves, so an option file can build either directly."""
from basicsr.utils.registry import ARCH_REGISTRY

from converse_plugin.archs.converse_block import ConverseBlock
from converse_plugin.ops import Converse2D

ARCH_REGISTRY.register(Converse2D)
ARCH_REGISTRY.register(ConverseBlock)
