"""Parametrisations shared by tests: devices (the CPU, and CUDA where there is a GPU) and torch.compile
backends (``aot_eager`` traces what inductor traces: graph breaks, fake tensors, the autograd formulas, in
seconds; ``inductor`` also generates and compiles kernels, minutes on a small CPU, so it is in the slow tier)."""
import pytest
import torch

CUDA = pytest.param('cuda', marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                         reason='needs a CUDA device')])
DEVICES = ('cpu', CUDA)
BACKENDS = ('aot_eager', pytest.param('inductor', marks=pytest.mark.slow))


def with_backends(*cases: tuple) -> list:
    """Each case (a tuple of arguments) followed by each backend, the inductor ones in the slow tier: for a
    parametrize whose last argument is the backend."""
    return [pytest.param(*case, 'aot_eager') for case in cases] + [
        pytest.param(*case, 'inductor', marks=pytest.mark.slow) for case in cases]
