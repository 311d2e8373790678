"""Adapted devices (issue 31): per device, the model adapted to its statistics bucket, the base model it
was adapted from, the summary that chose it and when an adaptation was last asked for it.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "adapted_devices",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("build_key", sa.String(length=64), nullable=False),
        sa.Column("base_artifact_id", sa.String(length=64), nullable=False),
        sa.Column("artifact_id", sa.String(length=64), nullable=False),
        sa.Column("bucket", sa.String(length=32), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("point", sa.JSON(), nullable=False),
        sa.Column("job_key", sa.String(length=64), nullable=False),
        sa.Column("scheduled_at", sa.Float(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("device_id"),
    )


def downgrade() -> None:
    op.drop_table("adapted_devices")
