"""Reverse convolution. Nothing here imports BasicSR or anything outside torch and this package: the operator
is plain PyTorch (a functional core, the module, the ``torch.ops.converse`` custom operators, the export
form)."""
from converse_plugin.ops.converse2d import Converse2D
from converse_plugin.ops.export import export_mode
from converse_plugin.ops.functional import (converse2d, converse_filter, converse_filter_conj, converse_lambda,
                                            kernel_otf)

__all__ = ['Converse2D', 'converse2d', 'converse_filter', 'converse_filter_conj', 'converse_lambda', 'kernel_otf',
           'export_mode']
