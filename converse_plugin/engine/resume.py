"""Which training state a run resumes from, loaded safely, from any working directory.

BasicSR 1.4.2's ``load_resume_state`` maps the state to ``torch.cuda.current_device()`` (fails on the CPU),
looks for ``experiments/<name>/training_states`` relative to the *current directory*, and unpickles with
``weights_only=False``. :func:`load_resume_state` maps to the run's device, looks in
``opt['path']['training_states']`` (under ``--root``), loads with ``weights_only=True`` and, with
``--auto_resume``, takes the newest state that loads, skipping a truncated or corrupt one with a warning.
In a distributed run rank 0 chooses that state and every rank loads the one it chose (one iteration for
all ranks, even if a rank sees the folder differently).
"""
from __future__ import annotations

import sys

import torch

from converse_plugin.engine.dist import broadcast_object, gather_to_all, is_distributed
from converse_plugin.errors import CheckpointError
from converse_plugin.io.checkpoint import find_resume_state, load_training_state

__all__ = ['load_resume_state']


def _warn_stderr(message: str) -> None:
    """Warnings from before the pipeline opens its log (BasicSR's logger must not be created earlier)."""
    print(f'WARNING: {message}', file=sys.stderr, flush=True)


def _agreed_resume_state(opt: dict, map_location: str) -> tuple[str | None, dict | None]:
    """Distributed ``--auto_resume``: rank 0 picks the newest complete state and sends its path to every
    rank (so all ranks resume from the same iteration, whatever each one sees in the folder); every rank
    loads it, and a rank that cannot (no shared file system) stops every rank with one error."""
    chosen = None
    if opt['rank'] == 0:
        found = find_resume_state(opt['path']['training_states'], _warn_stderr, map_location)
        chosen = found[0] if found is not None else None
    chosen = broadcast_object(chosen)
    state, error = None, None
    if chosen is not None:
        try:
            state = load_training_state(chosen, map_location)
        except CheckpointError as err:
            error = str(err)
    errors = [(rank, e) for rank, e in enumerate(gather_to_all(error)) if e]
    if errors:
        rank, first = errors[0]
        raise CheckpointError(f"auto_resume: rank {rank} cannot load {chosen}, the state rank 0 chose ({first}); "
                              'every rank must see the experiment folder (a shared file system)')
    return chosen, state


def load_resume_state(opt: dict) -> dict | None:
    """The training state to resume from, or None; sets ``opt['path']['resume_state']`` for auto-resume
    and points ``pretrain_network_*`` at the resumed iteration's files (BasicSR's ``check_resume``).

    Raises:
        CheckpointNotFoundError: ``path:resume_state`` names a file that does not exist.
        CheckpointError: ``path:resume_state`` is truncated, corrupt or not a training state.
    """
    from basicsr.utils import check_resume

    cuda = opt['num_gpu'] != 0 and torch.cuda.is_available()
    map_location = f'cuda:{torch.cuda.current_device()}' if cuda else 'cpu'
    resume_state = None
    if opt['auto_resume'] and is_distributed():
        chosen, resume_state = _agreed_resume_state(opt, map_location)
        if chosen is not None:
            opt['path']['resume_state'] = chosen
    elif opt['auto_resume']:
        found = find_resume_state(opt['path']['training_states'], _warn_stderr, map_location)
        if found is not None:
            opt['path']['resume_state'], resume_state = found
    elif opt['path'].get('resume_state'):
        resume_state = load_training_state(opt['path']['resume_state'], map_location)
    if resume_state is None:
        return None
    check_resume(opt, resume_state['iter'])
    return resume_state
