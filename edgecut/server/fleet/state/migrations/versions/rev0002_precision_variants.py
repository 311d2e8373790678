"""Precision variants (issue 30): a stored model's other precisions, the variants each offer listed (who
may download them), and the precision a device serves after a swap with the timings it measured.

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


def upgrade() -> None:
    op.create_table(
        "artifact_variants",
        sa.Column("artifact_id", sa.String(length=64), nullable=False),
        sa.Column("variant_id", sa.String(length=64), nullable=False),
        sa.Column("precision", sa.String(length=8), nullable=False),
        sa.PrimaryKeyConstraint("artifact_id", "variant_id"),
    )
    op.create_table(
        "offer_variants",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("artifact_id", sa.String(length=64), nullable=False),
        sa.Column("variant_id", sa.String(length=64), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_offer_variants_device", "offer_variants", ["device_id", "variant_id"])
    # the swaps already recorded were fp32 (no agent served anything else before this revision)
    with op.batch_alter_table("swaps") as batch_op:
        batch_op.add_column(sa.Column("precision", sa.String(length=8), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("timings", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("swaps") as batch_op:
        batch_op.drop_column("timings")
        batch_op.drop_column("precision")
    op.drop_index("ix_offer_variants_device", table_name="offer_variants")
    op.drop_table("offer_variants")
    op.drop_table("artifact_variants")
