"""Device statistics (issue 31): each stored model's statistics companion with the layers a summary of it
must hold, the highest summary sequence taken from each device (replays are refused across replicas and
restarts), and the latest summary taken per device and model.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "artifact_statistics",
        sa.Column("artifact_id", sa.String(length=64), nullable=False),
        sa.Column("statistics_id", sa.String(length=64), nullable=False),
        sa.Column("layers", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("artifact_id"),
    )
    op.create_table(
        "stats_devices",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("taken", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("device_id"),
    )
    op.create_table(
        "stats_summaries",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("artifact_id", sa.String(length=64), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("images", sa.BigInteger(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("summary", sa.LargeBinary(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "artifact_id"),
    )


def downgrade() -> None:
    op.drop_table("stats_summaries")
    op.drop_table("stats_devices")
    op.drop_table("artifact_statistics")
