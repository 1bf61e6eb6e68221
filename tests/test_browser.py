"""Swagger UI in a real headless Chromium, with every request off this machine refused."""

import shutil
from urllib.parse import urlsplit

import pytest

from tests.conftest import PASSWORD
from tests.factories import TaskFactory, UserFactory

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium)")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser_page():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page()
        finally:
            browser.close()


def test_swagger_ui_authorizes_and_lists_tasks_offline(start_server, browser_page, db):
    user = UserFactory()
    TaskFactory(owner=user, title="Visible in Swagger")
    server = start_server()
    page = browser_page
    elsewhere: list[str] = []

    def only_this_server(route):
        if urlsplit(route.request.url).netloc == urlsplit(server.url).netloc:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_server)
    page.goto(f"{server.url}/docs")
    page.get_by_role("button", name="Authorize").first.click()
    page.locator("#oauth_username").fill(user.email)
    page.locator("#oauth_password").fill(PASSWORD)
    page.locator(".auth-btn-wrapper .authorize").click()
    page.locator(".auth-btn-wrapper button", has_text="Logout").wait_for()
    page.locator(".auth-btn-wrapper .btn-done").click()

    operation = page.locator("#operations-tasks-list_tasks_tasks_get")
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.get_by_role("button", name="Execute").click()
    status = operation.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for()

    assert status.inner_text().strip() == "200"
    assert "Visible in Swagger" in operation.locator(".live-responses-table .microlight").first.inner_text()
    assert elsewhere == []
