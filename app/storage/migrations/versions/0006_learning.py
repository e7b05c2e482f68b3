"""Learning from usage: a policy per alias and the cycles it starts.

Revision ID: 0006
Revises: 0005
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.storage.errors import DowngradeRefused

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None
# New tables that older code never reads: code at 0002 (and so 0003 to 0005) runs on this schema.
oldest_compatible = "0002"


def upgrade() -> None:
    op.create_table(
        "learning_policies",
        sa.Column("alias", sa.String(32), primary_key=True),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Text, nullable=False),
        sa.Column("enabled_at", sa.Text),
        sa.Column("last_seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("cycles", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_cycle_at", sa.Text),
    )
    op.create_table(
        "learning_cycles",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("alias", sa.String(32), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16)),
        sa.Column("reason", sa.Text),
        sa.Column("control", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(64)),
        sa.Column("candidate", sa.String(64)),
        sa.Column("rollout_id", sa.String(64)),
        sa.Column("feedback_after", sa.BigInteger, nullable=False),
        sa.Column("feedback_through", sa.BigInteger, nullable=False),
        sa.Column("counts", sa.Text, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("gate", sa.Text),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Text, nullable=False),
        sa.Column("ended_at", sa.Text),
        sa.CheckConstraint("status IN ('training', 'rolling_out', 'ended')", name="ck_learning_cycles_status"),
        sa.UniqueConstraint("alias", "number", name="uq_learning_cycles_alias_number"),
    )
    op.create_index("uq_learning_cycles_open_alias", "learning_cycles", ["alias"], unique=True,
                    sqlite_where=sa.text("status <> 'ended'"), postgresql_where=sa.text("status <> 'ended'"))
    op.create_index("ix_learning_cycles_created", "learning_cycles", ["created_at"])


def downgrade() -> None:
    # The cycles are the record of why production moved by learning: refuse to drop them once there are any.
    count = op.get_bind().execute(sa.text("SELECT COUNT(*) FROM learning_cycles")).scalar()
    if count:
        raise DowngradeRefused(f"refusing to downgrade below revision 0006: the database holds {count} learning "
                               "cycle(s), which the downgrade would drop; code at revision 0005 runs on this schema "
                               "unchanged, so keep this revision")
    op.drop_index("ix_learning_cycles_created", table_name="learning_cycles")
    op.drop_index("uq_learning_cycles_open_alias", table_name="learning_cycles")
    op.drop_table("learning_cycles")
    op.drop_table("learning_policies")
