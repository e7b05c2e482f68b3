"""`python -m app`: serve with uvicorn on SEQ2SEQ_HOST:SEQ2SEQ_PORT, SEQ2SEQ_WORKERS processes (SIGTERM drains
requests in flight, then exits 0), with read deadlines for slow clients (app.http.protocol), a keep-alive
timeout and a connection limit. `python -m app migrate`: bring the database's schema up to date and stop (a
database already ahead of this version passes when it declares this version compatible; else exit 1)."""
from __future__ import annotations

import logging
import signal
import sys
from typing import TypedDict

import uvicorn

from .http.protocol import DeadlineProtocol
from .security import KeyRefused, checked_key
from .settings import Settings, get_settings


class ServeOptions(TypedDict):
    """The uvicorn.run keywords both ways of serving share, typed so the call is checked."""

    host: str
    port: int
    log_level: str
    access_log: bool
    timeout_graceful_shutdown: int | None
    http: type[DeadlineProtocol]
    limit_concurrency: int
    timeout_keep_alive: int


def serve_options(settings: Settings) -> ServeOptions:
    """How uvicorn serves the app (bench/ceiling.py serves its bare app the same way)."""
    # uvicorn annotates the graceful and keep-alive timeouts as int but only passes them to asyncio (wait_for,
    # call_later), which take seconds as a float; both settings may be fractional.
    return {"host": settings.host, "port": settings.port, "log_level": settings.log_level, "access_log": False,
            "timeout_graceful_shutdown": settings.graceful_timeout_s,  # type: ignore[typeddict-item]
            "http": DeadlineProtocol, "limit_concurrency": settings.max_connections,
            "timeout_keep_alive": settings.keep_alive_s}  # type: ignore[typeddict-item]


def serve() -> None:
    settings = get_settings()
    if settings.api_key and settings.auth == "key":  # refused here, before any process starts, with the reason
        try:
            checked_key(settings.api_key, "SEQ2SEQ_API_KEY")
        except KeyRefused as exc:
            sys.exit(f"refusing to start: {exc}")
    # uvicorn drains on SIGTERM, then re-raises the signal under the handler it found at start. A quiet handler
    # there turns a clean drain into exit status 0, which is what process managers read as success.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = serve_options(settings)
    if settings.workers == 1:
        from .main import create_app

        try:
            app = create_app(settings)
        except KeyRefused as exc:  # a key file too short or a placeholder
            sys.exit(f"refusing to start: {exc}")
        uvicorn.run(app, **options)
    else:  # each process imports the app and builds its own: its own batcher, cache and models
        uvicorn.run("app.main:create_app", factory=True, workers=settings.workers, **options)


def migrate() -> None:
    from . import storage

    settings = get_settings()
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:  # always migrates, whatever SEQ2SEQ_MIGRATE says: this is the one place that does in a cluster
        result = storage.migrate(settings.db_url, settings.data_dir, lock_timeout_s=settings.migrate_lock_timeout_s,
                                 timeouts=settings.db_timeouts)
    except (storage.SchemaMismatch, storage.MigrationLockTimeout, storage.UnsupportedLocation) as exc:
        sys.exit(f"migrate: {exc}")
    print(result)


if __name__ == "__main__":
    if sys.argv[1:] == ["migrate"]:
        migrate()
    elif sys.argv[1:]:
        sys.exit(f"usage: python -m app [migrate]; got {' '.join(sys.argv[1:])}")
    else:
        serve()
