"""Jobs under operations: a per-claim lease token, and a count of hand-backs.

lease_token names the claim that holds a running job's lease, so a stale run of the same runner (whose lease
expired and whose job was claimed again) fails every conditional write. handbacks counts the times a stopping
worker handed a job back to the queue, so a job that keeps landing on evicted workers ends instead of cycling.

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None
# Code at 0001 runs on this schema: it never reads the new columns, its inserts get their defaults, and its
# writes stay conditional on the lease's owner, which new code's sweeps respect.
oldest_compatible = "0001"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("lease_token", sa.String(64)))
    op.add_column("jobs", sa.Column("handbacks", sa.Integer, nullable=False, server_default="0"))  # rows get 0


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("handbacks")
        batch.drop_column("lease_token")
