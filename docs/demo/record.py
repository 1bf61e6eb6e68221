"""`make demo`: the embedded default rolled out and used through Swagger UI, recorded.

Starts `python -m task_api serve` on a free port with a throwaway SQLite file, drives Swagger
UI in headless Chromium (register, Authorize, create two tasks, list them filtered, log out,
see the 401), and leaves a screenshot per step and a video of the whole session beside this
file. Every request that would leave this machine is refused, as in tests/test_browser.py.
Playwright records video through ffmpeg; Debian's is used, linked where Playwright looks,
because Playwright's own download comes from its CDN, not a package registry.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
import playwright
from playwright.sync_api import Locator, Page, Route, sync_playwright

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
VIDEO = HERE / "walkthrough.webm"
STEPS = [
    "01-swagger-ui",
    "02-register",
    "03-authorize",
    "04-create-two-tasks",
    "05-list-filtered",
    "06-logout",
    "07-token-refused",
]
EMAIL = "demo@example.com"
PASSWORD = "correct horse battery"
VIEWPORT = {"width": 1100, "height": 760}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def embedded_server(workdir: Path) -> Iterator[str]:
    """The embedded default (SQLite and the in-process Redis), as `make run` starts it."""
    port = free_port()
    environment = {
        key: value for key, value in os.environ.items() if key not in {"DATABASE_URL", "REDIS_URL", "APP_ENV"}
    }
    environment |= {"DATABASE_URL": f"sqlite:///{workdir / 'demo.sqlite3'}", "PYTHONPATH": str(ROOT)}
    with (workdir / "server.log").open("wb") as log:
        server = subprocess.Popen(  # noqa: S603  (our own CLI, with fixed arguments)
            [sys.executable, "-m", "task_api", "serve", "--port", str(port)],
            cwd=workdir,  # away from a .env in the checkout
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, server)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def wait_until_up(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.poll() is None:
        try:
            httpx2.get(f"{url}/health", timeout=1)
            return
        except httpx2.TransportError:
            time.sleep(0.2)
    raise SystemExit("error: the server did not start (see its log above)")


def use_system_ffmpeg(browsers: Path) -> None:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise SystemExit("error: recording needs ffmpeg (apt-get install ffmpeg)")
    registry = Path(playwright.__file__).parent / "driver" / "package" / "browsers.json"
    revision = next(b["revision"] for b in json.loads(registry.read_text())["browsers"] if b["name"] == "ffmpeg")
    target = browsers / f"ffmpeg-{revision}"
    target.mkdir(parents=True)
    (target / "ffmpeg-linux").symlink_to(ffmpeg)
    os.environ["PLAYWRIGHT_BROWSERS_PATH"] = str(browsers)


def operation(page: Page, operation_id: str) -> Locator:
    block = page.locator(f"#operations-{operation_id}")
    block.locator(".opblock-summary").click()
    block.get_by_role("button", name="Try it out").click()
    return block


def execute(block: Locator, expected_status: str) -> None:
    block.get_by_role("button", name="Execute").click()
    status = block.locator(".live-responses-table tbody .response-col_status").first
    status.get_by_text(expected_status, exact=True).wait_for()
    block.locator(".live-responses-table").scroll_into_view_if_needed()


def fill_body(block: Locator, body: dict[str, object]) -> None:
    block.locator("textarea.body-param__text").fill(json.dumps(body, indent=2))


def walk_through(page: Page, url: str) -> None:
    shots = iter(STEPS)

    def screenshot() -> None:
        page.wait_for_timeout(400)
        page.screenshot(path=HERE / f"{next(shots)}.png")

    page.goto(f"{url}/docs")
    page.locator(".information-container").wait_for()
    screenshot()

    register = operation(page, "auth-register_register_post")
    fill_body(register, {"email": EMAIL, "password": PASSWORD, "name": "Demo"})
    execute(register, "201")
    screenshot()

    page.get_by_role("button", name="Authorize").first.click()
    page.locator("#oauth_username").fill(EMAIL)
    page.locator("#oauth_password").fill(PASSWORD)
    page.locator(".auth-btn-wrapper .authorize").click()
    page.locator(".auth-btn-wrapper button", has_text="Logout").wait_for()
    screenshot()
    page.locator(".auth-btn-wrapper .btn-done").click()

    create = operation(page, "tasks-create_task_tasks_post")
    fill_body(create, {"title": "Write the report", "priority": "high", "due_date": "2030-01-31T17:00:00+01:00"})
    execute(create, "201")
    fill_body(create, {"title": "Book the venue", "priority": "low"})
    create.get_by_role("button", name="Execute").click()
    create.locator(".live-responses-table .microlight", has_text="Book the venue").wait_for()
    create.locator(".live-responses-table").scroll_into_view_if_needed()
    screenshot()

    listing = operation(page, "tasks-list_tasks_tasks_get")
    listing.locator('tr[data-param-name="priority"] select').select_option("high")
    listing.locator('tr[data-param-name="q"] input').fill("report")
    execute(listing, "200")
    found = listing.locator(".live-responses-table .microlight").first.inner_text()
    if "Write the report" not in found or "Book the venue" in found:
        raise SystemExit(f"error: the filtered list is wrong: {found}")
    screenshot()

    logout = operation(page, "auth-logout_logout_post")
    logout.locator("textarea.body-param__text").fill("")
    execute(logout, "204")
    screenshot()

    listing.get_by_role("button", name="Execute").click()
    listing.locator(".live-responses-table tbody .response-col_status").first.get_by_text("401").wait_for()
    listing.locator(".live-responses-table").scroll_into_view_if_needed()
    screenshot()


def only_this_server(url: str, refused: list[str]):
    def route(request_route: Route) -> None:
        if urlsplit(request_route.request.url).netloc == urlsplit(url).netloc:
            request_route.continue_()
        else:
            refused.append(request_route.request.url)
            request_route.abort()

    return route


def record() -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("error: the demo needs Chromium (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="task_api-demo-") as scratch:
        workdir = Path(scratch)
        use_system_ffmpeg(workdir / "playwright")
        for stale in [VIDEO, *HERE.glob("*.png")]:
            stale.unlink(missing_ok=True)
        refused: list[str] = []
        with embedded_server(workdir) as url, sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, slow_mo=120)
            context = browser.new_context(
                viewport=VIEWPORT, record_video_dir=workdir / "video", record_video_size=VIEWPORT
            )
            page = context.new_page()
            page.route("**/*", only_this_server(url, refused))
            try:
                walk_through(page, url)
            finally:
                context.close()
                page.video.save_as(VIDEO)
                browser.close()
    missing = [step for step in STEPS if not (HERE / f"{step}.png").stat().st_size]
    if missing or not VIDEO.stat().st_size or refused:
        raise SystemExit(f"error: missing screenshots {missing}, or an empty video, or requests elsewhere {refused}")
    print(f"recorded {VIDEO.relative_to(ROOT)} ({VIDEO.stat().st_size // 1024} KiB) and {len(STEPS)} screenshots")


if __name__ == "__main__":
    record()
