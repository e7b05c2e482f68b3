"""Alembic revisions; this file only makes the folder a package so it ships in a wheel (Alembic skips it)."""
