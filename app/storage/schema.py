"""The tables, as SQLAlchemy Core objects the stores query. Migrations in `migrations/versions/` create them.

Timestamps are TEXT in one fixed UTC ISO-8601 form (`2026-11-27T12:34:56.789+00:00`, see `clock.py`), so
they sort and compare as strings on both engines. JSON columns are TEXT written with json.dumps.
"""
from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL = ("succeeded", "failed", "cancelled")
SOURCES = ("shipped", "trained")

models = sa.Table(
    "models", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("path", sa.Text),  # shipped models only: a read-only file in weights/
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("info", sa.Text, nullable=False),
    sa.Column("checkpoint", sa.LargeBinary),  # trained models only: the checkpoint file's bytes
    sa.CheckConstraint("source IN ('shipped', 'trained')", name="ck_models_source"),
    sa.CheckConstraint("(source = 'shipped' AND path IS NOT NULL AND checkpoint IS NULL) OR "
                       "(source = 'trained' AND checkpoint IS NOT NULL)", name="ck_models_storage"),
)
sa.Index("ix_models_source_created", models.c.source, models.c.created_at)
sa.Index("ix_models_created", models.c.created_at)

# Exactly one row (id = 1). model_id NULL means "none activated yet": the service's default model applies.
active_model = sa.Table(
    "active_model", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("model_id", sa.String(64), sa.ForeignKey("models.id", name="fk_active_model_model")),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("changed_at", sa.Text),
    # Grows on every change to the aliases table (0003): what other processes poll to follow alias moves.
    sa.Column("aliases_version", sa.Integer, nullable=False, server_default="0"),
    sa.CheckConstraint("id = 1", name="ck_active_model_single_row"),
)

# Named, movable pointers to models (0003). `production` is not a row here: it is the active_model pointer above
# (its generation is the pointer's version). `previous` is a row, moved whenever production moves.
aliases = sa.Table(
    "aliases", metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("model_id", sa.String(64), sa.ForeignKey("models.id", name="fk_aliases_model"), nullable=False),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("public", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("updated_at", sa.Text, nullable=False),
)
sa.Index("ix_aliases_model", aliases.c.model_id)

# Every move of every alias, production included, and every deletion (model_id NULL). No foreign key: the record
# outlives the models it names. A name's generations grow by one per change, across deletions and re-creations.
alias_history = sa.Table(
    "alias_history", metadata,
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

jobs = sa.Table(
    "jobs", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False, unique=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("config", sa.Text, nullable=False),    # JSON: the job as shown (dataset summarized)
    sa.Column("body", sa.Text),                      # JSON: the full request, so any machine can run it
    sa.Column("progress", sa.Text, nullable=False),  # JSON
    sa.Column("history", sa.Text, nullable=False),   # JSON list
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("started_at", sa.Text),
    sa.Column("finished_at", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("model_id", sa.String(64)),            # the id its model gets; no foreign key: set before it exists
    sa.Column("activated", sa.Boolean, nullable=False),
    sa.Column("activation_reason", sa.Text),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("lease_owner", sa.String(200)),
    sa.Column("lease_expires_at", sa.Text),
    sa.Column("worker_host", sa.String(255)),
    sa.Column("worker_pid", sa.Integer),
    sa.Column("cancel_requested", sa.Boolean, nullable=False),
    sa.Column("lease_token", sa.String(64)),         # the claim holding the lease: a new one on every claim
    sa.Column("handbacks", sa.Integer, nullable=False, server_default="0"),  # hand-backs by stopping workers
    sa.CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name="ck_jobs_status"),
)
sa.Index("ix_jobs_status_seq", jobs.c.status, jobs.c.seq)                 # claim, queue length, counts
sa.Index("ix_jobs_status_lease", jobs.c.status, jobs.c.lease_expires_at)  # requeue_expired

# Bookkeeping that is not data: which one-off steps (the legacy import) have run.
meta = sa.Table(
    "storage_meta", metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

# One row per impression that got feedback (app/feedback): what was shown (model, prefix, k, how many
# suggestions, session, when) and what the user did (the suggestion accepted and its rank, what they typed and
# its rank among the suggestions). impression_id (the token's MAC) is unique: a repeat adds nothing. No foreign
# key to models: feedback outlives a deleted model.
feedback = sa.Table(
    "feedback", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("impression_id", sa.String(64), nullable=False),
    sa.Column("model_id", sa.String(64), nullable=False),
    sa.Column("prefix", sa.Text, nullable=False),    # JSON list of tokens
    sa.Column("k", sa.Integer, nullable=False),
    sa.Column("suggestions", sa.Integer, nullable=False),  # how many were shown (at most k)
    sa.Column("session", sa.String(64)),
    sa.Column("accepted", sa.Text),                  # JSON list, or NULL when none was taken
    sa.Column("accepted_rank", sa.Integer),          # 1 for the best suggestion
    sa.Column("typed", sa.Text),                     # JSON list, or NULL when not known
    sa.Column("typed_rank", sa.Integer),             # where `typed` was among the suggestions, NULL if not
    sa.Column("impression_at", sa.Text, nullable=False),
    sa.Column("received_at", sa.Text, nullable=False),
    sa.UniqueConstraint("impression_id", name="uq_feedback_impression"),
)
sa.Index("ix_feedback_model_received", feedback.c.model_id, feedback.c.received_at)

# Rollouts (0005): a candidate model tried on a share of an alias's traffic, stepped up, promoted or rolled back.
# At most one running rollout per alias: a partial unique index, so two replicas' starts cannot both insert.
ROLLOUT_STATUSES = ("running", "promoted", "rolled_back", "aborted")
rollouts = sa.Table(
    "rollouts", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("alias", sa.String(32), nullable=False),
    sa.Column("control", sa.String(64), nullable=False),     # what the alias named when the rollout started
    sa.Column("candidate", sa.String(64), nullable=False),   # no foreign key: the record outlives the model
    sa.Column("config", sa.Text, nullable=False),            # JSON: the RolloutConfig, and the shadow's sample rate
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("percent", sa.Float, nullable=False),
    sa.Column("shadow", sa.Boolean, nullable=False),
    sa.Column("started_at", sa.Text, nullable=False),
    sa.Column("step_started_at", sa.Text, nullable=False),
    sa.Column("ended_at", sa.Text),
    sa.Column("reason", sa.Text),                            # why it ended
    sa.Column("cause", sa.String(32)),                       # a roll back's: error_rate, p99_ratio, acceptance
    sa.CheckConstraint("status IN ('running', 'promoted', 'rolled_back', 'aborted')", name="ck_rollouts_status"),
)
sa.Index("uq_rollouts_running_alias", rollouts.c.alias, unique=True,
         sqlite_where=rollouts.c.status == "running", postgresql_where=rollouts.c.status == "running")
sa.Index("ix_rollouts_started", rollouts.c.started_at)

# Every decision that changed a rollout (start, step_up, promote, roll_back, abort), with its figures (JSON).
rollout_decisions = sa.Table(
    "rollout_decisions", metadata,
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
sa.Index("ix_rollout_decisions_rollout", rollout_decisions.c.rollout_id, rollout_decisions.c.seq)

# Live counters, summed across replicas: each replica adds its increments (upsert add) about every second.
# subject: `model:ID` or `rollout:ID:STEP:ARM`; name: requests, errors, feedback, accepted, typed, hit1, hit3, or
# a latency bucket `ms<i>` (app.rollouts.live).
live_counters = sa.Table(
    "live_counters", metadata,
    sa.Column("subject", sa.String(200), primary_key=True),
    sa.Column("name", sa.String(16), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

# Learning from usage (0006): one policy per alias, and the cycles it started. `last_seq` is the feedback high-water
# mark of the last cycle (events with a larger seq are new) and `cycles` how many it started: the trigger's
# conditional update on both is what makes one threshold crossing one cycle, whatever the number of replicas.
learning_policies = sa.Table(
    "learning_policies", metadata,
    sa.Column("alias", sa.String(32), primary_key=True),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("config", sa.Text, nullable=False),            # JSON: the policy's other fields (app/learning/policy)
    sa.Column("updated_at", sa.Text, nullable=False),
    sa.Column("enabled_at", sa.Text),                        # the interval trigger counts from here before a cycle
    sa.Column("last_seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("cycles", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_cycle_at", sa.Text),
)

# Each cycle: why it started, the events it read, its job, the gate's figures, its rollout, and how it ended. At most
# one open (training or rolling out) per alias, and one per (alias, number): two replicas cannot both start one.
CYCLE_STATUSES = ("training", "rolling_out", "ended")
learning_cycles = sa.Table(
    "learning_cycles", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("alias", sa.String(32), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("trigger", sa.String(16), nullable=False),     # threshold, interval, manual
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("outcome", sa.String(16)),                     # once ended: promoted, rolled_back, refused, failed, ...
    sa.Column("reason", sa.Text),                            # why it ended so
    sa.Column("control", sa.String(64), nullable=False),     # the alias's model when it started (no foreign key)
    sa.Column("job_id", sa.String(64)),
    sa.Column("candidate", sa.String(64)),                   # the job's model id
    sa.Column("rollout_id", sa.String(64)),
    sa.Column("feedback_after", sa.BigInteger, nullable=False),    # the events new to it: seq in (after, through]
    sa.Column("feedback_through", sa.BigInteger, nullable=False),
    sa.Column("counts", sa.Text, nullable=False),            # JSON: events, usage examples, holdout, sessions capped...
    sa.Column("data", sa.Text, nullable=False),              # JSON: the training set's digest, the holdout's, ...
    sa.Column("gate", sa.Text),                              # JSON: the offline gate's figures and verdict
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Text, nullable=False),
    sa.Column("ended_at", sa.Text),
    sa.CheckConstraint("status IN ('training', 'rolling_out', 'ended')", name="ck_learning_cycles_status"),
    sa.UniqueConstraint("alias", "number", name="uq_learning_cycles_alias_number"),
)
sa.Index("uq_learning_cycles_open_alias", learning_cycles.c.alias, unique=True,
         sqlite_where=learning_cycles.c.status != "ended", postgresql_where=learning_cycles.c.status != "ended")
sa.Index("ix_learning_cycles_created", learning_cycles.c.created_at)
