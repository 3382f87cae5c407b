"""Preemption: a signal asks the training loop to save a complete checkpoint and stop; ``--auto_resume`` continues.

A cluster that preempts a job (SLURM's ``--signal=USR1@T``, a preemption's SIGTERM with its grace time) warns
the job's processes with a signal. During training (:func:`preemption_signals`) SIGUSR1 always, and SIGTERM
under SLURM (``SLURM_JOB_ID`` set), only set a flag; the loop asks :meth:`Preemption.requested` after each
iteration. In a distributed run the ranks agree on it (a max all-reduce of the flag), so that every rank stops
after the same iteration, even when the signal reaches them at different moments. The loop then saves the
networks and the training state (with its data position and random states: the resumed run is exact),
waits until rank 0 has written them, and ends with :class:`Preempted` (exit status 75, ``EX_TEMPFAIL``: not
finished, run again). A second signal while the first is handled is ignored (SLURM signals the batch shell,
srun and the tasks).

Under torchrun (outside SLURM) SIGTERM is the agent stopping its workers: a worker of another machine died,
the rendezvous host is gone, or the agent itself was asked to stop. The worker then stops at once
(:class:`StoppedByLauncher`, raised where the main thread is) and prints one line: what it was doing, what
the other ranks were doing (:mod:`converse_plugin.engine.watchdog`) and the command that resumes, instead of
dying silently. torchrun restarts the group when it can.

``scripts/slurm_train.sbatch`` requeues the job (``--requeue``, ``scontrol requeue``); the requeued job runs
the same command with ``--auto_resume`` and continues from the saved iteration.
"""
from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ['Preemption', 'Preempted', 'StoppedByLauncher', 'preemption_signals', 'PREEMPTED_EXIT_CODE']

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: stopped before the end, the same command with --auto_resume continues


class Preempted(Exception):
    """Training stopped on a preemption signal after saving a complete checkpoint (not an error)."""

    exit_code = PREEMPTED_EXIT_CODE


class StoppedByLauncher(BaseException):
    """torchrun's agent stopped this worker (SIGTERM). A BaseException, like KeyboardInterrupt, so that no
    ``except Exception`` on the way swallows it."""

    exit_code = 128 + signal.SIGTERM


def _under_torchrun(environ) -> bool:
    return bool(environ.get('TORCHELASTIC_RUN_ID')) and not environ.get('SLURM_JOB_ID')


def preemption_signals(environ: dict | None = None) -> list[signal.Signals]:
    """SIGUSR1 (SLURM's ``--signal=USR1@T``, or sent by hand), and SIGTERM under SLURM (a preemption)."""
    environ = os.environ if environ is None else environ
    found = [signal.SIGUSR1] if hasattr(signal, 'SIGUSR1') else []
    if environ.get('SLURM_JOB_ID'):
        found.append(signal.SIGTERM)
    return found


class Preemption:
    """The flag the signal handlers set, and the ranks' agreement on it."""

    def __init__(self) -> None:
        self.received: int | None = None

    def _handle(self, signum: int, frame) -> None:  # noqa: ARG002 (the handler's signature)
        if self.received is None:
            self.received = signum

    def _stop(self, signum: int, frame) -> None:  # noqa: ARG002
        signal.signal(signum, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        raise StoppedByLauncher(signal.Signals(signum).name)

    @contextmanager
    def installed(self, signals: list[signal.Signals] | None = None) -> Iterator[Preemption]:
        """The handlers while the block runs (main thread only; elsewhere nothing is installed)."""
        import threading

        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in preemption_signals() if signals is None else signals:
                previous[sig] = signal.signal(sig, self._handle)
            if signals is None and _under_torchrun(os.environ):
                previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._stop)
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def requested(self) -> str | None:
        """The name of the signal that asks to stop, agreed by every rank (a collective in a distributed run:
        every rank must call it at the same point of the loop), or None."""
        from converse_plugin.engine.dist import is_distributed

        signum = self.received or 0
        if is_distributed():
            import torch
            import torch.distributed as dist

            from converse_plugin.engine.watchdog import waiting

            device = torch.device('cuda', torch.cuda.current_device()) if dist.get_backend() == 'nccl' else 'cpu'
            flag = torch.tensor([signum], dtype=torch.int64, device=device)
            with waiting('the preemption check'):
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            signum = int(flag.item())
        return signal.Signals(signum).name if signum else None
