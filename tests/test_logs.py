"""Text logs: one line per record, whatever control characters a request carries."""

import logging
import sys

import httpx2

from task_api.logs import TextFormatter

# a newline, a carriage return, an escape sequence, NEL (C1) and LINE SEPARATOR, percent-encoded
FORGING_PATH = "/tasks%0aFORGED%20200%0d%1b%5b2J%c2%85%e2%80%a8"


def test_a_request_cannot_forge_a_text_log_line(start_server):
    server = start_server(LOG_FORMAT="text")
    httpx2.get(f"{server.url}{FORGING_PATH}")
    server.process.terminate()
    server.process.wait(timeout=30)

    lines = server.log_lines()
    forged = [line for line in lines if "FORGED" in line]
    assert len(forged) == 1
    assert " GET /tasks\\nFORGED 200\\r\\x1b[2J\\x85\\u2028 " in forged[0]
    assert not any(line.startswith("FORGED") for line in lines)


def test_a_traceback_keeps_its_lines_below_an_escaped_message():
    try:
        raise ValueError("first\nsecond")
    except ValueError:
        record = logging.LogRecord("task_api", logging.ERROR, __file__, 1, "path %s", ("/a\nb\x1b",), sys.exc_info())
    record.request_id = "-"

    first, *traceback = TextFormatter().format(record).splitlines()

    assert first.endswith(" path /a\\nb\\x1b")
    assert traceback[0] == "Traceback (most recent call last):"
    assert traceback[-2:] == ["ValueError: first", "second"]
