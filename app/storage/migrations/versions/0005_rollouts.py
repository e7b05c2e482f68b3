"""Rollouts, their decisions, and the live counters every replica adds to.

Revision ID: 0005
Revises: 0004
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.storage.errors import DowngradeRefused

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None
# New tables that older code never reads: code at 0002 (and so 0003, 0004) runs on this schema.
oldest_compatible = "0002"


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("alias", sa.String(32), nullable=False),
        sa.Column("control", sa.String(64), nullable=False),
        sa.Column("candidate", sa.String(64), nullable=False),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("percent", sa.Float, nullable=False),
        sa.Column("shadow", sa.Boolean, nullable=False),
        sa.Column("started_at", sa.Text, nullable=False),
        sa.Column("step_started_at", sa.Text, nullable=False),
        sa.Column("ended_at", sa.Text),
        sa.Column("reason", sa.Text),
        sa.Column("cause", sa.String(32)),
        sa.CheckConstraint("status IN ('running', 'promoted', 'rolled_back', 'aborted')", name="ck_rollouts_status"),
    )
    op.create_index("uq_rollouts_running_alias", "rollouts", ["alias"], unique=True,
                    sqlite_where=sa.text("status = 'running'"), postgresql_where=sa.text("status = 'running'"))
    op.create_index("ix_rollouts_started", "rollouts", ["started_at"])
    op.create_table(
        "rollout_decisions",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("rollout_id", sa.String(64), sa.ForeignKey("rollouts.id", name="fk_rollout_decisions_rollout"),
                  nullable=False),
        sa.Column("at", sa.Text, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("percent", sa.Float, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("figures", sa.Text, nullable=False),
    )
    op.create_index("ix_rollout_decisions_rollout", "rollout_decisions", ["rollout_id", "seq"])
    op.create_table(
        "live_counters",
        sa.Column("subject", sa.String(200), primary_key=True),
        sa.Column("name", sa.String(16), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    # The rollouts' decisions are the record of why production moved: refuse to drop them once there are any.
    count = op.get_bind().execute(sa.text("SELECT COUNT(*) FROM rollouts")).scalar()
    if count:
        raise DowngradeRefused(f"refusing to downgrade below revision 0005: the database holds {count} rollout(s) "
                               "and their decisions, which the downgrade would drop; code at revision 0004 runs on "
                               "this schema unchanged, so keep this revision")
    op.drop_table("live_counters")
    op.drop_index("ix_rollout_decisions_rollout", table_name="rollout_decisions")
    op.drop_table("rollout_decisions")
    op.drop_index("ix_rollouts_started", table_name="rollouts")
    op.drop_index("uq_rollouts_running_alias", table_name="rollouts")
    op.drop_table("rollouts")
