"""The initial schema: models with their checkpoint bytes, the one-row active pointer, jobs with leases.

A SQLite file written by the previous version (app/db.py: tables models, jobs, state) is the same file this
schema goes into, so its tables are first renamed to legacy_models, legacy_jobs and legacy_state; the
post-migration step `app.storage.legacy.import_legacy` copies their rows (and the checkpoint files) over.
Written out in full rather than from schema.py, so later edits to schema.py never change what this did.

Revision ID: 0001
Revises:
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.storage.errors import DowngradeRefused

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

LEGACY = ("models", "jobs", "state")


def _legacy_tables_present() -> bool:
    inspector = sa.inspect(op.get_bind())
    tables = set(inspector.get_table_names())
    if "models" not in tables:
        return "state" in tables
    return "checkpoint" not in {c["name"] for c in inspector.get_columns("models")}


def upgrade() -> None:
    if _legacy_tables_present():
        existing = set(sa.inspect(op.get_bind()).get_table_names())
        for name in LEGACY:
            if name in existing:
                op.rename_table(name, f"legacy_{name}")

    op.create_table(
        "models",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("path", sa.Text),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("info", sa.Text, nullable=False),
        sa.Column("checkpoint", sa.LargeBinary),
        sa.CheckConstraint("source IN ('shipped', 'trained')", name="ck_models_source"),
        sa.CheckConstraint("(source = 'shipped' AND path IS NOT NULL AND checkpoint IS NULL) OR "
                           "(source = 'trained' AND checkpoint IS NOT NULL)", name="ck_models_storage"),
    )
    op.create_index("ix_models_source_created", "models", ["source", "created_at"])
    op.create_index("ix_models_created", "models", ["created_at"])

    active = op.create_table(
        "active_model",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("model_id", sa.String(64), sa.ForeignKey("models.id", name="fk_active_model_model")),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("changed_at", sa.Text),
        sa.CheckConstraint("id = 1", name="ck_active_model_single_row"),
    )
    op.bulk_insert(active, [{"id": 1, "model_id": None, "version": 0, "changed_at": None}])

    op.create_table(
        "jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False, unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("body", sa.Text),
        sa.Column("progress", sa.Text, nullable=False),
        sa.Column("history", sa.Text, nullable=False),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("started_at", sa.Text),
        sa.Column("finished_at", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("model_id", sa.String(64)),
        sa.Column("activated", sa.Boolean, nullable=False),
        sa.Column("activation_reason", sa.Text),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("lease_owner", sa.String(200)),
        sa.Column("lease_expires_at", sa.Text),
        sa.Column("worker_host", sa.String(255)),
        sa.Column("worker_pid", sa.Integer),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')",
                           name="ck_jobs_status"),
    )
    op.create_index("ix_jobs_status_seq", "jobs", ["status", "seq"])
    op.create_index("ix_jobs_status_lease", "jobs", ["status", "lease_expires_at"])

    op.create_table(
        "storage_meta",
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    # Dropping `models` would destroy every trained checkpoint (they are stored only here) and every job
    # record: refuse while there are any. The legacy_* tables, if any, come back below; nothing else would.
    bind = op.get_bind()
    trained = bind.execute(sa.text("SELECT COUNT(*) FROM models WHERE source = 'trained'")).scalar()
    job_count = bind.execute(sa.text("SELECT COUNT(*) FROM jobs")).scalar()
    if trained or job_count:
        raise DowngradeRefused(
            f"refusing to downgrade below revision 0001: the database holds {trained} trained model(s), whose "
            f"checkpoints are stored only in this database, and {job_count} job record(s); the downgrade would drop "
            "them. Delete them through the API first (DELETE /models/ID, DELETE /jobs/ID), or keep this revision")
    for name in ("storage_meta", "jobs", "active_model", "models"):
        op.drop_table(name)
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    for name in LEGACY:
        if f"legacy_{name}" in existing:
            op.rename_table(f"legacy_{name}", name)
