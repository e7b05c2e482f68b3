"""`python -m app.storage migrate --url URL [--legacy-data-dir DIR]`: migrate a database and say what was done.

The same call as the service's `python -m app migrate`, which takes the URL from its settings; this one takes
it explicitly and imports nothing of the service (no settings, no HTTP, no torch), for tools and images that
only need the schema.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys

from .engine import make_engine
from .migrate import migrate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.storage")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("migrate", help="bring the database to the current schema; import legacy data once")
    run.add_argument("--url", required=True, help="sqlite:///PATH or postgresql://user:pass@host:port/db")
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
