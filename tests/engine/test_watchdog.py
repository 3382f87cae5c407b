"""The collective watchdog (converse_plugin/engine/watchdog.py) on a real TCP store in this process: heartbeats,
what it says of a rank that never answers, of a busy rank and of a store that is gone, and when it stops."""
from __future__ import annotations

import datetime
import socket
import time

import pytest
import torch.distributed as dist

from converse_plugin.engine import watchdog as wd


@pytest.fixture()
def store():
    master = dist.TCPStore('127.0.0.1', 0, is_master=True, wait_for_workers=False,
                           timeout=datetime.timedelta(seconds=10))
    yield master
    del master


def _dog(store, rank, world=2, timeout=1.0, **kw):
    return wd.Watchdog(rank, world, '127.0.0.1', store.port, 'tok', timeout, interval=0.1, **kw)


def test_classify_silent_and_busy_ranks():
    now = 100.0
    beat = lambda r, t, waits: wd.Heartbeat(r, t, 'h', 1, 'x', 3, waits, t)  # noqa: E731
    beats = {0: beat(0, 99.0, True), 1: None, 2: beat(2, 90.0, False), 3: beat(3, 99.5, False), 4: beat(4, 99.9, True)}
    silent, busy = wd.classify(0, beats, 5, now, stale=5.0)
    assert silent == [1, 2] and busy == [3]


def test_a_rank_without_heartbeat_did_not_answer(store):
    mine = _dog(store, 0)
    mine._beat()
    text, stop = mine.diagnosis()
    assert stop and 'rank 1 did not answer (no heartbeat at all)' in text


def test_a_busy_rank_keeps_the_others_waiting(store):
    mine, other = _dog(store, 0), _dog(store, 1)
    mine._beat()
    with other.phase('the checkpoint save', 4, waits=False):
        other._beat()
        text, stop = mine.diagnosis()
    assert not stop and 'rank 1 is at the checkpoint save of iteration 4' in text


def test_every_rank_waiting_stops_only_after_the_stuck_timeout(store):
    mine, other = _dog(store, 0, stuck_timeout=50), _dog(store, 1)
    with other.phase('the training step', 7, waits=True):
        other._beat()
        mine._beat()
        assert mine.diagnosis(waited=10)[1] is False  # alive, waiting, not yet past the stuck timeout
        text, stop = mine.diagnosis(waited=60)
    assert stop and 'alive but waiting too' in text


def test_a_stale_heartbeat_names_where_the_rank_was(store):
    mine, other = _dog(store, 0), _dog(store, 1)
    with other.phase('the training step', 5, waits=True):
        other._beat()
    time.sleep(mine.stale + 0.2)
    mine._beat()
    text, stop = mine.diagnosis()
    assert stop and 'rank 1 did not answer (last seen at the training step of iteration 5' in text


def test_the_thread_stops_a_rank_that_waits_past_the_timeout(store, monkeypatch):
    fired = []
    mine = _dog(store, 0, timeout=0.5, resume_hint=lambda: 'resume with: X')
    monkeypatch.setattr(mine, '_fire', lambda message: (fired.append(message), mine._stop.set()))
    mine.start()
    try:
        with mine.phase('the training step', 9, waits=True):
            deadline = time.time() + 10
            while not fired and time.time() < deadline:
                time.sleep(0.05)
    finally:
        mine.stop()
    assert fired, 'the watchdog did not stop the waiting rank'
    message = fired[0]
    assert message.startswith('rank 0 stopped at the training step of iteration 9: waited')
    assert 'rank 1 did not answer' in message and message.endswith('resume with: X')


def test_work_of_its_own_is_never_stopped(store, monkeypatch):
    fired = []
    mine = _dog(store, 0, timeout=0.3)
    monkeypatch.setattr(mine, '_fire', fired.append)
    mine.start()
    try:
        with mine.phase('the checkpoint save', 2, waits=False):
            time.sleep(1.0)
    finally:
        mine.stop()
    assert fired == []


def test_a_store_that_is_gone_names_its_host():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    mine = wd.Watchdog(1, 2, '127.0.0.1', port, 'tok', 1.0, interval=0.1, store_host='rank 0 on 127.0.0.1')
    text, stop = mine.diagnosis()
    assert stop and text.startswith('rank 0 on 127.0.0.1 did not answer (it hosts the run\'s store at 127.0.0.1:')


def test_communication_failures_are_recognised():
    assert wd.is_comm_failure(RuntimeError('[pair.cc:545] Read error [127.0.0.1]:1: Connection reset by peer'))
    assert wd.is_comm_failure(RuntimeError('Timed out waiting 15000ms for recv operation to complete'))
    assert not wd.is_comm_failure(RuntimeError('mat1 and mat2 shapes cannot be multiplied'))
    assert not wd.is_comm_failure(RuntimeError('DataLoader timed out after 5 seconds'))
    assert not wd.is_comm_failure(ValueError('Connection reset'))
    assert wd.lost_peer_error(RuntimeError('Connection reset by peer')) is None  # no watchdog running


def test_phases_without_a_watchdog_are_free():
    with wd.waiting('anything', 1), wd.working('anything else'):
        pass
