"""E-mail addresses NFKC-normalised, then lower-cased

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

The app now reads every address NFKC-normalised before lower-casing it, so `alice@example.com`
in fullwidth letters (U+FF41 and on) is `alice@example.com`. The stored addresses are brought to
that form here, in Python, so that the same code runs on PostgreSQL and SQLite. Accounts whose
addresses would become one are never merged behind the operator's back: the migration then
refuses to run, changes nothing and names them, and the operator merges or renames them first.
"""

import unicodedata
from collections import defaultdict
from collections.abc import Iterator, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 10_000
users = sa.table("users", sa.column("id", sa.Integer()), sa.column("email", sa.String()))


def normalised(email: str) -> str:
    return unicodedata.normalize("NFKC", email).lower()


def upgrade() -> None:
    connection = op.get_bind()
    changes = dict(_changed_addresses(connection))
    # Every account that has or would have each new address: the ones changing to it, and any
    # already holding it. The old code lower-cased addresses, so few rows change.
    holders: dict[str, dict[int, str]] = defaultdict(dict)
    for user_id, (old, new) in changes.items():
        holders[new][user_id] = old
    addresses = list(holders)
    for start in range(0, len(addresses), BATCH):
        query = sa.select(users.c.id, users.c.email).where(users.c.email.in_(addresses[start : start + BATCH]))
        for user_id, email in connection.execute(query):
            holders[email][user_id] = email
    collisions = {address: accounts for address, accounts in holders.items() if len(accounts) > 1}
    if collisions:
        raise RuntimeError(_collision_report(collisions))
    if changes:
        connection.execute(
            users.update().where(users.c.id == sa.bindparam("user_id")).values(email=sa.bindparam("new_email")),
            [{"user_id": user_id, "new_email": new} for user_id, (_, new) in changes.items()],
        )


def downgrade() -> None:
    """Nothing to undo: the old forms are not kept, and the normalised ones suit the old code too."""


def _changed_addresses(connection: sa.Connection) -> Iterator[tuple[int, tuple[str, str]]]:
    """(id, (stored, normalised)) for each account whose address changes, read in batches by id."""
    after: int | None = None
    while True:
        query = sa.select(users.c.id, users.c.email).order_by(users.c.id).limit(BATCH)
        if after is not None:
            query = query.where(users.c.id > after)
        rows = connection.execute(query).all()
        for user_id, email in rows:
            if (new := normalised(email)) != email:
                yield user_id, (email, new)
        if len(rows) < BATCH:
            return
        after = rows[-1].id


def _collision_report(collisions: dict[str, dict[int, str]]) -> str:
    lines = [
        "Cannot normalise the users' e-mail addresses (NFKC, then lower case): these accounts would "
        "share one address, and an address belongs to one account only. Nothing was changed."
    ]
    for address, accounts in sorted(collisions.items()):
        stored = ", ".join(f"user {user_id} ({email!a})" for user_id, email in sorted(accounts.items()))
        lines.append(f"  {address}: {stored}")
    lines.append(
        "Merge each group into one account, or give all but one of its accounts another address"
        " (UPDATE users SET email = ... WHERE id = ...), then run the migrations again."
    )
    return "\n".join(lines)
