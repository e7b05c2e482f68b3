"""Tell a process when another one activates a model.

PostgreSQL: LISTEN on the channel that activation NOTIFYs inside its transaction (so the message arrives
only once the change is committed), with a slower poll as a fallback for anything missed while the
connection was down; a lost connection is re-opened on its own. A LISTEN connection only receives, so a dead
one would go unnoticed: it has TCP keepalives and a user timeout, and the pointer is read over it every
`probe_s` under a watchdog that shuts the socket after PROBE_TIMEOUT_S, so a connection that stopped
answering is replaced within seconds. SQLite: a poll of the one-row pointer every
0.2 s (an indexed single-row read). Either way the callback runs on the watcher's thread with
(model_id, version) each time the version differs from the last one seen, and the database is the authority:
a notification only prompts a read.

The same read carries `aliases_version`, which grows on every change to the other aliases (aliases.py): when it
differs from the last one seen, `on_aliases(version)` runs on the watcher's thread (the caller then reads the
aliases), so aliases are followed as promptly as the pointer, at no extra cost per look.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .aliases import NOTIFY_CHANNEL
from .engine import make_engine, read
from .schema import active_model

log = logging.getLogger("seq2seq.storage.watcher")
Callback = Callable[[str | None, int], None]
AliasesCallback = Callable[[int], None]
SQLITE_POLL_S = 0.2
POSTGRES_FALLBACK_POLL_S = 5.0
RECONNECT_S = 0.5
PROBE_S = 5.0
PROBE_TIMEOUT_S = 2.0
T = TypeVar("T")
APPLICATION_NAME = "seq2seq-watcher"  # how pg_stat_activity names the LISTEN connection
# libpq's TCP settings for the LISTEN connection: a peer that vanished is noticed in about 10 s even when idle.
KEEPALIVES: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
              "tcp_user_timeout": 10_000}


class ActiveWatcher:
    """ActiveWatcher(engine_or_url, callback).start() ... .stop().

    since_version: the version the caller already acted on (e.g. from ModelStore.active()); if the pointer has
    moved past it by the time the watcher starts, the callback fires at once, so nothing falls in between."""

    def __init__(self, engine: Engine | str, callback: Callback, *, since_version: int | None = None,
                 poll_s: float | None = None, reconnect_s: float = RECONNECT_S, probe_s: float = PROBE_S,
                 on_aliases: AliasesCallback | None = None):
        self._owns_engine = not isinstance(engine, Engine)
        self.engine: Engine = engine if isinstance(engine, Engine) else make_engine(engine)
        self.callback = callback
        self.postgres = self.engine.dialect.name == "postgresql"
        self.poll_s = poll_s if poll_s is not None else (POSTGRES_FALLBACK_POLL_S if self.postgres else SQLITE_POLL_S)
        self.reconnect_s = reconnect_s
        self.probe_s = probe_s
        self.last: tuple[str | None, int] | None = None
        self.on_aliases = on_aliases
        self.aliases_last: int | None = None  # the aliases_version on_aliases last took without failing
        self._since = since_version
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def since(self, version: int) -> None:
        """Set since_version after construction (before start)."""
        self._since = version

    def start(self) -> tuple[str | None, int]:
        """Read the pointer now, start watching, and return what was read."""
        model_id, version, aliases_version = self._read_engine()
        self._seen(model_id, version, fire=self._since is not None and version != self._since)
        self._aliases_seen(aliases_version)
        self._thread = threading.Thread(target=self._run, name="active-model-watcher", daemon=True)
        self._thread.start()
        return model_id, version

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._owns_engine:
            self.engine.dispose()

    # -- internals -------------------------------------------------------------------------------------
    def _read_engine(self) -> tuple[str | None, int, int]:
        with read(self.engine) as conn:
            row = conn.execute(sa.select(active_model.c.model_id, active_model.c.version, active_model.c.aliases_version)
                               .where(active_model.c.id == 1)).one()
        return row.model_id, row.version, row.aliases_version

    def _seen(self, model_id: str | None, version: int, fire: bool = True) -> None:
        if self.last is not None and self.last[1] == version:
            return
        if fire:
            try:
                self.callback(model_id, version)
            except Exception:  # the watcher outlives a failing callback, and tries again at the next look
                log.exception("active-model callback failed for %s (version %d)", model_id, version)
                return
        self.last = (model_id, version)

    def _aliases_seen(self, version: int) -> None:
        if self.on_aliases is None or self.aliases_last == version:
            return
        try:
            self.on_aliases(version)
        except Exception:  # tried again at the next look
            log.exception("aliases callback failed (aliases version %d)", version)
            return
        self.aliases_last = version

    def _check(self, found: tuple[str | None, int, int] | None = None) -> None:
        model_id, version, aliases_version = found if found is not None else self._read_engine()
        self._seen(model_id, version)
        self._aliases_seen(aliases_version)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen() if self.postgres else self._poll()
            except Exception as exc:  # the database went away: say so once per attempt and try again
                log.warning("active-model watcher lost the database (%s); retrying", exc)
                self._stop.wait(self.reconnect_s)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._check()
            self._stop.wait(self.poll_s)

    def _listen(self) -> None:
        import psycopg

        conninfo = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        every = min(self.poll_s, self.probe_s)
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5, application_name=APPLICATION_NAME,
                             **KEEPALIVES) as conn:
            # Under the probe's watchdog too: a backend that stops answering right after the connection opens
            # (found by the paused-backend test, which paused it before LISTEN) held the watcher here for good.
            _guarded(conn, lambda: conn.execute(f"LISTEN {NOTIFY_CHANNEL}"))
            self._check(self._probe(conn))  # after LISTEN: an activation between the last read and now is not missed
            next_poll = time.monotonic() + every
            while not self._stop.is_set():
                notified = any(True for _ in conn.notifies(timeout=0.2))
                if notified or time.monotonic() >= next_poll:
                    self._check(self._probe(conn))  # the poll and the probe of this connection at once
                    next_poll = time.monotonic() + every

    def _probe(self, conn) -> tuple[str | None, int, int]:
        """Read the pointer over the LISTEN connection itself (_guarded: one that stops answering is replaced)."""
        row = _guarded(conn, lambda: conn.execute(f"SELECT model_id, version, aliases_version FROM {active_model.name} "
                                                  "WHERE id = 1").fetchone())
        return row[0], row[1], row[2]


def _guarded(conn, statement: Callable[[], T]) -> T:
    """Run a statement on the LISTEN connection; past PROBE_TIMEOUT_S its socket is shut, which fails the
    statement, and _run opens a new connection."""
    watchdog = threading.Timer(PROBE_TIMEOUT_S, _shut, (conn.fileno(),))
    watchdog.daemon = True
    watchdog.start()
    try:
        return statement()
    finally:
        watchdog.cancel()


def _shut(fd: int) -> None:
    """Shut a socket both ways through a duplicate of its descriptor: a read blocked on it returns at once."""
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
