"""`python -m app.storage migrate --url URL [--legacy-data-dir DIR]`: migrate a database and say what was done.
`python -m app.storage downgrade --url URL --to REV`: take it back (refused where that would drop data).

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
from .errors import DowngradeRefused, MigrationLockTimeout, SchemaMismatch, UnsupportedLocation
from .migrate import downgrade, migrate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.storage")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("migrate", help="bring the database to the current schema; import legacy data once")
    run.add_argument("--url", required=True, help="sqlite:///PATH or postgresql://user:pass@host:port/db")
    run.add_argument("--legacy-data-dir", default=None,
                     help="the previous version's DATA_DIR, when the target is not the SQLite file inside it")
    back = commands.add_parser("downgrade", help="take the schema back to a revision; refuses to drop stored data")
    back.add_argument("--url", required=True, help="sqlite:///PATH or postgresql://user:pass@host:port/db")
    back.add_argument("--to", required=True, help="the revision to go back to ('base': none)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        engine = make_engine(args.url)
        try:
            if args.command == "downgrade":
                print(json.dumps({"revision": downgrade(engine, args.to)}))
                return 0
            result = migrate(engine, args.legacy_data_dir)
        finally:
            engine.dispose()
    except (DowngradeRefused, SchemaMismatch, MigrationLockTimeout, UnsupportedLocation) as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(dataclasses.asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
