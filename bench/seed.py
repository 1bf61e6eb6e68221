"""Benchmark data, made by PostgreSQL itself (generate_series) so a million rows take seconds."""

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, text

from task_api.auth.passwords import hash_password
from task_api.auth.tokens import Tokens
from task_api.config import Settings
from task_api.store import create_redis

SPREAD_USERS = 1_000
TASKS_PER_SPREAD_USER = 900
SCALE_SIZES = (100, 10_000, 100_000)
PASSWORD = "benchmark-password"
RARE_WORD = "invoice"  # in one title of 200, so a `q` search matches few rows at any size
TASKS_PER_READ_USER = 5


@dataclass
class Population:
    spread_owners: list[int]
    scale_owners: dict[int, int]
    total_tasks: int


def seed(engine: Engine) -> Population:
    password_hash = hash_password(PASSWORD, Settings(_env_file=None).bcrypt_rounds)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO users (email, name, password_hash)"
                " SELECT 'user' || n || '@bench.example', 'User ' || n, :hash FROM generate_series(1, :count) n"
            ),
            {"hash": password_hash, "count": SPREAD_USERS},
        )
        for size in SCALE_SIZES:
            connection.execute(
                text("INSERT INTO users (email, password_hash) VALUES (:email, :hash)"),
                {"email": f"owner{size}@bench.example", "hash": password_hash},
            )
        owners = dict(connection.execute(text("SELECT email, id FROM users")).tuples().all())
        spread = [owners[f"user{n}@bench.example"] for n in range(1, SPREAD_USERS + 1)]
        _insert_tasks(connection, "user%@bench.example", TASKS_PER_SPREAD_USER)
        for size in SCALE_SIZES:
            _insert_tasks(connection, f"owner{size}@bench.example", size)
        total = connection.scalar(text("SELECT count(*) FROM tasks")) or 0
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))
        connection.execute(text("CHECKPOINT"))  # write the load's pages out now, not while the runs are timed
    scale = {size: owners[f"owner{size}@bench.example"] for size in SCALE_SIZES}
    return Population(spread_owners=spread, scale_owners=scale, total_tasks=total)


def _insert_tasks(connection: object, owners: str, per_owner: int) -> None:
    """`per_owner` tasks for each user whose e-mail is LIKE `owners`: a spread of statuses,
    priorities, due dates and ages, and the rare word in one title of 200."""
    connection.execute(  # type: ignore[attr-defined]
        text(
            "INSERT INTO tasks (owner_id, title, description, status, priority, due_date, created_at, updated_at)"
            " SELECT u.id,"
            "  'Task ' || g || CASE WHEN g % 200 = 0 THEN ' ' || :word ELSE '' END,"
            "  'Notes for task ' || g || ' of user ' || u.id,"
            "  (ARRAY['new', 'in_progress', 'completed'])[1 + g % 3]::task_status,"
            "  (ARRAY['low', 'medium', 'high'])[1 + (g / 3) % 3]::task_priority,"
            "  CASE WHEN g % 4 = 0 THEN NULL ELSE now() + make_interval(hours => g % 5000) END,"
            "  now() - make_interval(mins => g), now() - make_interval(mins => g)"
            " FROM users u CROSS JOIN generate_series(1, :per_owner) g WHERE u.email LIKE :owners"
        ),
        {"word": RARE_WORD, "per_owner": per_owner, "owners": owners},
    )


def write_data_files(population: Population, settings: Settings, directory: Path, engine: Engine) -> None:
    """Tokens (minted as /login would, with their families in Redis) and ids for the wrk scripts."""
    owners = [*population.spread_owners, *population.scale_owners.values()]
    tokens_by_owner = dict(zip(owners, _access_tokens(settings, owners), strict=True))
    with engine.connect() as connection:
        owned = connection.execute(
            text(
                "SELECT owner_id, id FROM (SELECT owner_id, id, row_number() OVER (PARTITION BY owner_id ORDER BY id)"
                " AS n FROM tasks WHERE owner_id = ANY(:owners)) t WHERE n <= :per_user"
            ),
            {"owners": population.spread_owners, "per_user": TASKS_PER_READ_USER},
        ).all()
    (directory / "read.txt").write_text("".join(f"{tokens_by_owner[owner]} {task}\n" for owner, task in owned))
    (directory / "list.txt").write_text("".join(f"{tokens_by_owner[o]}\n" for o in population.spread_owners))
    (directory / "login.txt").write_text(
        "".join(f"user{n}@bench.example {PASSWORD}\n" for n in range(1, SPREAD_USERS + 1))
    )
    for size, owner in population.scale_owners.items():
        (directory / f"scale-{size}.txt").write_text(f"{tokens_by_owner[owner]}\n")


def _access_tokens(settings: Settings, owners: list[int]) -> list[str]:
    redis = create_redis(settings)
    tokens = Tokens(settings, redis)
    pairs = [tokens.start_family(owner, 0) for owner in owners]
    redis.connection_pool.disconnect()
    if None in pairs:
        raise RuntimeError("a benchmark login was refused: is the database freshly seeded?")
    return [pair.access_token for pair in pairs if pair is not None]
