"""Another process's activation reaches a watcher within a second; a PostgreSQL restart is survived; a LISTEN
connection that stops answering is replaced."""
from __future__ import annotations

import os
import signal
import sys
import traceback

import pytest

from app.storage import ActiveWatcher, NewJob, open_storage
from app.storage.watcher import APPLICATION_NAME
from tests.postgres import poll
from tests.storage.helpers import register

SEEN_WITHIN_S = 1.0  # the promise: a process sees a new activation within 1 s


class Seen:
    def __init__(self):
        self.events: list[tuple[str | None, int]] = []

    def __call__(self, model_id, version):
        self.events.append((model_id, version))


def test_an_activation_elsewhere_is_seen_within_a_second(storage, storage_url, checkpoints):
    register(storage, "m-0", checkpoints[0])
    register(storage, "m-1", checkpoints[1])
    seen = Seen()
    watcher = ActiveWatcher(storage_url, seen)  # its own engine: as another process would have
    assert watcher.start() == (None, 0)
    try:
        storage.models.activate("m-0")
        poll(lambda: ("m-0", 1) in seen.events, SEEN_WITHIN_S, message="first activation")
        storage.models.activate("m-1")
        poll(lambda: ("m-1", 2) in seen.events, SEEN_WITHIN_S, message="second activation")
        assert seen.events == [("m-0", 1), ("m-1", 2)]
    finally:
        watcher.stop()


def test_postgresql_notifies_without_waiting_for_the_poll(postgres_url, checkpoints):
    storage = open_storage(postgres_url)
    register(storage, "m-0", checkpoints[0])
    seen = Seen()
    watcher = ActiveWatcher(postgres_url, seen, poll_s=3600)  # a poll could not explain a prompt answer
    watcher.start()
    try:
        storage.models.activate("m-0")
        poll(lambda: seen.events == [("m-0", 1)], SEEN_WITHIN_S, message="NOTIFY delivered")
    finally:
        watcher.stop()
        storage.close()


def test_since_version_reports_a_change_that_happened_before_start(storage, checkpoints):
    register(storage, "m-0", checkpoints[0])
    storage.models.activate("m-0")
    seen = Seen()
    watcher = storage.watch_active(seen, since_version=0)
    watcher.start()
    watcher.stop()
    assert seen.events == [("m-0", 1)]


def test_stores_and_watcher_survive_a_postgresql_restart(postgres_server, postgres_url, checkpoints):
    storage = open_storage(postgres_url)
    register(storage, "m-0", checkpoints[0])
    storage.jobs.submit(NewJob(id="j", config={}, progress={}, max_attempts=1), queue_limit=10)
    seen = Seen()
    watcher = ActiveWatcher(postgres_url, seen)
    watcher.start()
    try:
        storage.models.activate("m-0")
        poll(lambda: seen.events == [("m-0", 1)], SEEN_WITHIN_S)
        postgres_server.restart()  # every pooled and listening connection dies, as in a crash
        assert storage.models.active() == ("m-0", 1)  # the pool replaced its dead connections (pre-ping)
        assert storage.jobs.claim("w", "host", 1, lease_s=30).id == "j"
        register(storage, "m-1", checkpoints[1])
        storage.models.activate("m-1")
        # The watcher reconnects on its own (within its 0.5 s back-off) and reads the pointer again.
        poll(lambda: ("m-1", 2) in seen.events, 10, message="activation after restart")
    finally:
        watcher.stop()
        storage.close()



def listening_backends(url: str) -> list[int]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = %s",
                            (APPLICATION_NAME, url.rsplit("/", 1)[1])).fetchall()
    return [pid for (pid,) in rows]


def replaced_listener(url: str, paused: int, watcher: ActiveWatcher) -> list[int]:
    """The watcher's LISTEN backends other than the paused one, once there is one; failing, where the watcher
    thread was and what each backend was doing."""
    # seconds once the watchdog gives up (2 s), but a loaded machine (the suite runs in parallel) can take longer
    try:
        return poll(lambda: [p for p in listening_backends(url) if p != paused], 45, message="a new LISTEN connection")
    except pytest.fail.Exception as exc:
        raise AssertionError(f"{exc}; the watcher thread was at:\n{where(watcher)}\nbackends: {backends(url)}") from None


def where(watcher: ActiveWatcher) -> str:
    thread = watcher._thread
    frame = sys._current_frames().get(thread.ident) if thread is not None and thread.ident is not None else None
    return "".join(traceback.format_stack(frame)) if frame is not None else "(no thread)"


def backends(url: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT pid, application_name, state, wait_event_type, wait_event, left(query, 60) "
                            "FROM pg_stat_activity WHERE datname = %s", (url.rsplit("/", 1)[1],)).fetchall()


def test_a_listen_connection_that_stops_answering_is_replaced_within_seconds(postgres_url, checkpoints):
    """Only the LISTEN connection's backend is paused (SIGSTOP): nothing closes the socket, so nothing but the
    probe can tell. The watcher must open a new connection, and hear activations on it."""
    storage = open_storage(postgres_url)
    register(storage, "m-0", checkpoints[0])
    seen = Seen()
    watcher = ActiveWatcher(postgres_url, seen, poll_s=3600, probe_s=0.5)
    watcher.start()
    paused = poll(lambda: listening_backends(postgres_url), 10, message="the LISTEN connection")
    assert len(paused) == 1
    try:
        os.kill(paused[0], signal.SIGSTOP)
        assert len(replaced_listener(postgres_url, paused[0], watcher)) == 1
        storage.models.activate("m-0")
        poll(lambda: seen.events == [("m-0", 1)], 15, message="an activation heard on the new connection")
    finally:
        os.kill(paused[0], signal.SIGCONT)
        watcher.stop()
        storage.close()


def test_a_backend_that_stops_answering_before_listen_is_replaced(postgres_url, checkpoints, monkeypatch):
    """The same pause, at the moment the watcher's connection opens and before its LISTEN: the paused-backend test
    above once paused the backend there by chance, and the watcher waited on LISTEN for good. The connection is
    real; only the moment of the pause is chosen."""
    import psycopg

    storage = open_storage(postgres_url)
    register(storage, "m-0", checkpoints[0])
    real_connect = psycopg.connect
    paused: list[int] = []

    def connect(*args, **kwargs):
        conn = real_connect(*args, **kwargs)
        if not paused and kwargs.get("application_name") == APPLICATION_NAME:
            paused.append(conn.info.backend_pid)
            os.kill(paused[0], signal.SIGSTOP)
        return conn

    monkeypatch.setattr(psycopg, "connect", connect)
    seen = Seen()
    watcher = ActiveWatcher(postgres_url, seen, poll_s=3600, probe_s=0.5)
    watcher.start()
    try:
        poll(lambda: paused, 10, message="the watcher's first connection")
        replaced_listener(postgres_url, paused[0], watcher)
        storage.models.activate("m-0")
        poll(lambda: seen.events == [("m-0", 1)], 15, message="an activation heard on the new connection")
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)
        watcher.stop()
        storage.close()
