"""Baseline: the tables edgecut 0.1 wrote, created on an empty database or completed on an older one.

Before Alembic, every start created missing tables and added the columns a newer edgecut defined
(`ALTER TABLE ... ADD COLUMN ... DEFAULT ...`, nothing dropped or renamed), so a database from before
Alembic may hold any earlier subset of these columns. This revision does that once more, for every
table (the hand-rolled step only ever covered devices, swaps, jobs, leases, waiters and offers), and
also adds the indexes an older release lacked. The tables are frozen here as they were in 0.1: later
changes belong in later revisions, never in this file.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_meta = sa.MetaData()


def _t(name: str, *items: sa.schema.SchemaItem) -> sa.Table:
    return sa.Table(name, _meta, *items)


def _s(name: str, length: int, **kw: object) -> sa.Column:
    return sa.Column(name, sa.String(length), nullable=False, **kw)  # type: ignore[arg-type]


def _f(name: str, *, nullable: bool = False, **kw: object) -> sa.Column:
    return sa.Column(name, sa.Float(), nullable=nullable, **kw)  # type: ignore[arg-type]


def _c(name: str, type_: sa.types.TypeEngine, **kw: object) -> sa.Column:
    return sa.Column(name, type_, nullable=False, **kw)  # type: ignore[arg-type]


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True)


JSON, BIG, INT, TEXT = sa.JSON(), sa.BigInteger(), sa.Integer(), sa.Text()

TABLES = [
    _t(
        "devices",
        _s("device_id", 128, primary_key=True),
        _s("status", 16),
        _s("agent_version", 64),
        _c("needs_tasks", JSON),
        _c("needs_seq", BIG),
        _c("needs_json", JSON),
        _c("resources", JSON),
        _s("device_class", 64),
        _s("budget", 128),
        _s("build_key", 64),
        _s("offered_artifact_id", 64),
        _s("artifact_id", 64),
        _c("serving_tasks", JSON),
        _c("telemetry", JSON),
        _c("last_error", TEXT),
        _f("last_seen"),
        _c("needs_sent_ms", BIG),
        _c("provenance", JSON),
        _s("pinned_artifact_id", 64),
        _c("last_command", JSON),
        _f("latency_slowdown"),
        _c("offer_seq", BIG),
    ),
    _t(
        "swaps",
        _id(),
        _s("device_id", 128, index=True),
        _s("artifact_id", 64),
        _s("previous_artifact_id", 64),
        _c("ok", sa.Boolean()),
        _c("reason", TEXT),
        _f("load_ms"),
        _f("at"),
    ),
    _t(
        "jobs",
        _s("build_key", 64, primary_key=True),
        _s("state", 16, index=True),
        _c("spec", JSON),
        _s("stage", 32),
        _f("fraction"),
        _s("artifact_id", 64),
        _s("error_code", 32),
        _c("error_message", TEXT),
        _c("attempts", INT),
        _f("created"),
        _f("updated"),
        _s("parent_artifact_id", 64),
        _c("refinement", INT),
        _s("kind", 16),
        _c("lease_gen", BIG),
        _c("crashes", INT),
    ),
    _t(
        "job_leases",
        _s("build_key", 64, primary_key=True),
        _s("owner", 128, index=True),
        _f("expires"),
        _f("acquired"),
        sa.ForeignKeyConstraint(["build_key"], ["jobs.build_key"]),
    ),
    _t(
        "job_waiters",
        _s("build_key", 64, primary_key=True),
        _s("device_id", 128, primary_key=True),
        _c("needs_seq", BIG),
        sa.ForeignKeyConstraint(["build_key"], ["jobs.build_key"]),
    ),
    _t(
        "offers",
        _id(),
        _s("device_id", 128, index=True),
        _s("artifact_id", 64, index=True),
        _c("needs_seq", BIG),
        _c("manifest", JSON),
        _f("at"),
    ),
    _t(
        "operator_commands",
        _s("command_id", 32, primary_key=True),
        _s("device_id", 128, index=True),
        _s("action", 16),
        _c("args", JSON),
        _s("who", 128),
        _s("origin", 128),
        _f("created"),
        _s("state", 8),
        _c("message", TEXT),
        _f("acked_at", nullable=True),
    ),
    _t(
        "audit_log",
        _id(),
        _f("at", index=True),
        _s("who", 128),
        _s("origin", 128),
        _s("event", 16),
        _s("action", 16),
        _s("device_id", 128, index=True),
        _s("command_id", 32),
        _c("detail", TEXT),
    ),
    _t(
        "telemetry_samples",
        _id(),
        _s("device_id", 128),
        _f("at"),
        _s("artifact_id", 64),
        _f("latency_p50_ms"),
        _f("latency_p95_ms"),
        _c("rss_bytes", BIG),
        _f("cpu_percent"),
        _c("inference_count", BIG),
        _c("failed_count", BIG),
        sa.Index("ix_telemetry_device_id", "device_id", "id"),
    ),
    _t(
        "build_runs",
        _id(),
        _s("build_key", 64, index=True),
        _s("tasks", 256),
        _f("queued_at"),
        _f("started_at", nullable=True),
        _f("finished_at", nullable=True),
        _s("result", 16),
        _s("artifact_id", 64),
        _c("error", TEXT),
        _c("cache_hits", BIG),
    ),
    _t(
        "artifact_latency",
        _s("artifact_id", 64, primary_key=True),
        _f("ort_latency_ms"),
        _c("runs", INT),
        _f("measured_at"),
    ),
    _t(
        "rollouts",
        _s("id", 32, primary_key=True),
        _s("device_class", 64, index=True),
        _s("budget", 128),
        _c("tasks", JSON),
        _s("baseline_artifact", 64),
        _s("baseline_build_key", 64),
        _s("candidate_artifact", 64),
        _s("candidate_build_key", 64),
        _c("canaries", JSON),
        _c("cohort", JSON),
        _s("state", 16, index=True),
        _c("reason", TEXT),
        _c("quality", JSON),
        _f("baseline_p95_ms"),
        _f("created"),
        _f("decided", nullable=True),
    ),
]

# JSON columns whose rows hold a list (the rest hold an object)
_LISTS = {"needs_tasks", "serving_tasks", "tasks", "canaries", "cohort"}


def _filler(col: sa.Column) -> sa.TextClause | None:
    """The value an added column takes in the rows already there (what 0.1's models default to)."""
    if col.nullable:
        return None
    if isinstance(col.type, sa.JSON):
        return sa.text("'[]'" if col.name in _LISTS else "'{}'")
    if isinstance(col.type, (sa.String, sa.Text)):
        return sa.text("''")
    return sa.text("0")


def upgrade() -> None:
    bind = op.get_bind()
    insp = sa.inspect(bind)
    for table in TABLES:
        if not insp.has_table(table.name):
            table.create(bind)
            continue
        have = {c["name"] for c in insp.get_columns(table.name)}
        for col in table.columns:
            if col.name not in have:
                # nullable like the hand-rolled ALTERs before it: SQLite cannot add a NOT NULL column
                # to a table without a default, and older replicas never wrote NULL here anyway
                op.add_column(
                    table.name, sa.Column(col.name, col.type, nullable=True, server_default=_filler(col))
                )
        indexes = {ix["name"] for ix in insp.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexes:
                index.create(bind)


def downgrade() -> None:
    raise NotImplementedError(
        "edgecut's baseline is not downgraded: restore the backup taken before upgrading"
    )
