"""PostgreSQL: take a lane's lock and read its first items in one round trip.

A lane worker locks a chat's lane (a session-level advisory lock) and then reads the lane's
waiting items. As two statements that is two round trips per lane; as one plain statement
the read's snapshot would be taken before the lock, so it could miss what the lock's last
holder committed just before giving it back. A VOLATILE PL/pgSQL function takes a fresh
snapshot for each query it runs: the read inside it, run after the lock is taken, sees all
that holder committed. Each function returns one row ``(false, NULL...)`` when another
session holds the lock, otherwise the lane's next items (``got`` true; no rows when none
wait). ``unlock``: locks of the same session to give back first (ones given back a moment
ago, which ride along instead of taking a round trip of their own). SQLite has no such
locks (one process serves its database): nothing to do there.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 06:00:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INBOX_TAKE = """
CREATE OR REPLACE FUNCTION inbox_take(
    lock_key bigint, lane_id bigint, n integer, unlock bigint[]
)
RETURNS TABLE (got boolean, item_id bigint, item_lane bigint, item_payload json)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_unlock(k) FROM unnest(unlock) AS k;
    IF NOT pg_try_advisory_lock(lock_key) THEN
        RETURN QUERY SELECT false, NULL::bigint, NULL::bigint, NULL::json;
        RETURN;
    END IF;
    RETURN QUERY
        SELECT true, i.update_id, i.lane, i.payload FROM inbox AS i
        WHERE i.lane = lane_id AND i.done_at IS NULL ORDER BY i.update_id LIMIT n;
END
$$
"""

_OUTBOX_TAKE = """
CREATE OR REPLACE FUNCTION outbox_take(
    lock_key bigint, lane_id bigint, n integer, unlock bigint[]
)
RETURNS TABLE (
    got boolean, item_id integer, item_lane bigint, item_method varchar,
    item_params json, item_bind json
)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_unlock(k) FROM unnest(unlock) AS k;
    IF NOT pg_try_advisory_lock(lock_key) THEN
        RETURN QUERY SELECT false, NULL::integer, NULL::bigint, NULL::varchar, NULL::json,
            NULL::json;
        RETURN;
    END IF;
    RETURN QUERY
        SELECT true, o.id, o.lane, o.method, o.params, o.bind FROM outbox AS o
        WHERE o.lane = lane_id AND o.sent_at IS NULL ORDER BY o.id LIMIT n;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_INBOX_TAKE)
    op.execute(_OUTBOX_TAKE)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION IF EXISTS outbox_take(bigint, bigint, integer, bigint[])")
    op.execute("DROP FUNCTION IF EXISTS inbox_take(bigint, bigint, integer, bigint[])")
