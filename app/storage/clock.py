"""Time as the database sees it, in one string form.

Leases are compared across machines, so "now" comes from the database server (PostgreSQL's
clock_timestamp(); for SQLite, which is one machine, that machine's clock). Every timestamp the stores write is
`YYYY-MM-DDTHH:MM:SS.mmm+00:00`: fixed width, so string order is time order in SQL on both engines.
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection


def iso(dt: datetime) -> str:
    if dt.tzinfo is None:
        raise ValueError("naive datetime: pass a timezone-aware one")
    return dt.astimezone(UTC).isoformat(timespec="milliseconds")


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def db_now(conn: Connection) -> datetime:
    if conn.dialect.name == "postgresql":
        return conn.execute(sa.text("SELECT clock_timestamp()")).scalar_one().astimezone(UTC)
    return datetime.now(UTC)  # SQLite: this machine's clock, which is what strftime('now') would read, unqueried


def after(now: datetime, seconds: float) -> str:
    return iso(now + timedelta(seconds=seconds))
