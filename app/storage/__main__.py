"""`python -m app.storage migrate [--url URL] [--legacy-data-dir DIR]`: migrate a database and say what was done.

The URL defaults to $SEQ2SEQ_DATABASE_URL, else the SQLite file in $SEQ2SEQ_DATA_DIR (./data). The service's
own `python -m app migrate` is the lead's to wire; this is the same call without the service's settings.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys

from .engine import default_url, make_engine
from .migrate import migrate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.storage")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("migrate", help="bring the database to the current schema; import legacy data once")
    run.add_argument("--url", default=os.environ.get("SEQ2SEQ_DATABASE_URL")
                     or default_url(os.environ.get("SEQ2SEQ_DATA_DIR", "data")))
    run.add_argument("--legacy-data-dir", default=None,
                     help="the previous version's DATA_DIR, when the target is not the SQLite file inside it")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    engine = make_engine(args.url)
    try:
        result = migrate(engine, args.legacy_data_dir)
    finally:
        engine.dispose()
    print(json.dumps(dataclasses.asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
