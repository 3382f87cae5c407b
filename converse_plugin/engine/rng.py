"""Capture and restore every random state that training consumes (exact resume).

The states are kept as tensors, ints, lists and tuples only, so that a training state holding them still
loads with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch

__all__ = ['capture_rng_state', 'restore_rng_state', 'preserved_rng']


def capture_rng_state() -> dict:
    """The global torch (CPU, and CUDA when initialised), numpy and Python random states."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        'torch': torch.get_rng_state(),
        'numpy': (kind, keys.tolist(), int(pos), int(has_gauss), float(cached)),
        'python': random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Set the global states saved by :func:`capture_rng_state` (CUDA ones only where CUDA is initialised)."""
    torch.set_rng_state(state['torch'].cpu() if isinstance(state['torch'], torch.Tensor) else state['torch'])
    kind, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    if 'cuda' in state and torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda_states = [s.cpu() for s in state['cuda']][:torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda_states)


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block (validation) without changing the random states training sees afterwards."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)
