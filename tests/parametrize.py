"""Parametrisations shared by tests: devices (the CPU, and CUDA where there is a GPU) and torch.compile
backends (``aot_eager`` traces what inductor traces: graph breaks, fake tensors, the autograd formulas, in
seconds; ``inductor`` also generates and compiles kernels, minutes on a small CPU, so it is in the slow tier)."""
import pytest
import torch

CUDA = pytest.param('cuda', marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                         reason='needs a CUDA device')])
DEVICES = ('cpu', CUDA)
BACKEND_TIERS = {'aot_eager': (), 'inductor': (pytest.mark.slow, )}  # backend -> its marks


def with_backends(*cases: tuple, backends=tuple(BACKEND_TIERS)) -> list:
    """Each case (a tuple of arguments) followed by each of ``backends``, with that backend's tier: for a
    parametrize whose last argument is the backend."""
    return [pytest.param(*case, b, marks=BACKEND_TIERS[b]) for b in backends for case in cases]


BACKENDS = with_backends(())  # for a parametrize of the backend alone
