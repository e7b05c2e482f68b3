"""Alembic's entry point: runs on the connection that `app.storage.migrate` hands over, never from a config file."""
from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with app.storage.migrate(url), which passes the connection")

# transactional_ddl on SQLite too: its DDL is transactional, so a failed migration leaves nothing half-done.
context.configure(connection=connection, transactional_ddl=True, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
