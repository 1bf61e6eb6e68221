"""A request's header section (request line and headers) is bounded: one over
MAX_HEADER_BYTES is refused before the app runs, within a second, whatever its size, while
other clients keep being served. Raw sockets, so that sizes are exact to the byte."""

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

import httpx2

from task_api.worker import MAX_HEADER_BYTES
from tests.conftest import Server

BLANK_LINE = b"\r\n\r\n"


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each write its own segment
    return sock


def get(size: int) -> bytes:
    """A GET /health whose header section is exactly size bytes."""
    start = b"GET /health HTTP/1.1\r\nHost: test\r\nX-Pad: "
    return start + b"a" * (size - len(start) - len(BLANK_LINE)) + BLANK_LINE


def read_response(stream: BinaryIO) -> tuple[int, dict[str, str], bytes]:
    status = int(stream.readline().split()[1])
    headers = {}
    while (line := stream.readline()) not in {b"\r\n", b""}:
        name, value = line.decode().split(":", 1)
        headers[name.lower()] = value.strip()
    return status, headers, stream.read(int(headers["content-length"]))


def send_oversized(server: Server, size: int) -> tuple[float, bytes]:
    """Send a GET with a header section of size bytes as fast as the server takes it; return
    how long until it answered or closed the connection, and its answer."""
    request = get(size)
    with connect(server) as sock:
        started = time.monotonic()
        try:
            for at in range(0, size, 64 * 1024):
                sock.sendall(request[at : at + 64 * 1024])
            answer = sock.recv(64 * 1024)
        except (BrokenPipeError, ConnectionResetError):
            answer = b""
        return time.monotonic() - started, answer


def test_megabytes_of_headers_are_refused_at_once_while_others_are_served(start_server):
    server = start_server()
    health_waits = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        attacks = [pool.submit(send_oversized, server, 8 * 1024 * 1024) for _ in range(12)]
        while not all(attack.done() for attack in attacks):
            started = time.monotonic()
            assert httpx2.get(f"{server.url}/health", timeout=30).status_code == 200
            health_waits.append(time.monotonic() - started)

    for attack in attacks:
        seconds, answer = attack.result()
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:100]
        assert seconds < 1
    assert health_waits
    assert max(health_waits) < 0.5


def test_a_header_section_is_served_up_to_the_limit_and_refused_a_byte_over(start_server):
    server = start_server()
    answers = []
    for size in (60 * 1024, MAX_HEADER_BYTES, MAX_HEADER_BYTES + 1):
        with connect(server) as sock, sock.makefile("rb") as stream:
            sock.sendall(get(size))
            answers.append(read_response(stream))

    assert [status for status, _, _ in answers] == [200, 200, 431]
    _, headers, body = answers[2]
    assert headers["connection"] == "close"
    assert headers["content-type"] == "application/json"
    assert headers["x-request-id"]
    assert json.loads(body) == {"detail": f"Request header section is over {MAX_HEADER_BYTES} bytes"}


def test_a_request_the_parser_cannot_read_gets_a_json_400_with_a_request_id(start_server):
    server = start_server()
    with connect(server) as sock, sock.makefile("rb") as stream:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\nX-Bad: \x1b[2J\r\n\r\n")
        status, headers, body = read_response(stream)

    assert status == 400
    assert headers["content-type"] == "application/json"
    assert headers["x-request-id"]
    assert isinstance(json.loads(body)["detail"], str)


def test_a_large_body_is_not_counted_as_headers(start_server):
    server = start_server()
    body = b"[" + b"1," * 250_000 + b"1]"
    request = b"POST /tasks HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
    request += b"Content-Length: %d\r\n\r\n" % len(body) + body
    cut = request.index(BLANK_LINE) + 3  # so that the blank line ends in the read that brings the body
    statuses = []
    for writes in ([request], [request[:cut], request[cut:]]):
        with connect(server) as sock, sock.makefile("rb") as stream:
            for write in writes:
                sock.sendall(write)
                time.sleep(0.2)
            statuses.append(read_response(stream)[0])

    assert statuses == [401, 401]  # the app ran: the requests had no token


def test_only_the_oversized_request_of_a_keep_alive_connection_is_refused(start_server):
    server = start_server()
    with connect(server) as sock, sock.makefile("rb") as stream:
        for _ in range(4):
            sock.sendall(get(30 * 1024))
            assert read_response(stream)[0] == 200
        sock.sendall(get(MAX_HEADER_BYTES + 1))
        assert read_response(stream)[0] == 431
        assert stream.read() == b""


def test_pipelined_requests_are_answered_before_the_oversized_one_is_refused(start_server):
    server = start_server()
    with connect(server) as sock, sock.makefile("rb") as stream:
        sock.sendall(get(30 * 1024) * 4 + get(MAX_HEADER_BYTES + 1))
        statuses = [read_response(stream)[0] for _ in range(5)]
        assert stream.read() == b""

    assert statuses == [200, 200, 200, 200, 431]
