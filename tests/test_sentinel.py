"""Redis behind Sentinel: the primary is killed under load, and the service fails over by itself.

A primary, a replica and three Sentinels, all real redis-server processes on loopback ports,
serve the production server (gunicorn, two workers). The figures of the failover are printed
(`pytest -s tests/test_sentinel.py`).
"""

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest
from pydantic import ValidationError
from redis import Redis

from task_api.config import Settings, explain
from task_api.sentinel import SentinelTarget, parse_sentinel_url
from tests.conftest import PASSWORD, REDIS_SERVER, free_port, start_redis
from tests.factories import TaskFactory, UserFactory
from tests.test_server import wait_for

SERVICE = "mymaster"
DOWN_AFTER_MS = 1000  # how long Sentinels wait before they call the primary down
RECOVERY_TARGET_S = 10


@dataclass
class Cluster:
    primary_port: int
    replica_port: int
    sentinel_ports: list[int]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        sentinels = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{sentinels}/{SERVICE}/0"

    def primary(self) -> tuple[str, int]:
        with Redis(port=self.sentinel_ports[0], decode_responses=True) as sentinel:
            host, port = sentinel.sentinel_get_master_addr_by_name(SERVICE)
        return host, int(port)


def start_sentinel(port: int, primary_port: int, directory: Path) -> subprocess.Popen[bytes]:
    config = directory / f"sentinel-{port}.conf"  # Sentinel rewrites its file as it learns
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n"
        f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {SERVICE} 10000\n"
        f"sentinel parallel-syncs {SERVICE} 1\n"
    )
    assert REDIS_SERVER is not None
    return subprocess.Popen([REDIS_SERVER, str(config), "--sentinel"], stdout=subprocess.DEVNULL)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    cluster = Cluster(free_port(), free_port(), [free_port() for _ in range(3)])
    processes = cluster.processes
    try:
        data = ["--dir", str(tmp_path)]  # where the replica keeps the copy it syncs
        processes["primary"] = start_redis(cluster.primary_port, *data)
        processes["replica"] = start_redis(
            cluster.replica_port, *data, "--replicaof", "127.0.0.1", str(cluster.primary_port)
        )
        for port in cluster.sentinel_ports:
            processes[f"sentinel-{port}"] = start_sentinel(port, cluster.primary_port, tmp_path)
        wait_for(lambda: all_sentinels_see_the_whole_cluster(cluster), timeout=30)
        yield cluster
    finally:
        for process in processes.values():
            process.kill()
            process.wait(timeout=10)


def all_sentinels_see_the_whole_cluster(cluster: Cluster) -> bool:
    for port in cluster.sentinel_ports:
        try:
            with Redis(port=port, decode_responses=True) as sentinel:
                replicas = sentinel.sentinel_slaves(SERVICE)
                others = sentinel.sentinel_sentinels(SERVICE)
        except OSError:
            return False
        if len(others) != len(cluster.sentinel_ports) - 1 or not any(
            "s_down" not in replica["flags"] and replica["master-link-status"] == "ok" for replica in replicas
        ):
            return False
    return True


@dataclass
class Outcome:
    at: float
    status: int | str


def test_the_service_fails_over_when_the_primary_is_killed(cluster, start_server, db):
    server = start_server(REDIS_URL=cluster.url, WEB_CONCURRENCY="2", RATE_LIMIT="100000/hour")
    user = UserFactory()
    task = TaskFactory(owner=user)
    client = httpx2.Client(base_url=server.url, timeout=10)

    def log_in() -> dict[str, str]:
        response = client.post("/login", json={"email": user.email, "password": PASSWORD})
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    live, dead = log_in(), log_in()
    assert client.post("/logout", headers=dead).status_code == 204
    spent = [client.get(f"/tasks/{task.id}", headers=live) for _ in range(5)]
    remaining_before = int(spent[-1].headers["X-RateLimit-Remaining"])
    with Redis(port=cluster.primary_port) as primary:
        assert primary.wait(1, 5000) == 1  # what was written has reached the replica
    old_primary = cluster.primary()

    stop = threading.Event()

    def keep_asking(headers: dict[str, str]) -> list[Outcome]:
        outcomes = []
        with httpx2.Client(base_url=server.url, timeout=10) as own:
            while not stop.is_set():
                try:
                    status: int | str = own.get(f"/tasks/{task.id}", headers=headers).status_code
                except httpx2.TransportError as exc:
                    status = type(exc).__name__
                outcomes.append(Outcome(time.monotonic(), status))
        return outcomes

    with ThreadPoolExecutor(max_workers=4) as pool:
        readers = [pool.submit(keep_asking, live) for _ in range(3)]
        revoked = pool.submit(keep_asking, dead)
        time.sleep(1)
        killed_at = time.monotonic()
        cluster.processes["primary"].send_signal(signal.SIGKILL)
        wait_for(lambda: cluster.primary() != old_primary, timeout=30)
        time.sleep(3)  # keep the load on past the failover
        stop.set()
        reads = [outcome for future in readers for outcome in future.result()]
        refusals = revoked.result()

    after = client.get(f"/tasks/{task.id}", headers=live)
    still_dead = client.get(f"/tasks/{task.id}", headers=dead)
    failed = [outcome for outcome in reads if outcome.status != 200]
    recovered_after = max((outcome.at for outcome in failed), default=killed_at) - killed_at
    # Every 200 spent one unit. A failover may lose a spend the old primary took in its last
    # instant, before it could replicate (lost > 0), or keep one whose answer it never sent, which
    # the reader saw as a 503 (lost < 0): at most one per reader, the request in flight at the kill.
    expected = remaining_before - (len(reads) - len(failed)) - 1
    lost = int(after.headers["X-RateLimit-Remaining"]) - expected
    print(
        f"\nfailover: {len(reads)} reads, {len(failed)} answered 503 "
        f"({sorted({outcome.status for outcome in failed}, key=str)}), "
        f"reads succeed again {recovered_after:.1f} s after the SIGKILL; "
        f"the logged-out token was refused {len(refusals)} times "
        f"({sorted({outcome.status for outcome in refusals}, key=str)}); budget spends lost: {lost}"
    )

    assert {outcome.status for outcome in failed} <= {503}
    assert recovered_after <= RECOVERY_TARGET_S
    assert {outcome.status for outcome in refusals} <= {401, 503}
    assert after.status_code == 200, after.text
    assert -len(readers) <= lost < remaining_before - expected  # the budget went on, never reset
    assert still_dead.status_code == 401
    assert cluster.primary() == ("127.0.0.1", cluster.replica_port)


@pytest.mark.parametrize(
    ("url", "target"),
    [
        (
            "redis+sentinel://:s3cret@10.0.0.5:26379,10.0.0.6,[::1]:26380/mymaster/2?sentinel_password=other",
            SentinelTarget(
                sentinels=[("10.0.0.5", 26379), ("10.0.0.6", 26379), ("::1", 26380)],
                service="mymaster",
                db=2,
                password="s3cret",
                sentinel_options={"sentinel_password": "other"},
            ),
        ),
        ("redis+sentinel://app:pw@s1:1/cache", SentinelTarget([("s1", 1)], "cache", username="app", password="pw")),
    ],
)
def test_sentinel_urls_are_read_whole(url, target):
    assert parse_sentinel_url(url) == target
    assert Settings(redis_url=url, _env_file=None).redis_url == url


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://s1:26379", "names no service"),
        ("redis+sentinel:///mymaster", "names no Sentinel"),
        ("redis+sentinel://s1:port/mymaster", "not host:port"),
        ("redis+sentinel://s1:65536/mymaster", "not host:port"),
        ("redis+sentinel://:hunter2/x@s1/mymaster", "not host:port"),
        ("redis+sentinel://s1/mymaster/zero", "where a database number goes"),
        ("redis+sentinel://s1/mymaster?timeout=1", "unknown options ['timeout']"),
        ("sentinel://s1/mymaster", "must start with one of redis://, rediss://, unix://, redis+sentinel://"),
    ],
)
def test_a_bad_redis_url_is_one_line_naming_the_variable(url, says):
    with pytest.raises(ValidationError) as refused:
        Settings(redis_url=url, _env_file=None)

    assert explain(refused.value).startswith("REDIS_URL: ")
    assert says in explain(refused.value)
    assert "hunter2" not in explain(refused.value)
