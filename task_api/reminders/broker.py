"""REDIS_URL as Celery's broker."""

from typing import Any
from urllib.parse import quote

from task_api.config import Settings
from task_api.sentinel import SENTINEL_SCHEME, parse_sentinel_url


def broker(settings: Settings) -> tuple[str, dict[str, Any]]:
    """Celery's broker URL and transport options: REDIS_URL as it is, or its Sentinel form
    rewritten as kombu's (`sentinel://host:port;sentinel://...`, the service as `master_name`)."""
    if settings.redis_url is None:
        raise SystemExit(
            "error: reminders on Celery need REDIS_URL (their broker); the embedded default "
            "sends them inside `python -m task_api serve`"
        )
    if not settings.redis_url.startswith(f"{SENTINEL_SCHEME}://"):
        return settings.redis_url, {}
    target = parse_sentinel_url(settings.redis_url)
    credentials = ""
    if target.password:
        credentials = f"{quote(target.username or '', safe='')}:{quote(target.password, safe='')}@"
    url = ";".join(
        f"sentinel://{credentials}{f'[{host}]' if ':' in host else host}:{port}/{target.db}"
        for host, port in target.sentinels
    )
    options: dict[str, Any] = {"master_name": target.service}
    if target.sentinel_options:
        options["sentinel_kwargs"] = {
            name.removeprefix("sentinel_"): value for name, value in target.sentinel_options.items()
        }
    return url, options
