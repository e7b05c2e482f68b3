"""`python -m app`: serve with uvicorn on SEQ2SEQ_HOST:SEQ2SEQ_PORT (SIGTERM drains in-flight requests)."""
from __future__ import annotations

import logging

import uvicorn

from .main import create_app
from .settings import get_settings


def main() -> None:
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                timeout_graceful_shutdown=settings.graceful_timeout_s, access_log=False)


if __name__ == "__main__":
    main()
