"""Feedback on impressions: one row per impression that got feedback, unique by the impression's id.

Revision ID: 0004
Revises: 0003
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.storage.errors import DowngradeRefused

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None
# A new table that older code never reads: code at 0002 (and so 0003) runs on this schema.
oldest_compatible = "0002"


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("impression_id", sa.String(64), nullable=False),
        sa.Column("model_id", sa.String(64), nullable=False),
        sa.Column("prefix", sa.Text, nullable=False),
        sa.Column("k", sa.Integer, nullable=False),
        sa.Column("suggestions", sa.Integer, nullable=False),
        sa.Column("session", sa.String(64)),
        sa.Column("accepted", sa.Text),
        sa.Column("accepted_rank", sa.Integer),
        sa.Column("typed", sa.Text),
        sa.Column("typed_rank", sa.Integer),
        sa.Column("impression_at", sa.Text, nullable=False),
        sa.Column("received_at", sa.Text, nullable=False),
        sa.UniqueConstraint("impression_id", name="uq_feedback_impression"),
    )
    op.create_index("ix_feedback_model_received", "feedback", ["model_id", "received_at"])


def downgrade() -> None:
    # Feedback is users' data and lives only here: refuse to drop it.
    count = op.get_bind().execute(sa.text("SELECT COUNT(*) FROM feedback")).scalar()
    if count:
        raise DowngradeRefused(f"refusing to downgrade below revision 0004: the database holds {count} feedback "
                               "event(s), which the downgrade would drop")
    op.drop_index("ix_feedback_model_received", table_name="feedback")
    op.drop_table("feedback")
