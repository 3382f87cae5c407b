"""The NaN/Inf guard of the training loop: a batch or a loss that is not finite stops training at once.

:class:`~converse_plugin.errors.TrainingDivergedError` names the iteration and the last good checkpoint;
nothing is saved after it (exit code 3 from ``basicsr train``).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from converse_plugin.errors import TrainingDivergedError

__all__ = ['check_finite_batch', 'check_finite_losses']


def _last_checkpoint_text(last: tuple[str, str] | None) -> str:
    if last is None:
        return 'no checkpoint was saved before it'
    models, state = last
    return f'last good checkpoint: {models} (training state {state}); fix the cause, then resume with --auto_resume'


def check_finite_batch(batch: dict, current_iter: int, last: tuple[str, str] | None) -> None:
    """Raise TrainingDivergedError when a tensor of the batch (``lq``, ``gt``, ``kernel``) has NaN/Inf."""
    for key in ('lq', 'gt', 'kernel'):
        value = batch.get(key)
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            paths = batch.get('gt_path') or batch.get('lq_path') or []
            where = f" (images: {', '.join(map(str, paths))})" if paths else ''
            raise TrainingDivergedError(
                f'NaN or Inf in the network input {key!r} at iteration {current_iter}{where}: training stopped '
                f'before this step; {_last_checkpoint_text(last)}')


def check_finite_losses(losses: dict[str, Any], current_iter: int, last: tuple[str, str] | None) -> None:
    """Raise TrainingDivergedError when a logged loss is NaN or Inf."""
    bad = {k: v for k, v in losses.items() if not math.isfinite(float(v))}
    if bad:
        values = ', '.join(f'{k} = {v}' for k, v in bad.items())
        raise TrainingDivergedError(
            f'NaN or Inf in the loss at iteration {current_iter} ({values}): training stopped, nothing was saved '
            f'after it; {_last_checkpoint_text(last)}. Lower train:optim_g:lr or check the data')
