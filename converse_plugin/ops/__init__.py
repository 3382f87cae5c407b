"""Reverse convolution. Nothing here imports BasicSR: the operator is plain PyTorch."""
from converse_plugin.ops.converse2d import Converse2D
from converse_plugin.ops.functional import converse2d, converse_filter, converse_lambda, kernel_otf

__all__ = ['Converse2D', 'converse2d', 'converse_filter', 'converse_lambda', 'kernel_otf']
