"""Shared test fixtures. ``../shared`` (beside the project root) holds the released checkpoints and
benchmark images; tests that need it skip with a reason when it is absent (a user's clone has none)."""
from __future__ import annotations

from pathlib import Path

import pytest

import converse_plugin  # noqa: F401  (applies compat, registers everything)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / 'shared'


def require_shared(*parts: str) -> Path:
    """Path under ../shared, or skip the test with a clear reason when it is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f'needs {path} (the shared checkpoints/data beside the project root); absent here')
    return path


@pytest.fixture
def shared():
    return require_shared


@pytest.fixture
def no_tf32():
    """cuDNN convolutions default to TF32 on CUDA (10-bit mantissa): compare full float32 arithmetic."""
    import torch
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
