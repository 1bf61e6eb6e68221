"""Reminders under load: `make bench-reminders` (python -m bench.reminders).

Seeds a fresh database as `make bench` does, then 10,000 reminders falling due at one instant
LEAD_S later, spread over 200 users, written as the API writes them. Starts the server as
`make bench` does (gunicorn.conf.py), two Celery workers and one beat (`python -m task_api
worker|beat`, production settings, logging as shipped) that mail to an SMTP sink in a process of
its own, and runs bench/run.py's `read` scenario from before the instant until after the last
reminder, counting its requests each second from the server's /metrics. Reports how long after
the instant the last reminder arrived, the lag (at the sink, and reminded_at - remind_at in the
database), duplicates and missing ones, the reads per second while the reminders are delivered
against before, and what each process spent of the CPUs meanwhile. Stops what it started and
writes bench/results/reminders.json.
"""

import argparse
import json
import multiprocessing
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import httpx2
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from celery import Celery
from redis import Redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from bench import run, seed
from task_api.config import Settings
from task_api.migrate import migrate

REMINDERS = 10_000
USERS = 200
LEAD_S = 25  # from the end of seeding to the instant the reminders fall due
TIMEOUT_S = 180  # after the instant, when the run gives up waiting for the last reminder
TAIL_S = 10  # reads measured on after the last reminder: a second "without"
SAMPLE_S = 1.0
TARGET_S = 60
TARGET_RATIO = 0.8
READS = 'task_api_requests_total{method="GET",route="/tasks/{task_id}",status="200"}'
MESSAGE_ID = re.compile(rb"^Message-ID:\s*<reminder\.(\d+)\.(\d+)@[^>\r\n]*>", re.IGNORECASE | re.MULTILINE)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    at: float  # epoch seconds
    reads: float
    received: int
    pending: int
    cpu_s: dict[str, float]


@dataclass
class Fleet:
    """The processes this run started, by name, so each can be stopped and its CPU counted."""

    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def pids(self) -> dict[int, str]:
        return {process.pid: name for name, process in self.processes.items()}

    def check_alive(self, data_dir: Path) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                sys.exit(f"{name} exited with {process.returncode}; see {data_dir / (name + '.log')}")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Sink:
    """An SMTP server that takes every message at once and notes when it arrived, its
    Message-ID's task id and `remind_at`, and the connection it came over."""

    def __init__(self, received: "Synchronized[int]") -> None:
        self.received = received
        self.arrivals: list[tuple[float, int, int, str]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802  (aiosmtpd's name)
        arrived = time.time()
        match = MESSAGE_ID.search(envelope.original_content or b"")
        task_id, remind_at_us = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
        self.arrivals.append((arrived, task_id, remind_at_us, str(session.peer)))
        self.received.value += 1
        return "250 OK"


def serve_sink(port: int, received: "Synchronized[int]", ready: Event, stop: Event, results: Connection) -> None:
    sink = Sink(received)
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    stop.wait()
    controller.stop()
    results.send(sink.arrivals)


class SinkProcess:
    """The sink in a process of its own, so its work shows apart from this one's."""

    def __init__(self, port: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.received = context.Value("i", 0)
        self._ready, self._stop = context.Event(), context.Event()
        self._results, sent = context.Pipe(duplex=False)
        self.process = context.Process(
            target=serve_sink, args=(port, self.received, self._ready, self._stop, sent), name="smtp sink"
        )

    def start(self) -> None:
        self.process.start()
        if not self._ready.wait(30):
            sys.exit("the SMTP sink did not start")

    def stop(self) -> list[tuple[float, int, int, str]]:
        """What arrived: (epoch seconds, task id, `remind_at` in epoch microseconds, client address)."""
        if self.process.pid is None:
            return []
        self._stop.set()
        arrivals = self._results.recv() if self._results.poll(30) else []
        self.process.join(timeout=30)
        return arrivals


@dataclass
class Measured:
    due: datetime
    task_ids: list[int]
    started: float  # when the reads began
    samples: list[Sample]
    read_errors: int
    worker_metrics: list[dict[str, float]]


def main() -> int:
    parser = argparse.ArgumentParser(prog="make bench-reminders")
    parser.add_argument("--reminders", type=int, default=REMINDERS)
    parser.add_argument("--users", type=int, default=USERS)
    parser.add_argument("--celery-workers", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn's (WEB_CONCURRENCY), as in make bench")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--database-url", default="postgresql+psycopg2://postgres@127.0.0.1:5432/task_api_bench_reminders"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/8")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--metrics-port", type=int, default=9090)
    parser.add_argument("--smtp-port", type=int, default=8125)
    parser.add_argument("--worker-metrics-port", type=int, default=9191, help="the first worker's; the next count on")
    args = parser.parse_args()

    settings = Settings(
        _env_file=None,
        app_env="production",
        secret_key=run.SECRET_KEY,
        database_url=args.database_url,
        redis_url=args.redis_url,
        smtp_url=f"smtp://127.0.0.1:{args.smtp_port}",
        access_token_expire_minutes=run.TOKEN_MINUTES,
    )
    data_dir = run.RESULTS / "reminders-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    print(f"migrating and seeding {make_url(args.database_url).database} ...", flush=True)
    run.recreate_database(args.database_url)
    migrate(settings)
    engine = create_engine(args.database_url, connect_args={"options": "-c statement_timeout=0"})
    redis = Redis.from_url(args.redis_url, decode_responses=True)
    redis.flushdb()
    population = seed.seed(engine)
    seed.write_data_files(population, settings, data_dir, engine)

    sink = SinkProcess(args.smtp_port)
    fleet = Fleet()
    try:
        sink.start()
        start_services(args, data_dir, fleet)
        measured = measure(args, data_dir, engine, population.spread_owners[: args.users], fleet, sink)
    finally:
        fleet.stop()
        arrivals = sink.stop()
    report = summarise(engine, settings, args, measured, arrivals, load_before)
    engine.dispose()
    redis.close()
    (run.RESULTS / "reminders.json").write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    delivery = report["delivery"]
    failed = delivery["missing"] or delivery["duplicates"] or delivery["early"] or report["reads"]["errors"]
    return 1 if failed else 0


def start_services(args: argparse.Namespace, data_dir: Path, fleet: Fleet) -> None:
    """The server as `make bench` starts it, the Celery workers and the beat, warmed up."""
    fleet.processes["api"] = run.start_server(args, data_dir)
    for number in range(1, args.celery_workers + 1):
        metrics_port = str(args.worker_metrics_port + number - 1)
        fleet.processes[f"worker-{number}"] = start_celery("worker", args, data_dir, number, metrics_port)
    fleet.processes["beat"] = start_celery("beat", args, data_dir, 0, "0")
    wait_for_workers(args.redis_url, args.celery_workers, fleet, data_dir)
    url = f"http://127.0.0.1:{args.port}"
    run.run_wrk("read (warm-up)", url, args, data_dir, duration=run.WARM_UP_S, script="read")


def measure(
    args: argparse.Namespace, data_dir: Path, engine: Engine, owners: list[int], fleet: Fleet, sink: SinkProcess
) -> Measured:
    """Seed the reminders, then read throughout, sampling each second, until TAIL_S after the
    last one arrived (or TIMEOUT_S after they fell due)."""
    due, task_ids = seed_reminders(engine, owners, args.reminders)
    lead = due.timestamp() - time.time()
    print(f"{len(task_ids):,} reminders due at {due:%H:%M:%S} UTC, {lead:.0f}s from now", flush=True)
    if lead < LEAD_S - 5:
        sys.exit(f"seeding the reminders took too long: {lead:.0f}s were left before they fell due")
    watched = {**fleet.pids(), os.getpid(): "bench", sink.process.pid or 0: "smtp sink"}
    database = make_url(args.database_url).database or ""
    reads_url = f"http://127.0.0.1:{args.metrics_port}/metrics"
    with ThreadPoolExecutor(max_workers=1) as pool:
        reads = pool.submit(
            run.run_wrk,
            "read, reminders falling due meanwhile",
            f"http://127.0.0.1:{args.port}",
            args,
            data_dir,
            duration=int(lead + TIMEOUT_S + TAIL_S),
            script="read",
        )
        started = time.time()
        samples: list[Sample] = []
        try:
            all_arrived_at = None
            while time.time() < due.timestamp() + TIMEOUT_S:
                sample = take_sample(reads_url, sink.received, engine, watched, database)
                samples.append(sample)
                if all_arrived_at is None and sample.received >= len(task_ids) and sample.pending == 0:
                    all_arrived_at = sample.at
                if all_arrived_at is not None and sample.at > all_arrived_at + TAIL_S:
                    break
                fleet.check_alive(data_dir)
                time.sleep(max(SAMPLE_S - (time.time() - sample.at), 0))
        finally:
            stop_wrk()
        read_errors = reads.result().errors
    worker_metrics = [
        scrape(f"http://127.0.0.1:{args.worker_metrics_port + number}/metrics") for number in range(args.celery_workers)
    ]
    return Measured(due, task_ids, started, samples, read_errors, worker_metrics)


def service_environment(args: argparse.Namespace, **more: str) -> dict[str, str]:
    """The server's production environment (bench/run.py's) and the mail server."""
    return {
        **os.environ,
        "APP_ENV": "production",
        "SECRET_KEY": run.SECRET_KEY,
        "DATABASE_URL": args.database_url,
        "REDIS_URL": args.redis_url,
        "SMTP_URL": f"smtp://127.0.0.1:{args.smtp_port}",
        **more,
    }


def start_celery(
    command: str, args: argparse.Namespace, data_dir: Path, number: int, metrics_port: str
) -> subprocess.Popen[bytes]:
    name = f"{command}-{number}" if number else command
    return subprocess.Popen(  # noqa: S603  (our own CLI, with fixed arguments)
        [sys.executable, "-m", "task_api", command],
        cwd=run.ROOT,
        env=service_environment(args, WORKER_METRICS_PORT=metrics_port),
        stdout=(data_dir / f"{name}.log").open("wb"),
        stderr=subprocess.STDOUT,
    )


def wait_for_workers(redis_url: str, count: int, fleet: Fleet, data_dir: Path) -> None:
    control = Celery("bench", broker=redis_url, set_as_current=False).control
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        fleet.check_alive(data_dir)
        if len(control.ping(timeout=1.0)) >= count:
            return
    sys.exit(f"fewer than {count} workers answered a ping; see {data_dir}")


def seed_reminders(engine: Engine, owners: list[int], count: int) -> tuple[datetime, list[int]]:
    """`count` tasks over `owners`, each with a reminder due at one whole second LEAD_S ahead,
    as POST /tasks writes them: armed (`reminder_next_at` = `remind_at`), never claimed."""
    due = datetime.fromtimestamp(int(time.time()) + LEAD_S, UTC)
    with engine.begin() as connection:
        task_ids = connection.scalars(
            text(
                "INSERT INTO tasks (owner_id, title, remind_at, reminder_next_at)"
                " SELECT owners.id, 'Call about order ' || n, :due, :due"
                " FROM generate_series(0, :count - 1) n"
                " JOIN unnest(CAST(:owners AS integer[])) WITH ORDINALITY owners(id, place)"
                " ON owners.place = n % :users + 1"
                " RETURNING id"
            ),
            {"due": due, "count": count, "owners": owners, "users": len(owners)},
        ).all()
    return due, list(task_ids)


def stop_wrk() -> None:
    """Interrupt this process's wrk: it stops at once and reports what it measured."""
    for pid, (_, parent, command) in processes().items():
        if command == "wrk" and parent == os.getpid():
            os.kill(pid, signal.SIGINT)


def processes() -> dict[int, tuple[float, int, str]]:
    """Every process's CPU seconds so far, parent pid and command name."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        command = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        found[int(entry.name)] = ((int(fields[11]) + int(fields[12])) / CLOCK_TICKS, int(fields[1]), command)
    return found


def cpu_by_group(watched: dict[int, str], database: str) -> dict[str, float]:
    """CPU seconds so far of what this run started (with their children), of the PostgreSQL
    backends serving its database, of Redis, and of the whole machine."""
    groups: defaultdict[str, float] = defaultdict(float)
    for pid, (seconds, parent, command) in processes().items():
        name = "wrk" if command == "wrk" and parent == os.getpid() else watched.get(pid) or watched.get(parent)
        if name is None and command == "postgres":
            try:
                if f" {database} " in (Path("/proc") / str(pid) / "cmdline").read_text():
                    name = "postgres"
            except OSError:
                continue
        if name is None and command == "redis-server":
            name = "redis"
        if name is not None:
            groups[name] += seconds
    with open("/proc/stat") as stat:
        jiffies = [int(value) for value in stat.readline().split()[1:]]
    idle = jiffies[3] + jiffies[4]
    groups["machine"] = (sum(jiffies[:8]) - idle) / CLOCK_TICKS
    return dict(groups)


def take_sample(
    reads_url: str, received: "Synchronized[int]", engine: Engine, watched: dict[int, str], database: str
) -> Sample:
    at = time.time()
    reads = scrape(reads_url).get(READS, 0.0)
    with engine.connect() as connection:
        pending = connection.scalar(text("SELECT count(*) FROM tasks WHERE reminder_next_at IS NOT NULL")) or 0
    return Sample(at, reads, received.value, pending, cpu_by_group(watched, database))


def scrape(url: str) -> dict[str, float]:
    """A /metrics page's samples, summed over the names and labels that a line names alone."""
    samples: defaultdict[str, float] = defaultdict(float)
    for line in httpx2.get(url, timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] += float(value)
    return dict(samples)


def span(samples: list[Sample], start: float, end: float) -> tuple[Sample, Sample] | None:
    """The first and last sample between `start` and `end`, if there are two."""
    inside = [sample for sample in samples if start <= sample.at <= end]
    return (inside[0], inside[-1]) if len(inside) > 1 else None


def throughput(samples: list[Sample], start: float, end: float) -> dict[str, object]:
    measured = span(samples, start, end)
    if measured is None:
        return {"seconds": 0.0, "requests_per_s": 0.0, "cpu_cores": {}}
    first, last = measured
    seconds = last.at - first.at
    cores = {name: round((last.cpu_s.get(name, 0) - first.cpu_s.get(name, 0)) / seconds, 2) for name in last.cpu_s}
    cores["other"] = round(cores["machine"] - sum(value for name, value in cores.items() if name != "machine"), 2)
    return {
        "seconds": round(seconds, 1),
        "requests_per_s": round((last.reads - first.reads) / seconds, 1),
        "cpu_cores": cores,
    }


def percentiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {"p50_s": 0.0, "p99_s": 0.0, "max_s": max(values, default=0.0)}
    cuts = statistics.quantiles(values, n=100)
    return {"p50_s": round(cuts[49], 2), "p99_s": round(cuts[98], 2), "max_s": round(max(values), 2)}


def summarise(
    engine: Engine,
    settings: Settings,
    args: argparse.Namespace,
    measured: Measured,
    arrivals: list[tuple[float, int, int, str]],
    load_before: tuple[float, float, float],
) -> dict[str, Any]:
    due, task_ids, samples = measured.due, measured.task_ids, measured.samples
    due_at = due.timestamp()
    copies = Counter((task_id, remind_at_us) for _, task_id, remind_at_us, _ in arrivals)
    seeded = set(task_ids)
    sink_lags = [arrived - remind_at_us / 1_000_000 for arrived, _, remind_at_us, _ in arrivals]
    last_arrival = max((arrived for arrived, *_ in arrivals), default=due_at)
    with engine.connect() as connection:
        lags = connection.scalars(
            text(
                "SELECT extract(epoch FROM reminded_at - remind_at) FROM tasks"
                " WHERE id = ANY(:ids) AND reminded_at IS NOT NULL"
            ),
            {"ids": task_ids},
        ).all()
        attempts = connection.execute(
            text("SELECT reminder_attempt, count(*) FROM tasks WHERE id = ANY(:ids) GROUP BY 1 ORDER BY 1"),
            {"ids": task_ids},
        ).all()
    database_lags = [float(lag) for lag in lags]
    before = throughput(samples, measured.started + run.WARM_UP_S, due_at)
    during = throughput(samples, due_at, last_arrival + SAMPLE_S)
    after = throughput(samples, last_arrival + SAMPLE_S, samples[-1].at if samples else 0)
    ratio = during["requests_per_s"] / before["requests_per_s"] if before["requests_per_s"] else 0.0  # type: ignore[operator]
    return {
        "reminders": len(task_ids),
        "users": args.users,
        "due_at": due.isoformat(),
        "celery_workers": args.celery_workers,
        "worker_concurrency": settings.worker_concurrency,
        "reminder_batch_size": settings.reminder_batch_size,
        "reminder_sweep_seconds": settings.reminder_sweep_seconds,
        "reminder_lease_seconds": settings.reminder_lease_seconds,
        "gunicorn_workers": args.workers,
        "connections": args.connections,
        "cpus": os.cpu_count(),
        "load_average_before": [round(load, 2) for load in load_before],
        "delivery": {
            "last_sent_after_due_s": round(last_arrival - due_at, 2),
            "sink_lag": percentiles(sink_lags),
            "database_lag": percentiles(database_lags),
            "received": len(arrivals),
            "recorded": len(database_lags),
            "duplicates": sum(count - 1 for count in copies.values()),
            "missing": len(seeded - {task_id for task_id, _ in copies}),
            "unknown": len({task_id for task_id, _ in copies} - seeded),
            "early": sum(1 for lag in sink_lags if lag < 0),
            "smtp_connections": len({peer for *_, peer in arrivals}),
            "claims": dict(attempts),
            "sent_by_worker": [
                metrics.get("task_api_reminders_sent_total", 0.0) for metrics in measured.worker_metrics
            ],
        },
        "reads": {
            "before": before,
            "during": during,
            "after": after,
            "ratio": round(ratio, 3),
            "errors": measured.read_errors,
        },
        "timeline": [
            {
                "s": round(sample.at - due_at, 1),
                "reads": sample.reads,
                "received": sample.received,
                "pending": sample.pending,
            }
            for sample in samples
        ],
    }


def print_report(report: dict[str, Any]) -> None:
    delivery, reads = report["delivery"], report["reads"]
    last = delivery["last_sent_after_due_s"]
    print()
    print(
        f"{report['reminders']:,} reminders over {report['users']} users due at {report['due_at']}; "
        f"{report['celery_workers']} workers x {report['worker_concurrency']} threads, batches of "
        f"{report['reminder_batch_size']}, one beat; {report['cpus']} CPUs, load before "
        f"{report['load_average_before'][0]}"
    )
    print(f"last sent {last:.1f}s after they fell due ({verdict(last <= TARGET_S)} <= {TARGET_S}s)")
    for name, title in (("sink_lag", "at the sink"), ("database_lag", "reminded_at - remind_at")):
        lag = delivery[name]
        print(f"lag {title}: p50 {lag['p50_s']:.2f}s, p99 {lag['p99_s']:.2f}s, max {lag['max_s']:.2f}s")
    print(
        f"received {delivery['received']:,}, recorded {delivery['recorded']:,}; duplicates {delivery['duplicates']}, "
        f"missing {delivery['missing']}, early {delivery['early']}; {delivery['smtp_connections']} SMTP connections; "
        f"claims by attempt {delivery['claims']}; sent by worker {delivery['sent_by_worker']}"
    )
    print(
        f"reads (GET /tasks/{{id}}, {report['connections']} connections): "
        f"{reads['before']['requests_per_s']:.0f} req/s before, "
        f"{reads['during']['requests_per_s']:.0f} while delivering "
        f"(x{reads['ratio']:.2f}, {verdict(reads['ratio'] >= TARGET_RATIO)} >= {TARGET_RATIO}), "
        f"{reads['after']['requests_per_s']:.0f} after; {reads['errors']} errors"
    )
    print("CPU cores used (other: the rest of the machine; machine: all of it):")
    names = sorted(reads["during"]["cpu_cores"], key=lambda name: (name == "machine", name))
    print(f"{'':<8}" + "".join(f"{name:>10}" for name in names))
    for phase in ("before", "during", "after"):
        cores = reads[phase]["cpu_cores"]
        seconds = reads[phase]["seconds"]
        print(f"{phase:<8}" + "".join(f"{cores.get(name, 0):>10.2f}" for name in names) + f"   over {seconds}s")


def verdict(met: bool) -> str:
    return "target met:" if met else "TARGET MISSED:"


if __name__ == "__main__":
    sys.exit(main())
