"""Slowloris and idle connections against a real `consent-gateway serve`, over real sockets.

The review kept 2,300 slow and idle connections open for 30 s without one being closed, and
600 idle connections stopped all service under a 512-descriptor limit. Here each kind is
closed on time and everyone else keeps being served.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.helpers import ROOT
from tests.procs import free_port, stop

pytestmark = pytest.mark.slow

CLI = Path(sys.executable).parent / "consent-gateway"
SECRET_RECEIPT = "v1.eyJzZWNyZXQiOiJ0ZXN0In0.c2lnbmF0dXJlLXNlY3JldA"


class Server:
    def __init__(self, port: int, process: subprocess.Popen[bytes], log: Path) -> None:
        self.port = port
        self.process = process
        self.log = log

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return sock

    def get(self, path: str = "/healthz", sock: socket.socket | None = None) -> bytes:
        """One request; the whole response (the server closes or sends Content-Length)."""
        own = sock is None
        conn = sock or self.connect()
        try:
            conn.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            return _read_response(conn)
        finally:
            if own:
                conn.close()


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def _start(tmp: Path, nofile: int | None = None, **env: str) -> Server:
    port = free_port()
    log = tmp / f"serve-{port}.log"
    environ = {
        **os.environ,
        "GATEWAY_PORT": str(port),
        "GATEWAY_DATA_DIR": str(tmp / f"data-{port}"),
        "GATEWAY_RELOAD": "false",
        "GATEWAY_DURABILITY": "process",
        **env,
    }

    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(CLI), "serve"], cwd=ROOT, env=environ, stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=limit,
        )  # fmt: skip
    server = Server(port, process, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if server.get().startswith(b"HTTP/1.1 200"):
                return server
        except OSError:
            time.sleep(0.2)
    stop(process)
    raise AssertionError(f"serve did not start: {log.read_text()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("slow")
    running = _start(
        tmp,
        GATEWAY_HEADER_TIMEOUT="1",
        GATEWAY_BODY_TIMEOUT="1",
        GATEWAY_KEEPALIVE_TIMEOUT="1",
        GATEWAY_MAX_CONNECTIONS="40",
        # The access log is off by default; the receipts-in-logs test needs its error lines.
        GATEWAY_ACCESS_LOG="errors",
    )
    yield running
    stop(running.process)


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """(closed by the server within `seconds`, whatever it sent before closing)."""
    sock.settimeout(seconds)
    received = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return True, received
            received += chunk
    except TimeoutError:
        return False, received
    except ConnectionResetError:
        return True, received


def test_idle_connection_is_closed_after_the_header_timeout(server: Server) -> None:
    with server.connect() as sock:
        start = time.monotonic()
        closed, sent = _closed_within(sock, 5)
        assert closed and sent == b""  # a connection that said nothing gets nothing
        assert 0.8 < time.monotonic() - start < 3
        assert server.get().startswith(b"HTTP/1.1 200")


def test_slow_header_connection_gets_408_and_is_closed(server: Server) -> None:
    """Slowloris: a request head sent a few bytes at a time never completes."""
    with server.connect() as sock:
        start = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n")
        for _ in range(3):
            time.sleep(0.3)
            sock.sendall(b"X-a: b\r\n")  # data keeps coming: the head timeout is not reset
        closed, sent = _closed_within(sock, 5)
        assert closed and time.monotonic() - start < 3
        head, _, body = sent.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408")
        assert orjson.loads(body)["error"] == "request_timeout"


def test_slow_body_connection_is_closed(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(
            b"POST /v1/sites/demo/consents HTTP/1.1\r\nHost: a\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: 500\r\n\r\n{"
        )
        start = time.monotonic()
        closed, _ = _closed_within(sock, 5)
        assert closed and time.monotonic() - start < 3


def test_kept_alive_connection_is_closed_when_idle(server: Server) -> None:
    with server.connect() as sock:
        assert server.get(sock=sock).startswith(b"HTTP/1.1 200")
        assert server.get(sock=sock).startswith(b"HTTP/1.1 200")  # kept alive
        start = time.monotonic()
        closed, _ = _closed_within(sock, 5)
        assert closed and time.monotonic() - start < 3


def test_idle_connections_past_the_cap_do_not_lock_others_out(server: Server) -> None:
    """The review's lock-out: idle sockets holding every slot. Past the cap, the connection
    that has waited longest is closed to make room, so a new visitor is served."""
    idle = [server.connect() for _ in range(120)]
    try:
        time.sleep(0.2)
        start = time.monotonic()
        for _ in range(5):
            assert server.get("/v1/sites/demo/config").startswith(b"HTTP/1.1 200")
        assert time.monotonic() - start < 2  # served at once, not after the head timeout
        open_ = 0
        for sock in idle:
            sock.setblocking(False)
            try:
                open_ += (sock.recv(1) == b"" and 0) or 0
            except BlockingIOError:
                open_ += 1
            except OSError:
                pass
        assert open_ <= 40
    finally:
        for sock in idle:
            sock.close()


def test_multi_megabyte_head_is_cut_off_before_the_parser_buffers_it(server: Server) -> None:
    """Memory threat: httptools accepted an 8 MB header (and 400 x 4 MB pinned 1.6 GB)."""
    with server.connect() as sock:
        sock.sendall(b"GET /v1/sites/demo/config HTTP/1.1\r\nHost: a\r\nIf-None-Match: ")
        try:
            for _ in range(64):  # 4 MB in 64 KB pieces; the server stops reading early
                sock.sendall(b"x" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        closed, sent = _closed_within(sock, 5)
    assert closed
    assert sent.startswith(b"HTTP/1.1 431") or sent == b""  # a reset may eat the answer
    assert server.get().startswith(b"HTTP/1.1 200")


def test_unsupported_transfer_coding_over_the_wire(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(
            b"POST /v1/sites/demo/consents HTTP/1.1\r\nHost: a\r\n"
            b"Content-Type: application/json\r\n"
            b"Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )
        response = _read_response(sock)
        assert response.startswith(b"HTTP/1.1 400")
        assert b"unsupported_transfer_coding" in response


SUBJECT = "0" * 32  # a well-formed (derived-shape) subject id


def test_access_log_never_holds_a_receipt(server: Server) -> None:
    """Receipts-in-logs threat: the access log wrote `?receipt=v1.…` (13 in one review)."""
    path = f"/v1/sites/demo/subjects/{SUBJECT}/consents?receipt={SECRET_RECEIPT}&lang=de"
    assert server.get(path).startswith(b"HTTP/1.1 403")
    deadline = time.monotonic() + 5
    while f"/subjects/{SUBJECT}/consents".encode() not in server.log.read_bytes():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    log = server.log.read_text()
    assert SECRET_RECEIPT not in log and "c2lnbmF0dXJl" not in log
    assert "receipt=…&lang=de" in log


def test_idle_flood_under_a_low_descriptor_limit_keeps_service(tmp_path: Path) -> None:
    """The review's outage: 600 idle connections against a 512-descriptor process stopped all
    service. The default cap sits below the limit, so the process never runs out."""
    running = _start(tmp_path, nofile=512)
    idle: list[socket.socket] = []
    try:
        for _ in range(600):
            idle.append(running.connect())
        time.sleep(0.5)
        for _ in range(10):
            assert running.get("/v1/sites/demo/config").startswith(b"HTTP/1.1 200")
        assert running.process.poll() is None
        fds = len(os.listdir(f"/proc/{running.process.pid}/fd"))
        assert fds < 512
    finally:
        for sock in idle:
            sock.close()
        stop(running.process)
    assert "Too many open files" not in running.log.read_text()


# One write per response (gateway/web/coalesce.py): the held head must never be held too long.


def test_head_request_without_body_is_answered_and_the_connection_kept(server: Server) -> None:
    """A HEAD answer has no body write to carry the held head: it leaves when the response
    completes, and the kept-alive connection serves the next request."""
    with server.connect() as sock:
        sock.sendall(b"HEAD /v1/sites/demo/config HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.settimeout(2)
        head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")
        assert server.get(sock=sock).startswith(b"HTTP/1.1 200")


def test_not_modified_answer_arrives_at_once(server: Server) -> None:
    first = server.get("/v1/sites/demo/config")
    etag = next(
        line.split(b":", 1)[1].strip()
        for line in first.split(b"\r\n")
        if line.lower().startswith(b"etag:")
    )
    with server.connect() as sock:
        sock.settimeout(2)
        sock.sendall(
            b"GET /v1/sites/demo/config HTTP/1.1\r\nHost: 127.0.0.1\r\nIf-None-Match: "
            + etag
            + b"\r\n\r\n"
        )
        assert _read_response(sock).startswith(b"HTTP/1.1 304")


def test_expect_continue_is_sent_before_the_body_is_awaited(server: Server) -> None:
    """An interim `100 Continue` is never held back: the client waits for it before sending
    its body, so holding it would stall the request until the body timeout."""
    body = b'{"not": "a consent"}'
    with server.connect() as sock:
        sock.settimeout(0.9)  # under the 1 s body timeout of this server
        sock.sendall(
            b"POST /v1/sites/demo/consents HTTP/1.1\r\nHost: a\r\n"
            b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        answer = _read_response(sock)
    assert answer.startswith(b"HTTP/1.1 400") and b'"error"' in answer


def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    with server.connect() as sock:
        sock.settimeout(2)
        request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        sock.sendall(request * 3)
        received = b""
        while received.count(b"HTTP/1.1 ") < 3 or not received.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
    answers = received.split(b"HTTP/1.1 ")[1:]
    assert len(answers) == 3 and all(a.startswith(b"200 OK\r\n") for a in answers)
