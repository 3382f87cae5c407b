"""Parametrisations shared by tests: devices (the CPU, and CUDA where there is a GPU) and torch.compile
backends (``aot_eager`` traces what inductor traces: graph breaks, fake tensors, the autograd formulas, in
seconds; ``inductor`` also generates and compiles kernels, minutes on a small CPU, so it is in the slow tier)."""
import pytest
import torch

CUDA = pytest.param('cuda', marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                         reason='needs a CUDA device')])
DEVICES = ('cpu', CUDA)
BACKEND_TIERS = {'aot_eager': (), 'inductor': (pytest.mark.slow, )}  # backend -> its marks


def with_backends(*cases: tuple, backends=tuple(BACKEND_TIERS), slow: bool = False) -> list:
    """Each case (a tuple of arguments) followed by each of ``backends``, with that backend's tier (the slow
    tier for every backend with ``slow``: cases beyond the fast tier's representative ones): for a
    parametrize whose last argument is the backend."""
    def marks(b):
        return (*BACKEND_TIERS[b], pytest.mark.slow) if slow else BACKEND_TIERS[b]
    return [pytest.param(*case, b, marks=marks(b)) for b in backends for case in cases]


BACKENDS = with_backends(())  # for a parametrize of the backend alone
