"""Alembic migrations, shipped inside the package and run from code (`app.storage.migrate`); no alembic.ini."""
