"""A watchdog for the collectives of a distributed run: a rank that waits too long names the rank that did not answer.

Every rank runs one :class:`Watchdog` thread. It writes a heartbeat (time, host, pid, what the rank is doing,
iteration) to the run's TCP store (``MASTER_ADDR:MASTER_PORT``, through a client of its own) every few
seconds, and checks what the main thread does. The main thread marks what it does with :func:`waiting`
(a collective: a training step's gradient all-reduce, the validation gather, the checkpoint gather and
barrier) and :func:`working` (work of its own that the others may wait for: a checkpoint save on rank 0, a
validation).

When this rank has waited longer than the timeout (``dist_params: timeout``, else
``CONVERSE_DIST_COLLECTIVE_TIMEOUT``) the watchdog reads the other ranks' heartbeats:

- a rank whose heartbeat stopped (a stopped or dead process, a lost machine) or a store that does not answer
  (its host is gone): this rank stops at once with one line naming the rank, its host, what it last did and
  when, and the command that resumes (:class:`PeerLostError`, exit status 2);
- every rank alive and one of them working (a long save): it keeps waiting (the backend's own timeout,
  set longer, still bounds the wait);
- every rank alive and waiting: a collective that never completes; it stops the same way.

A collective that fails at once (gloo's "Connection reset by peer" after a rank was killed) is turned into the
same one line by :func:`lost_peer_error`. The process then leaves with a non-zero status, so that torchrun
restarts the group when it can (``--max-restarts``) and the new group resumes from the last complete
checkpoint.
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

from converse_plugin.errors import UserError

__all__ = ['Watchdog', 'PeerLostError', 'waiting', 'working', 'start_watchdog', 'stop_watchdog', 'lost_peer_error',
           'active_watchdog', 'classify', 'Heartbeat', 'stopped_message', 'peer_failures_reported']

_PREFIX = 'converse_plugin/watchdog'
# what gloo, NCCL and the TCP store say when a peer is gone or a collective timed out
_COMM_FAILURES = ('connection reset', 'connection closed', 'closed by peer', 'broken pipe', 'timed out waiting',
                  'gloo', 'nccl', 'communicator was aborted', 'connection refused', 'no route to host',
                  'unexpected eof')


class PeerLostError(UserError, RuntimeError):
    """Another rank of the run died, stopped or cannot be reached; the message names it."""


@dataclass
class Heartbeat:
    rank: int
    time: float
    host: str
    pid: int
    what: str
    iteration: int | None
    waits: bool
    since: float

    def describe(self, now: float) -> str:
        at = f'{self.what} of iteration {self.iteration}' if self.iteration is not None else self.what
        return f'{at}, {now - self.time:.0f} s ago (host {self.host}, pid {self.pid})'


@dataclass
class _State:
    what: str = 'start'
    iteration: int | None = None
    waits: bool = False
    since: float = 0.0


def classify(mine: int, beats: dict[int, Heartbeat | None], world: int, now: float, stale: float) -> tuple[list, list]:
    """(ranks that did not answer, ranks working) among the other ranks: no heartbeat or one older than
    ``stale`` seconds -> did not answer; a fresh heartbeat of work (not a wait) -> working."""
    silent, busy = [], []
    for rank in range(world):
        if rank == mine:
            continue
        beat = beats.get(rank)
        if beat is None or now - beat.time > stale:
            silent.append(rank)
        elif not beat.waits:
            busy.append(rank)
    return silent, busy


class Watchdog:
    """The watchdog thread of one rank (see the module docstring)."""

    def __init__(self, rank: int, world: int, host: str, port: int, token: str, timeout: float,
                 stuck_timeout: float | None = None, resume_hint: Callable[[], str] | None = None,
                 log: Callable[[str], None] | None = None, interval: float | None = None,
                 store_host: str = 'rank 0') -> None:
        self.rank, self.world, self.timeout = rank, world, float(timeout)
        # every rank alive and waiting: stopped only after this (a slow step is not a dead rank)
        self.stuck_timeout = max(self.timeout, float(stuck_timeout or 0))
        self.address, self.store_host = f'{host}:{port}', store_host
        self.interval = interval if interval is not None else min(5.0, max(0.5, self.timeout / 20))
        self.stale = max(3 * self.interval, min(self.timeout / 2, 15.0))  # older heartbeat: no answer
        # under torchrun: the agent that started this worker; a worker whose agent is gone stops (it cannot be
        # restarted, and the other agents' restart waits for it)
        self._agent = os.getppid() if os.environ.get('TORCHELASTIC_RUN_ID') else None
        self.resume_hint, self.log = resume_hint, log
        self._host, self._port, self._token = host, port, token
        self._store = None
        self._state = _State(since=time.time())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name='converse_plugin-watchdog', daemon=True)
        self._last_store_error: str | None = None
        self._failed: _State | None = None  # the phase an exception left

    # ---------------------------------------------------------------- main thread
    def start(self) -> Watchdog:
        self._beat()  # every rank has a heartbeat before the first collective
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(self.interval + 5)

    @contextmanager
    def phase(self, what: str, iteration: int | None, waits: bool) -> Iterator[None]:
        before = self._state
        self._state = _State(what, iteration if iteration is not None else before.iteration, waits, time.time())
        try:
            yield
        except BaseException:  # the message names where it failed, not the phase around it
            if self._failed is None:
                self._failed = self._state
            raise
        finally:
            self._state = _State(before.what, before.iteration, before.waits, time.time())

    # ---------------------------------------------------------------- store
    def _key(self, rank: int) -> str:
        return f'{_PREFIX}/{self._token}/{rank}'

    def _connect(self):
        if self._store is None:
            import torch.distributed as dist

            self._store = dist.TCPStore(self._host, self._port, is_master=False, wait_for_workers=False,
                                        timeout=datetime.timedelta(seconds=max(2.0, 2 * self.interval)))
        return self._store

    def _beat(self) -> None:
        state = self._state
        record = {'time': time.time(), 'host': socket.gethostname(), 'pid': os.getpid(), 'what': state.what,
                  'iteration': state.iteration, 'waits': state.waits, 'since': state.since}
        try:
            self._connect().set(self._key(self.rank), json.dumps(record))
            self._last_store_error = None
        except Exception as err:  # the store's host is stopped or gone: remembered for the message
            self._store_failed(err)

    def _store_failed(self, err: Exception) -> None:
        """Forget the client (the next use reconnects) and remember why, for the message."""
        self._store = None
        self._last_store_error = ' '.join(str(err).split())[:200]

    def heartbeats(self) -> dict[int, Heartbeat | None] | None:
        """Every rank's last heartbeat (None for a rank without one), or None when the store does not answer."""
        try:
            store = self._connect()
            beats: dict[int, Heartbeat | None] = {}
            for rank in range(self.world):
                key = self._key(rank)
                if not store.check([key]):
                    beats[rank] = None
                    continue
                data = json.loads(store.get(key))
                beats[rank] = Heartbeat(rank, data['time'], data['host'], data['pid'], data['what'],
                                        data['iteration'], data['waits'], data['since'])
            return beats
        except Exception as err:
            self._store_failed(err)
            return None

    # ---------------------------------------------------------------- diagnosis
    def diagnosis(self, settle: float = 0.0, waited: float = float('inf')) -> tuple[str, bool]:
        """(what the other ranks are doing, whether to stop): stop when a rank did not answer, or when every
        rank is alive and waiting and this one has ``waited`` longer than the stuck timeout. ``settle`` seconds
        are given to a rank that just died for its heartbeat to become stale."""
        deadline = time.time() + settle
        while True:
            now = time.time()
            beats = self.heartbeats()
            if beats is None:
                return (f'{self.store_host} did not answer (it hosts the run\'s store at {self.address}, which does '
                        f'not answer: {self._last_store_error})'), True
            silent, busy = classify(self.rank, beats, self.world, now, self.stale)
            if silent or time.time() >= deadline:
                break
            time.sleep(min(self.interval, max(0.1, deadline - time.time())))
        if silent:
            parts = []
            for rank in silent:
                beat = beats.get(rank)
                parts.append(f'rank {rank} did not answer' + (f' (last seen at {beat.describe(now)})' if beat
                                                               else ' (no heartbeat at all)'))
            return '; '.join(parts), True
        if busy:
            return '; '.join(f'rank {r} is at {beats[r].describe(now)}' for r in busy), False
        waiting_ranks = ', '.join(str(r) for r in range(self.world) if r != self.rank)
        return (f'ranks {waiting_ranks} are alive but waiting too: a collective that never completes',
                waited > self.stuck_timeout)

    def message(self, cause: str) -> str:
        state = self._failed or self._state
        at = f'{state.what} of iteration {state.iteration}' if state.iteration is not None else state.what
        hint = self.resume_hint() if self.resume_hint else 'run the same command again with --auto_resume'
        return f'rank {self.rank} stopped at {at}: {cause}; {hint}'

    # ---------------------------------------------------------------- thread
    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._beat()
            state = self._state
            if self._agent is not None and os.getppid() != self._agent:
                self._fire(self.message(f'its torchrun agent (pid {self._agent}) is gone, so this worker cannot be '
                                        'restarted and the other machines wait for it'))
            if not state.waits or time.time() - state.since <= self.timeout:
                continue
            what, lost = self.diagnosis(waited=time.time() - state.since)
            if not lost or self._stop.is_set() or self._state is not state:
                continue
            self._fire(self.message(f'waited {time.time() - state.since:.0f} s (the timeout is {self.timeout:g} s, '
                                    f'dist_params:timeout): {what}'))

    def _fire(self, message: str) -> None:
        line = f'{_prog()}: error: {message}'
        if self._stop.is_set():
            return
        try:
            if self.log is not None:
                self.log(message)
        finally:
            print(line, file=sys.stderr, flush=True)
            os._exit(PeerLostError.exit_code)


def _prog() -> str:
    argv = sys.argv[1:2]
    command = argv[0] if argv and argv[0] in ('train', 'test') else 'train'
    return f'basicsr {command}'


_active: Watchdog | None = None


def active_watchdog() -> Watchdog | None:
    return _active


def start_watchdog(watchdog: Watchdog) -> Watchdog:
    global _active
    stop_watchdog()
    _active = watchdog.start()
    return watchdog


def stop_watchdog() -> None:
    global _active
    if _active is not None:
        _active.stop()
        _active = None


def _phase(what: str, iteration: int | None, waits: bool) -> AbstractContextManager:
    return nullcontext() if _active is None else _active.phase(what, iteration, waits)


def waiting(what: str, iteration: int | None = None) -> AbstractContextManager:
    """This rank waits for the others here (a collective); the watchdog bounds the wait. A no-op without one."""
    return _phase(what, iteration, waits=True)


def working(what: str, iteration: int | None = None) -> AbstractContextManager:
    """This rank works on its own here (the others may wait for it). A no-op without a watchdog."""
    return _phase(what, iteration, waits=False)


def is_comm_failure(err: BaseException) -> bool:
    """Whether ``err`` is what a collective raises when a peer is gone or a collective timed out."""
    try:
        import torch.distributed as dist
        if isinstance(err, getattr(dist, 'DistError', ())):
            return True
    except ImportError:  # pragma: no cover
        pass
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(s in text for s in _COMM_FAILURES)


def lost_peer_error(err: BaseException) -> PeerLostError | None:
    """The one-line error for a collective that failed because another rank is gone, or None when ``err`` is
    something else or no watchdog runs."""
    watchdog = _active
    if watchdog is None or not is_comm_failure(err):
        return None
    what, _ = watchdog.diagnosis(settle=watchdog.stale + watchdog.interval)
    import re

    reason = re.sub(r'^\[[^\]]*\]\s*', '', ' '.join(str(err).split('\n')[0].split()))[:160]  # no source location
    error = PeerLostError(watchdog.message(f'a collective failed ({reason}): {what}'))
    if watchdog.log is not None:
        watchdog.log(str(error))
    return error


def stopped_message(signal_name: str) -> str:
    """The one line of a worker that its torchrun agent stopped (SIGTERM): where it was, what the other ranks
    were doing, and the command that resumes."""
    watchdog = _active
    if watchdog is None:
        return (f'stopped by {signal_name} from torchrun\'s agent (a worker of the run failed or the agent was '
                'stopped); torchrun restarts the group if it can, else run the same command again with --auto_resume')
    what, _ = watchdog.diagnosis(settle=min(watchdog.stale + watchdog.interval, 10.0))
    error = watchdog.message(f'stopped by {signal_name} from torchrun\'s agent, which restarts the group if it can '
                             f'(the other ranks: {what})')
    if watchdog.log is not None:
        watchdog.log(error)
    return error


@contextmanager
def peer_failures_reported() -> Iterator[None]:
    """A collective that fails because another rank is gone leaves the block as :class:`PeerLostError` (one
    line, :func:`lost_peer_error`); any other exception as it is."""
    try:
        yield
    except RuntimeError as err:
        if (lost := lost_peer_error(err)) is None:
            raise
        raise lost from None
