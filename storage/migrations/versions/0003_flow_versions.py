"""Flow versions: published dialogue flows, one active per flow.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 02:16:57.259049+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "flow_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("flow_name", sa.String(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("checksum", sa.String(), nullable=False),
        sa.Column("yaml", sa.Text(), nullable=False),
        sa.Column("author", sa.String(), nullable=False),
        sa.Column("note", sa.String(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flow_versions")),
        sa.UniqueConstraint("flow_name", "number", name=op.f("uq_flow_versions_flow_name")),
    )
    op.create_index(op.f("ix_flow_versions_checksum"), "flow_versions", ["checksum"], unique=False)
    op.create_index(
        op.f("ix_flow_versions_flow_name"), "flow_versions", ["flow_name"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_flow_versions_flow_name"), table_name="flow_versions")
    op.drop_index(op.f("ix_flow_versions_checksum"), table_name="flow_versions")

    op.drop_table("flow_versions")
