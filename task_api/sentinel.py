"""REDIS_URL's Sentinel form, read once when the settings load."""

from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote

SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_OPTIONS = frozenset({"sentinel_username", "sentinel_password"})
DEFAULT_SENTINEL_PORT = 26379
MAX_PORT = 65535


@dataclass(frozen=True)
class SentinelTarget:
    """`redis+sentinel://[[username]:password@]host:port[,host:port...]/service[/db][?options]`."""

    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_options: dict[str, str] = field(default_factory=dict)


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Read a Sentinel URL; a ValueError says what is wrong with it."""
    rest = url.removeprefix(f"{SENTINEL_SCHEME}://")
    rest, _, query = rest.partition("?")
    location, _, path = rest.partition("/")
    credentials, _, hosts = location.rpartition("@")
    username, _, password = credentials.partition(":")
    sentinels = [_host_and_port(host) for host in hosts.split(",") if host]
    service, _, db = path.strip("/").partition("/")
    options = {name: values[-1] for name, values in parse_qs(query, keep_blank_values=True).items()}
    if not sentinels:
        raise ValueError("names no Sentinel: redis+sentinel://host:26379[,host:26379...]/service")
    if not service:
        raise ValueError("names no service: redis+sentinel://host:26379/service, e.g. /mymaster")
    if not db.isdigit() and db:
        raise ValueError(f"has {db!r} where a database number goes: .../service/0")
    if unknown := set(options) - SENTINEL_OPTIONS:
        raise ValueError(f"has unknown options {sorted(unknown)}; known: {sorted(SENTINEL_OPTIONS)}")
    return SentinelTarget(
        sentinels=sentinels,
        service=unquote(service),
        db=int(db or 0),
        username=unquote(username) or None,
        password=unquote(password) or None,
        sentinel_options=options,
    )


def _host_and_port(address: str) -> tuple[str, int]:
    """`host:port`, `[IPv6]:port`, or either without the port (26379)."""
    if address.startswith("["):
        host, _, port = address[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = address.partition(":")
    if not host or not (port.isdigit() or not port) or int(port or DEFAULT_SENTINEL_PORT) > MAX_PORT:
        # The address is not echoed: a password with an unencoded / ? or @ lands here.
        raise ValueError("has a Sentinel that is not host:port (percent-encode / ? @ : in a password)")
    return host, int(port or DEFAULT_SENTINEL_PORT)
