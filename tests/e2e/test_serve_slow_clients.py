"""`nmt serve` against clients that are slow, idle or gone, over raw sockets on 127.0.0.1.

The servers are real `nmt serve` subprocesses (one under `ulimit -n 48`) with deadlines
of a second or so set by their flags, so each case takes seconds, not the defaults' minute;
the connection cap is tested on one in this process (`tests.e2e.serve_live`).
"""

from __future__ import annotations

import os
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from tests.conftest import TinyCheckpoint  # noqa: E402

pytestmark = pytest.mark.slow  # live servers and deadlines of seconds: `make test-fast` skips them

READ_TIMEOUT_S = 1.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`nmt serve` in a subprocess (under `ulimit -n` when asked), its output collected in a file."""

    def __init__(self, model: Path, log: Path, *args: str, nofile: int | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [sys.executable, "-m", "nmt", "serve", str(model), "--port", str(self.port), *args]
        if nofile is not None:
            cmd = ["bash", "-c", f"ulimit -n {nofile} && exec {shlex.join(cmd)}"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        with log.open("w") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self) -> Server:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        self.proc.kill()
        raise AssertionError("server did not start in 60 s")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def metric(self, line: str) -> float:
        text = httpx.get(f"{self.url}/metrics").text
        return next((float(x.split()[-1]) for x in text.splitlines() if x.startswith(line + " ")), 0.0)


def read_until_closed(
    sock: socket.socket, *, trickle: bytes = b"", every_s: float = 0.25, limit_s: float = 10
) -> tuple[bytes, float]:
    """What the server sends until it closes the connection, and after how many seconds; meanwhile
    one byte of `trickle` (over and over) whenever `every_s` passes without a word from the server."""
    start, data, pending = time.monotonic(), b"", trickle
    while time.monotonic() - start < limit_s:
        readable, _, _ = select.select([sock], [], [], every_s)
        if readable:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return data, time.monotonic() - start
            data += chunk
        elif pending:
            try:
                sock.sendall(pending[:1])
            except (BrokenPipeError, ConnectionResetError):
                pass
            pending = pending[1:] or trickle  # keep trickling for as long as the connection lives
    raise AssertionError(f"the server kept the connection open for {limit_s} s; received {data!r}")


def head(content_length: int) -> bytes:
    return (
        f"POST /translate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {content_length}\r\n\r\n"
    ).encode()


@pytest.fixture(scope="module")
def server(tiny_checkpoint: TinyCheckpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("slow") / "serve.log"
    srv = Server(tiny_checkpoint.path, log, "--read-timeout", str(READ_TIMEOUT_S), nofile=48).wait_ready()
    yield srv
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(30) == 0, srv.output()
    assert "Traceback" not in srv.output()


def test_an_idle_socket_is_closed_after_the_read_timeout(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        data, after_s = read_until_closed(sock)
    assert data == b"" and READ_TIMEOUT_S - 0.1 < after_s < READ_TIMEOUT_S + 3


def test_headers_trickled_are_cut_off_with_408(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /translate HTTP/1.1\r\n")
        data, after_s = read_until_closed(sock, trickle=b"x-slow: yes\r\n", every_s=0.05)
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert after_s < READ_TIMEOUT_S + 3


def test_a_body_trickled_gets_408_with_a_json_error(server: Server) -> None:
    before = server.metric('nmt_serve_requests_total{path="/translate",code="408"}')
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head(100) + b"{")
        data, after_s = read_until_closed(sock, trickle=b'"q": "a b c", ', every_s=0.2)
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert b'{"error":"Request timeout: the body took longer than' in data
    assert after_s < READ_TIMEOUT_S + 3
    assert server.metric('nmt_serve_requests_total{path="/translate",code="408"}') == before + 1


def test_a_client_that_leaves_mid_body_is_counted_as_499_without_a_traceback(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head(1000) + b'{"q": "a b')
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while server.metric('nmt_serve_requests_total{path="/translate",code="499"}') < 1:
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.05)
    assert "Traceback" not in server.output()


def test_idle_sockets_past_the_open_file_limit_leave_health_answering(server: Server) -> None:
    socks = []
    for _ in range(45):  # ulimit -n 48; connecting without waiting: the kernel queues what the server has not taken
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", server.port))
        socks.append(sock)
    try:
        time.sleep(0.3)
        r = httpx.get(f"{server.url}/health", timeout=10)  # refused (503) while full, never a hang
        assert r.status_code in (200, 503)
        time.sleep(READ_TIMEOUT_S + 0.5)  # the idle ones are closed
        assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
    finally:
        for sock in socks:
            sock.close()
    out = server.output()
    assert "accept" not in out and len(out) < 20_000, out[-2000:]


def test_connections_over_the_cap_are_refused_at_once(tiny_checkpoint: TinyCheckpoint) -> None:
    from nmt.serve.connections import ConnectionLimits
    from nmt.serve.models import load_pairs
    from tests.e2e.serve_live import LiveServer

    srv = LiveServer(load_pairs([tiny_checkpoint.path]), connections=ConnectionLimits(max_connections=2))
    socks = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(3)]
    try:
        time.sleep(0.3)
        answers = []
        for sock in socks:
            sock.setblocking(False)
            try:
                answers.append(sock.recv(4096))
            except BlockingIOError:
                answers.append(None)  # still open, nothing said
        assert answers[:2] == [None, None]
        assert answers[2] and answers[2].startswith(b"HTTP/1.1 503 "), answers
        assert srv.metrics.refused_connections == 1
    finally:
        for sock in socks:
            sock.close()
        srv.stop()


@pytest.fixture(scope="module")
def stoppable(tiny_checkpoint: TinyCheckpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    """Two servers started together (each test stops one): default flags, and a 1 s shutdown timeout."""
    tmp = tmp_path_factory.mktemp("stop")
    servers = {
        "default": Server(tiny_checkpoint.path, tmp / "default.log"),
        "short": Server(tiny_checkpoint.path, tmp / "short.log", "--shutdown-timeout", "1", "--read-timeout", "60"),
    }
    yield {name: srv.wait_ready() for name, srv in servers.items()}
    for srv in servers.values():
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()


def trickling_client(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(head(100) + b"{")  # and never the rest
    time.sleep(0.2)
    return sock


def test_a_second_signal_forces_the_exit(stoppable: dict[str, Server]) -> None:
    srv = stoppable["default"]
    with trickling_client(srv.port):
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert srv.proc.poll() is None  # waiting for the request in flight, as a graceful stop does
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        code = srv.proc.wait(10)
    assert time.monotonic() - t0 < 5
    assert code == 143, srv.output()
    assert "second signal" in srv.output() and "Traceback" not in srv.output()


def test_the_shutdown_timeout_bounds_a_graceful_stop(stoppable: dict[str, Server]) -> None:
    srv = stoppable["short"]
    with trickling_client(srv.port) as sock:
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        data, _ = read_until_closed(sock)
        code = srv.proc.wait(15)
    assert time.monotonic() - t0 < 5
    assert data.startswith(b"HTTP/1.1 503 ") and b"the server is stopping" in data, data
    assert code == 0, srv.output()
    out = " ".join(srv.output().split())
    assert "1 request in flight answered 503" in out and "Traceback" not in out
