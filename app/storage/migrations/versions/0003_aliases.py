"""Aliases: named, movable pointers to models, and the history of every move.

`production` stays the one-row active_model pointer (its version is production's generation); the other aliases
are rows of `aliases`. `active_model.aliases_version` grows on every change to them, so other processes follow
with the same cheap read they already make of the pointer. The pointer's current target, if any, is recorded as
production's first history row (actor `migration`), so "what served at time T" has an answer from here on.

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.storage.errors import DowngradeRefused

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None
# Code at 0002 runs on this schema: it never reads the new tables or column (its activations leave no history
# and move no `previous`, but nothing breaks), so there is never a need to downgrade to run it.
oldest_compatible = "0002"


def upgrade() -> None:
    op.add_column("active_model", sa.Column("aliases_version", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "aliases",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("model_id", sa.String(64), sa.ForeignKey("models.id", name="fk_aliases_model"), nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("public", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("updated_at", sa.Text, nullable=False),
    )
    op.create_index("ix_aliases_model", "aliases", ["model_id"])
    history = op.create_table(
        "alias_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("at", sa.Text, nullable=False),
        sa.Column("model_id", sa.String(64)),
        sa.Column("previous", sa.String(64)),
        sa.Column("reason", sa.Text),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.UniqueConstraint("name", "generation", name="uq_alias_history_name_generation"),
    )
    pointer = op.get_bind().execute(sa.text("SELECT model_id, version, changed_at FROM active_model WHERE id = 1")).first()
    if pointer is not None and pointer.model_id is not None:
        op.bulk_insert(history, [{"name": "production", "generation": pointer.version, "model_id": pointer.model_id,
                                  "at": pointer.changed_at or "1970-01-01T00:00:00.000+00:00", "previous": None,
                                  "reason": "the active model when aliases were introduced", "actor": "migration"}])


def downgrade() -> None:
    # The history is the only record of what served when: refuse to drop it once it holds more than the seed.
    bind = op.get_bind()
    moves = bind.execute(sa.text("SELECT COUNT(*) FROM alias_history WHERE actor <> 'migration'")).scalar()
    named = bind.execute(sa.text("SELECT COUNT(*) FROM aliases")).scalar()
    if moves or named:
        raise DowngradeRefused(
            f"refusing to downgrade below revision 0003: the database holds {named} alias(es) and {moves} recorded "
            "alias move(s), which the downgrade would drop; code at revision 0002 runs on this schema unchanged, so "
            "keep this revision")
    op.drop_table("alias_history")
    op.drop_index("ix_aliases_model", table_name="aliases")
    op.drop_table("aliases")
    with op.batch_alter_table("active_model") as batch:
        batch.drop_column("aliases_version")
