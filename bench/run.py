"""The load benchmark: `make bench` (python -m bench.run).

Migrates a fresh database, seeds it, starts the production server (gunicorn.conf.py),
drives it with wrk, stops what it started, prints one table and writes
bench/results/latest.json.
"""

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import httpx2
from redis import Redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url

from bench import seed
from task_api.config import Settings
from task_api.migrate import migrate
from task_api.tasks.schemas import TaskQuery
from task_api.tasks.service import page_statement, page_values

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "bench" / "lua"
RESULTS = ROOT / "bench" / "results"
SECRET_KEY = "benchmark-secret-key-long-enough-for-hs256-signing"
TOKEN_MINUTES = 120  # the tokens minted before the run must outlive it
ROUND_SCENARIOS = ("health", "read", "list", "write")
# The workers share one listening socket, and whichever wakes first may accept all of wrk's
# connections: /health gave 10,183 req/s with them split 32/32 and 5,643 with all 64 on one
# worker. So each scenario is measured in several rounds (a new split each), each against the
# `health` of its own round, and reported by its median round.
ROUNDS = 3
LOGINS_PER_S = 2  # arriving during `read`, at the production bcrypt cost
WARM_UP_S = 3  # each scenario first runs this long unmeasured, so pools and caches are filled (login: too slow)
# One connection times a request's own latency. At 4, the kernel's hash of wrk's ports
# spreads the connections 2/2, 3/1 or 4/0 over the two workers, and the split, whatever the
# data, set a run's p50 (newest, 100 tasks: 2.2 ms at 2/2, 4.1 ms at 4/0).
SCALE_CONNECTIONS = 1
SCALE_ROUNDS = 3
SCALE_SHAPES = {
    "newest": "limit=20&sort=-created_at",
    "filtered": f"status=new&priority=high&q={seed.RARE_WORD}&sort=-created_at&limit=20",
}


@dataclass
class Result:
    scenario: str
    requests_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    ratio_to_health: float = 0.0


def main() -> int:
    parser = argparse.ArgumentParser(prog="make bench")
    parser.add_argument("--duration", type=int, default=int(os.environ.get("BENCH_DURATION", "15")))
    parser.add_argument("--connections", type=int, default=int(os.environ.get("BENCH_CONNECTIONS", "64")))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("BENCH_WORKERS", "2")))
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/task_api_bench"),
    )
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT", "8089")))
    parser.add_argument("--metrics-port", type=int, default=int(os.environ.get("BENCH_METRICS_PORT", "9089")))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")

    settings = Settings(
        _env_file=None,
        app_env="production",
        secret_key=SECRET_KEY,
        database_url=args.database_url,
        redis_url=args.redis_url,
        access_token_expire_minutes=TOKEN_MINUTES,
    )
    print(f"migrating and seeding {make_url(args.database_url).database} ...", flush=True)
    recreate_database(args.database_url)
    migrate(settings)
    data_dir = RESULTS / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    # Seeding a million rows outlasts the statement timeout that migrate sets as the database's
    # default for the app's requests.
    engine = create_engine(args.database_url, connect_args={"options": "-c statement_timeout=0"})
    redis = Redis.from_url(args.redis_url, decode_responses=True)
    redis.flushdb()
    started = time.monotonic()
    population = seed.seed(engine)
    print(f"seeded {population.total_tasks:,} tasks in {time.monotonic() - started:.0f}s", flush=True)
    seed.write_data_files(population, settings, data_dir, engine)

    server = start_server(args, data_dir)
    try:
        url = f"http://127.0.0.1:{args.port}"
        run_wrk("health", url, args, data_dir, duration=WARM_UP_S)
        scale = run_scale(url, args, data_dir, population, engine)
        rounds = [run_round(url, args, data_dir, number) for number in range(1, ROUNDS + 1)]
        results = [median_round([measured[scenario] for measured in rounds]) for scenario in ROUND_SCENARIOS]
        # Before `login`, whose queue of bcrypt checks drains for seconds after it.
        with_logins = run_read_with_logins(url, args, data_dir, results[1])
        login = run_wrk("login", url, args, data_dir)
        login.ratio_to_health = round(login.requests_per_s / results[0].requests_per_s, 4)
        results.append(login)
        scale_after_writes = run_scale(url, args, data_dir, population, engine)
        scrape = measure_scrape(f"http://127.0.0.1:{args.metrics_port}/metrics")
    finally:
        server.terminate()
        server.wait(timeout=60)
        engine.dispose()
        redis.close()

    report = {
        "duration_s": args.duration,
        "connections": args.connections,
        "workers": args.workers,
        "load_generator": "wrk -t1 (one thread leaves the most CPU to the server)",
        "cpus": os.cpu_count(),
        "rounds": [{scenario: asdict(result) for scenario, result in measured.items()} for measured in rounds],
        "scenarios": [asdict(result) for result in results],
        "scale_connections": SCALE_CONNECTIONS,
        "scale_rounds": SCALE_ROUNDS,
        "scale_duration_s": scale_duration(args),
        "scale": scale,
        "read_with_logins": with_logins,
        "scale_after_writes": scale_after_writes,
        "metrics": {**measure_metrics_cost(), **scrape},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    failed = any(result.errors for result in results) or bool(with_logins["errors"] or with_logins["login_failures"])
    return 1 if failed else 0


def recreate_database(database_url: str) -> None:
    url = make_url(database_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{url.database}"'))
    admin.dispose()


def start_server(args: argparse.Namespace, data_dir: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "APP_ENV": "production",
        "SECRET_KEY": SECRET_KEY,
        "DATABASE_URL": args.database_url,
        "REDIS_URL": args.redis_url,
        "WEB_CONCURRENCY": str(args.workers),
        "HOST": "127.0.0.1",
        "PORT": str(args.port),
        "METRICS_PORT": str(args.metrics_port),
        "ACCESS_TOKEN_EXPIRE_MINUTES": str(TOKEN_MINUTES),
        "RATE_LIMIT": "1000000000/minute",
        "AUTH_RATE_LIMIT": "1000000000/minute",
    }
    log = (data_dir / "server.log").open("wb")
    server = subprocess.Popen(  # noqa: S603  (our own gunicorn, with fixed arguments)
        [str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py", "task_api.main:app"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx2.get(f"http://127.0.0.1:{args.port}/ready", timeout=1).status_code == 200:
                return server
        except httpx2.TransportError:
            time.sleep(0.2)
    server.terminate()
    sys.exit(f"the server did not become ready; see {data_dir / 'server.log'}")


def run_round(url: str, args: argparse.Namespace, data_dir: Path, number: int) -> dict[str, Result]:
    measured: dict[str, Result] = {}
    for scenario in ROUND_SCENARIOS:
        run_wrk(f"{scenario} (warm-up)", url, args, data_dir, duration=WARM_UP_S, script=scenario)
        result = run_wrk(f"{scenario}, round {number}", url, args, data_dir, script=scenario)
        result.scenario = scenario
        health = result if scenario == "health" else measured["health"]
        result.ratio_to_health = round(result.requests_per_s / health.requests_per_s, 4)
        measured[scenario] = result
    return measured


def median_round(results: list[Result]) -> Result:
    """The round with the median ratio to its health (for `health` itself, the median req/s),
    with the errors of every round."""
    ranked = sorted(results, key=lambda result: (result.ratio_to_health, result.requests_per_s))
    return replace(ranked[len(ranked) // 2], errors=sum(result.errors for result in results))


def run_read_with_logins(url: str, args: argparse.Namespace, data_dir: Path, read: Result) -> dict[str, object]:
    """`read` again while logins arrive at LOGINS_PER_S, each on its own connection, as
    users' would: how much the reads keep, and how long the logins take."""
    accounts = [line.split() for line in (data_dir / "login.txt").read_text().splitlines()]
    latencies_ms: list[float] = []
    failures: list[str] = []
    stop = threading.Event()

    def log_in(email: str, password: str) -> None:
        started = time.perf_counter()
        try:
            status = httpx2.post(f"{url}/login", json={"email": email, "password": password}, timeout=30).status_code
        except httpx2.TransportError as exc:
            failures.append(type(exc).__name__)
            return
        latencies_ms.append((time.perf_counter() - started) * 1000)
        if status != 200:
            failures.append(str(status))

    def arrive() -> None:
        with ThreadPoolExecutor(max_workers=32) as pool:
            due = time.monotonic()
            while not stop.is_set():
                pool.submit(log_in, *random.choice(accounts))  # noqa: S311  (not for security)
                due += 1 / LOGINS_PER_S
                stop.wait(max(due - time.monotonic(), 0))

    arrivals = threading.Thread(target=arrive)
    arrivals.start()
    try:
        result = run_wrk("read+logins", url, args, data_dir, script="read")
    finally:
        stop.set()
        arrivals.join()
    percentiles = statistics.quantiles(latencies_ms, n=100) if len(latencies_ms) > 1 else [0.0] * 99
    return {
        "logins_per_s": LOGINS_PER_S,
        "requests_per_s": result.requests_per_s,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "errors": result.errors,
        "throughput_kept": round(result.requests_per_s / read.requests_per_s, 3),
        "p99_times_read_p99": round(result.p99_ms / read.p99_ms, 2),
        "logins": len(latencies_ms),
        "login_failures": len(failures),
        "login_p50_ms": round(percentiles[49], 1),
        "login_p99_ms": round(percentiles[98], 1),
    }


def run_wrk(
    scenario: str,
    url: str,
    args: argparse.Namespace,
    data_dir: Path,
    connections: int | None = None,
    duration: int | None = None,
    script: str | None = None,
    **env: str,
) -> Result:
    command = [
        "wrk",
        "-t1",
        f"-c{connections or args.connections}",
        f"-d{duration or args.duration}s",
        "--timeout",
        "30s",
        "-s",
        str(LUA / f"{script or scenario}.lua"),
        url,
    ]
    print(f"running {scenario} ...", flush=True)
    output = subprocess.run(  # noqa: S603  (wrk with arguments built here)
        command,
        env={**os.environ, "BENCH_LUA": str(LUA), "BENCH_DATA": str(data_dir), **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"^RESULT (.*)$", output, re.MULTILINE)
    if match is None:
        sys.exit(f"wrk printed no result for {scenario}:\n{output}")
    raw = json.loads(match.group(1))
    return Result(
        scenario=scenario,
        requests_per_s=round(raw["requests"] / raw["seconds"], 1),
        p50_ms=round(raw["p50_ms"], 2),
        p95_ms=round(raw["p95_ms"], 2),
        p99_ms=round(raw["p99_ms"], 2),
        errors=raw["errors"],
    )


def run_scale(
    url: str, args: argparse.Namespace, data_dir: Path, population: seed.Population, engine: Engine
) -> list[dict[str, object]]:
    """p50 per owner size for each query shape, with the plan PostgreSQL chose.

    Every size is timed once a round and reported by its median round, so a slow moment of
    the machine spoils one sample, not the figure of one size.
    """
    samples: dict[tuple[str, int], list[Result]] = {}
    for _ in range(SCALE_ROUNDS):
        for size in population.scale_owners:
            for shape, query in SCALE_SHAPES.items():
                result = run_wrk(
                    f"scale {shape} {size:,}",
                    url,
                    args,
                    data_dir,
                    connections=SCALE_CONNECTIONS,
                    duration=scale_duration(args),
                    script="list",
                    BENCH_TOKENS=f"scale-{size}.txt",
                    BENCH_QUERY=query,
                )
                samples.setdefault((shape, size), []).append(result)
    rows = []
    for (shape, size), results in samples.items():
        median = sorted(results, key=lambda result: result.p50_ms)[len(results) // 2]
        plan = explain(engine, population.scale_owners[size], SCALE_SHAPES[shape])
        rows.append(
            {
                "shape": shape,
                "tasks_owned": size,
                "p50_ms": median.p50_ms,
                "p99_ms": median.p99_ms,
                "requests_per_s": median.requests_per_s,
                "p50_ms_per_round": [result.p50_ms for result in results],
                "errors": sum(result.errors for result in results),
                "plan": plan,
                "seq_scan_on_tasks": any("Seq Scan on tasks" in line for line in plan),
            }
        )
    return rows


def scale_duration(args: argparse.Namespace) -> int:
    return max(args.duration // 4, 3)


def explain(engine: Engine, owner_id: int, query: str) -> list[str]:
    params: dict[str, object] = {}
    for pair in query.split("&"):
        name, value = pair.split("=")
        params.setdefault(name, [] if name in {"status", "priority"} else value)
        if name in {"status", "priority"}:
            params[name].append(value)  # type: ignore[union-attr]
    filters = TaskQuery.model_validate(params)
    filtered_by, values = page_values(owner_id, filters)
    statement = page_statement(filtered_by, filters.sort).params(values)
    # The values rendered in, by a dialect that leaves `%` single, run on a bare DB-API cursor:
    # psycopg2 reads `%` as a placeholder only when parameters come with the query.
    dialect = postgresql.dialect(paramstyle="named")
    sql = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute("EXPLAIN " + sql)
        return [line for (line,) in cursor.fetchall()]
    finally:
        connection.close()


def measure_metrics_cost() -> dict[str, object]:
    output = subprocess.run(
        [sys.executable, "-m", "bench.metrics_cost"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(output.stdout)


def measure_scrape(metrics_url: str) -> dict[str, object]:
    """One scrape after every scenario has left its samples: how long, and how many series."""
    started = time.perf_counter()
    response = httpx2.get(metrics_url, timeout=10)
    response.raise_for_status()
    series = [line for line in response.text.splitlines() if line and not line.startswith("#")]
    return {"scrape_ms": round((time.perf_counter() - started) * 1000, 2), "series": len(series)}


def print_report(report: dict[str, object]) -> None:
    print()
    print(
        f"{report['duration_s']}s per scenario, {report['connections']} connections, "
        f"{report['workers']} workers, {report['cpus']} CPUs, {report['load_generator']}"
    )
    print(
        f"{len(report['rounds'])} rounds of health, read, list and write; each row is its median round "  # type: ignore[arg-type]
        "(by x health of the same round), with the errors of every round; login: one run"
    )
    columns = ("req/s", "x health", "p50 ms", "p95 ms", "p99 ms")
    header = f"{'scenario':<10}" + "".join(f"{column:>10}" for column in columns) + f"{'p99/p50':>9}{'errors':>8}"
    print(header)
    print("-" * len(header))
    for row in report["scenarios"]:  # type: ignore[attr-defined]
        tail = row["p99_ms"] / row["p50_ms"] if row["p50_ms"] else 0
        print(
            f"{row['scenario']:<10}{row['requests_per_s']:>10.0f}{row['ratio_to_health']:>10.3f}"
            f"{row['p50_ms']:>10.2f}{row['p95_ms']:>10.2f}{row['p99_ms']:>10.2f}{tail:>9.2f}{row['errors']:>8}"
        )
    print()
    logins = report["read_with_logins"]
    print(
        f"read with {logins['logins_per_s']} logins/s arriving: {logins['requests_per_s']:.0f} req/s "  # type: ignore[index]
        f"({logins['throughput_kept']:.2f} of read), p99 {logins['p99_ms']:.2f} ms "  # type: ignore[index]
        f"({logins['p99_times_read_p99']:.2f}x read's), {logins['errors']} errors; "  # type: ignore[index]
        f"{logins['logins']} logins: p50 {logins['login_p50_ms']:.0f} ms, p99 {logins['login_p99_ms']:.0f} ms, "  # type: ignore[index]
        f"{logins['login_failures']} failed"  # type: ignore[index]
    )
    metrics = report["metrics"]
    print(
        f"metrics: {metrics['cost_us']:.2f} us per request on the request path (MetricsMiddleware, "  # type: ignore[index]
        f"best of {metrics['rounds']} x {metrics['requests']:,}); a scrape after the run: "  # type: ignore[index]
        f"{metrics['scrape_ms']:.1f} ms for {metrics['series']} series"  # type: ignore[index]
    )
    for phase in ("scale", "scale_after_writes"):
        print()
        print(
            f"{phase}: {report['scale_rounds']} rounds of {report['scale_duration_s']}s per shape and size, "
            f"connections: {report['scale_connections']}; each row is its median round (by p50)"
        )
        print(f"{'shape':<12}{'tasks':>10}{'p50 ms':>10}{'x p50@100':>11}{'p99 ms':>10}{'errors':>8}  plan")
        smallest: dict[str, float] = {}
        for row in report[phase]:  # type: ignore[attr-defined]
            base = smallest.setdefault(row["shape"], row["p50_ms"])
            print(
                f"{row['shape']:<12}{row['tasks_owned']:>10,}{row['p50_ms']:>10.2f}{row['p50_ms'] / base:>11.2f}"
                f"{row['p99_ms']:>10.2f}{row['errors']:>8}  {plan_summary(row['plan'])}"
            )
    print("\nwhole plans (EXPLAIN) are in bench/results/latest.json")


def plan_summary(plan: list[str]) -> str:
    """The plan's scan nodes, in order: enough to see which index a query used."""
    scans = [line.strip().removeprefix("->").strip().split("  (")[0] for line in plan if "Scan" in line]
    return "; ".join(scans)


if __name__ == "__main__":
    sys.exit(main())
