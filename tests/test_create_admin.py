"""`python -m task_api create-admin EMAIL`, run as an operator runs it: in its own process."""

import os
import pty
import subprocess
import sys
import time
from select import select as wait_readable

import pytest
from sqlalchemy import func, select

from task_api.models import User
from tests.conftest import PASSWORD, ROOT, bearer, cli_environment, login, run_cli
from tests.factories import AdminFactory, UserFactory

# Makes the terminal on stdin the controlling one, so that getpass reads /dev/tty as at a console.
AT_A_TERMINAL = (
    "import fcntl, runpy, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); sys.argv[0] = 'task_api';"
    " runpy.run_module('task_api', run_name='__main__', alter_sys=True)"
)


def run_create_admin(database_url, email, password):
    return run_cli(database_url, "create-admin", email, **({} if password is None else {"ADMIN_PASSWORD": password}))


def run_create_admin_at_a_terminal(database_url, email, *answers):
    """Run create-admin at a terminal, typing each answer at a prompt in turn; its exit code,
    what the terminal showed, and how many prompts it asked."""
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-c", AT_A_TERMINAL, "create-admin", email],
        env=cli_environment(database_url),
        cwd=ROOT,
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        start_new_session=True,
    )
    os.close(secondary)
    shown, unanswered, prompts = "", list(answers), 0
    deadline = time.monotonic() + 60
    try:
        while wait_readable([primary], [], [], max(0.0, deadline - time.monotonic()))[0]:
            try:
                chunk = os.read(primary, 4096).decode()
            except OSError:  # EIO: the command has exited, closing the terminal
                break
            shown += chunk
            if shown.endswith(": "):
                prompts += 1
                assert unanswered, f"asked more than {len(answers)} time(s): {shown!r}"
                os.write(primary, f"{unanswered.pop(0)}\n".encode())
        else:
            raise AssertionError(f"create-admin stopped answering: {shown!r}")
        return process.wait(timeout=10), shown, prompts
    finally:
        os.close(primary)
        if process.poll() is None:
            process.kill()
            process.wait()


def stored(db, email):
    db.expire_all()
    return db.scalar(select(User).where(User.email == email))


def count_users(db):
    db.expire_all()
    return db.scalar(select(func.count()).select_from(User))


def assert_refused(result):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error:")


def test_cli_creates_admin(client, db, database_url):
    result = run_create_admin(database_url, "Root@Example.com", "root password 123")

    assert result.returncode == 0, result.stderr
    assert "root@example.com" in result.stdout
    assert stored(db, "root@example.com").is_admin is True
    tokens = login(client, "root@example.com", "root password 123")
    assert client.get("/users", headers=bearer(tokens["access_token"])).status_code == 200


def test_cli_promotes_an_existing_account_given_its_own_password(client, db, database_url):
    user = UserFactory(email="promote@example.com")

    result = run_create_admin(database_url, "PROMOTE@example.com", PASSWORD)

    assert result.returncode == 0, result.stderr
    assert "promote@example.com is now an admin" in result.stdout
    assert stored(db, user.email).is_admin is True
    assert count_users(db) == 1
    assert login(client, user.email)["token_type"] == "bearer"


def test_cli_never_promotes_an_account_whose_password_it_was_not_given(db, database_url):
    user = UserFactory(email="squatter@example.com")

    result = run_create_admin(database_url, "squatter@example.com", "the operator's password")

    assert_refused(result)
    assert "squatter@example.com is already registered and the password given is not its own" in result.stderr
    account = stored(db, user.email)
    assert account.is_admin is False
    assert account.password_hash == user.password_hash
    assert count_users(db) == 1


def test_cli_without_a_password_and_no_terminal_leaves_an_existing_account_alone(db, database_url):
    user = UserFactory(email="squatter@example.com")

    result = run_create_admin(database_url, "squatter@example.com", None)

    assert_refused(result)
    assert "ADMIN_PASSWORD" in result.stderr
    assert stored(db, user.email).is_admin is False


def test_cli_says_so_when_the_account_already_is_an_admin(db, database_url):
    admin = AdminFactory(email="boss@example.com")

    result = run_create_admin(database_url, "boss@example.com", PASSWORD)

    assert result.returncode == 0, result.stderr
    assert "boss@example.com is already an admin" in result.stdout
    assert stored(db, admin.email).is_admin is True


@pytest.mark.parametrize(
    ("email", "password", "mentions"),
    [
        pytest.param("not-an-email", "root password 123", "email", id="bad-email"),
        pytest.param("root@example.com", "short", "password", id="short-password"),
        pytest.param("root@example.com", "a" * 73, "password", id="long-password"),
    ],
)
def test_cli_refuses_bad_input(db, database_url, email, password, mentions):
    result = run_create_admin(database_url, email, password)

    assert_refused(result)
    assert mentions in result.stderr.lower()
    assert count_users(db) == 0


def test_cli_without_password_and_no_terminal(db, database_url):
    result = run_create_admin(database_url, "root@example.com", None)

    assert_refused(result)
    assert count_users(db) == 0


def test_at_a_terminal_an_existing_account_is_asked_its_password_once_and_a_new_one_twice(client, db, database_url):
    user = UserFactory(email="promote@example.com")

    promoted = run_create_admin_at_a_terminal(database_url, "promote@example.com", PASSWORD)
    created = run_create_admin_at_a_terminal(database_url, "root@example.com", "root password 123", "root password 123")

    returncode, shown, prompts = promoted
    assert (returncode, prompts) == (0, 1), shown
    assert "promote@example.com is now an admin" in shown
    assert stored(db, user.email).is_admin is True
    returncode, shown, prompts = created
    assert (returncode, prompts) == (0, 2), shown
    assert "created admin root@example.com" in shown
    assert login(client, "root@example.com", "root password 123")["token_type"] == "bearer"
