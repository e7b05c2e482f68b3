"""`python -m app`: serve with uvicorn on SEQ2SEQ_HOST:SEQ2SEQ_PORT (SIGTERM drains in-flight requests)."""
from __future__ import annotations

import logging
import signal

import uvicorn

from .main import create_app
from .settings import get_settings


def main() -> None:
    settings = get_settings()
    # uvicorn drains on SIGTERM, then re-raises the signal under the handler it found at start. A quiet handler
    # there turns a clean drain into exit status 0, which is what process managers read as success.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                timeout_graceful_shutdown=settings.graceful_timeout_s, access_log=False)


if __name__ == "__main__":
    main()
