"""Device parametrisation shared by tests that run on the CPU and, where there is a GPU, on CUDA."""
import pytest
import torch

CUDA = pytest.param('cuda', marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                         reason='needs a CUDA device')])
DEVICES = ('cpu', CUDA)
