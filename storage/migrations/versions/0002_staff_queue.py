"""Staff queue: request workflow, audit trail, step events, relays.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 01:59:18.198480+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "relays",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("staff_chat_id", sa.BigInteger(), nullable=False),
        sa.Column("staff_message_id", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_relays_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_relays")),
    )
    op.create_index(op.f("ix_relays_client_id"), "relays", ["client_id"], unique=False)
    op.create_index(
        op.f("ix_relays_staff_message_id"), "relays", ["staff_message_id"], unique=False
    )

    op.create_table(
        "step_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("flow_version", sa.String(), nullable=False),
        sa.Column("node", sa.String(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_step_events_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_step_events")),
    )
    op.create_index(op.f("ix_step_events_at"), "step_events", ["at"], unique=False)
    op.create_index(op.f("ix_step_events_client_id"), "step_events", ["client_id"], unique=False)

    op.create_table(
        "request_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("actor_id", sa.BigInteger(), nullable=True),
        sa.Column("actor_name", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("from_status", sa.String(), nullable=True),
        sa.Column("to_status", sa.String(), nullable=True),
        sa.Column("note", sa.String(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["consultation_requests.id"],
            name=op.f("fk_request_events_request_id_consultation_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_request_events")),
    )
    op.create_index(
        op.f("ix_request_events_request_id"), "request_events", ["request_id"], unique=False
    )

    op.add_column(
        "clients", sa.Column("asking", sa.Boolean(), nullable=False, server_default=sa.false())
    )

    op.add_column("consultation_requests", sa.Column("source", sa.String(), nullable=True))
    op.add_column("consultation_requests", sa.Column("taken_by", sa.BigInteger(), nullable=True))
    op.add_column("consultation_requests", sa.Column("taken_by_name", sa.String(), nullable=True))
    op.add_column(
        "consultation_requests", sa.Column("taken_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "consultation_requests",
        sa.Column("first_call_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "consultation_requests",
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    )
    op.add_column(
        "consultation_requests", sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "consultation_requests", sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "consultation_requests", sa.Column("card_chat_id", sa.BigInteger(), nullable=True)
    )
    op.add_column(
        "consultation_requests", sa.Column("card_message_id", sa.BigInteger(), nullable=True)
    )
    op.add_column("consultation_requests", sa.Column("delivery_error", sa.String(), nullable=True))
    op.add_column(
        "consultation_requests",
        sa.Column("announced_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("consultation_requests", "announced_at")
    op.drop_column("consultation_requests", "delivery_error")
    op.drop_column("consultation_requests", "card_message_id")
    op.drop_column("consultation_requests", "card_chat_id")
    op.drop_column("consultation_requests", "closed_at")
    op.drop_column("consultation_requests", "retry_at")
    op.drop_column("consultation_requests", "attempts")
    op.drop_column("consultation_requests", "first_call_at")
    op.drop_column("consultation_requests", "taken_at")
    op.drop_column("consultation_requests", "taken_by_name")
    op.drop_column("consultation_requests", "taken_by")
    op.drop_column("consultation_requests", "source")

    op.drop_column("clients", "asking")

    op.drop_index(op.f("ix_request_events_request_id"), table_name="request_events")

    op.drop_table("request_events")
    op.drop_index(op.f("ix_step_events_client_id"), table_name="step_events")
    op.drop_index(op.f("ix_step_events_at"), table_name="step_events")

    op.drop_table("step_events")
    op.drop_index(op.f("ix_relays_staff_message_id"), table_name="relays")
    op.drop_index(op.f("ix_relays_client_id"), table_name="relays")

    op.drop_table("relays")
