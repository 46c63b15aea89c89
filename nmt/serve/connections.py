"""HTTP connections for uvicorn: a cap on open connections and a deadline for each request head.

uvicorn (0.54) lets a connection that never completes a request head live forever: an idle
socket, or headers trickled a byte at a time, each hold a file descriptor until the
process runs out of them, and then every accept fails (and is logged). `GuardedH11` is
uvicorn's h11 protocol with two additions:

- the cap: a connection over `max_connections` is answered 503 at once and closed, so the
  server keeps descriptors to spare. asyncio accepts up to the listen backlog of waiting
  connections at a time before any of them is refused, so the default cap and backlog are
  sized together to fit the open-file limit (`fit_open_files`); should accept() still run
  out of descriptors, that is one log line a minute (`NmtServer`), not a traceback a try;
- the head deadline: from its opening, or from its previous answer, a connection has
  `head_timeout_s` to send a whole request head; then it is closed (with a 408 if it had
  started one). The body has its own deadline in the app (`Limits.body_timeout_s`).

Client addresses are the socket peer's; `forwarded_allow_ips` names proxies whose
X-Forwarded-For uvicorn then believes (uvicorn's own default trusts 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from nmt.console import info
from nmt.serve.prometheus import Metrics

MAX_CONNECTIONS = 1000  # the default cap, when the open-file limit allows it
MAX_BACKLOG = 2048  # uvicorn's listen backlog, when the open-file limit allows it
SPARE_FILES = 16  # descriptors kept free for the event loop, the log, a model file or two
ACCEPT_BURSTS = 4  # backlogs of accepted sockets that may be open before the refused ones are closed


@dataclass(frozen=True)
class ConnectionLimits:
    """What `nmt serve` allows a connection (the `--max-connections`, `--read-timeout`, ... options)."""

    max_connections: int = MAX_CONNECTIONS  # open connections; more are answered 503 and closed
    backlog: int = MAX_BACKLOG  # connections the kernel queues for accept(), and asyncio accepts at once
    head_timeout_s: float = 30.0  # seconds to send a request head (from connecting or the last answer)
    shutdown_timeout_s: float = 20.0  # seconds a graceful stop waits for requests in flight
    forwarded_allow_ips: str | None = None  # proxies trusted for X-Forwarded-For (comma-separated, or *)


def fit_open_files(max_connections: int | None) -> tuple[int, int]:
    """The connection cap (`max_connections`, or by default `MAX_CONNECTIONS` or fewer) and a listen
    backlog that fit, with `SPARE_FILES`, in what the open-file limit leaves after the files open now."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections or MAX_CONNECTIONS, MAX_BACKLOG
    try:
        open_now = len(os.listdir("/proc/self/fd"))
    except OSError:  # no /proc (macOS): assume a few dozen
        open_now = 32
    room = soft - open_now - SPARE_FILES
    backlog = max(1, min(MAX_BACKLOG, room // (4 * ACCEPT_BURSTS)))
    if max_connections is None:
        max_connections = max(1, min(MAX_CONNECTIONS, room - ACCEPT_BURSTS * backlog))
    return max_connections, backlog


def _raw_response(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    ).encode() + body


def guarded_protocol(limits: ConnectionLimits, metrics: Metrics) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the cap and the head deadline of `limits`, counted in `metrics`."""
    refused = _raw_response(503, "Service Unavailable", f"Slowdown: more than {limits.max_connections} connections")
    too_slow = _raw_response(
        408, "Request Timeout", f"Request timeout: no request head within {limits.head_timeout_s:g} s"
    )

    class GuardedH11(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _started_head = False  # bytes of a request head have arrived since the deadline was armed

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                metrics.connection(refused=True)
                transport.write(refused)
                transport.close()
                return
            self._arm()

        def _arm(self) -> None:
            """Start the head deadline for the request after the current one (or the first)."""
            if self._deadline is not None:
                self._deadline.cancel()
            self._started_head = False
            armed_for = self.cycle  # a new request replaces self.cycle; the deadline then has no effect
            self._deadline = self.loop.call_later(limits.head_timeout_s, self._expire, armed_for)

        def _expire(self, armed_for: Any) -> None:
            self._deadline = None
            if self.cycle is not armed_for or self.transport.is_closing():
                return  # a request head arrived in time (its body has the app's deadline), or closed already
            metrics.connection(idle_closed=True)
            if self._started_head:
                self.transport.write(too_slow)
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            self._started_head = True
            super().data_received(data)

        def on_response_complete(self) -> None:
            if not self.transport.is_closing():
                self._arm()
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

    return GuardedH11


class NmtServer(uvicorn.Server):
    """uvicorn's server, with accept()'s running out of descriptors logged once a minute."""

    last_accept_error = -float("inf")

    async def startup(self, sockets: list[Any] | None = None) -> None:
        loop = asyncio.get_running_loop()

        def quiet(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            if context.get("message") != "socket.accept() out of system resource":
                loop.default_exception_handler(context)
            elif loop.time() - self.last_accept_error >= 60:
                self.last_accept_error = loop.time()
                info(
                    f"cannot accept connections: {context.get('exception')}; lower --max-connections or raise ulimit -n"
                )

        loop.set_exception_handler(quiet)
        await super().startup(sockets)


def uvicorn_config(app: Any, limits: ConnectionLimits, metrics: Metrics) -> uvicorn.Config:
    """uvicorn's settings for `nmt serve`: the guarded protocol, the backlog, the shutdown timeout, proxies."""
    return uvicorn.Config(
        app,
        http=guarded_protocol(limits, metrics),
        backlog=limits.backlog,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=limits.shutdown_timeout_s,
        proxy_headers=limits.forwarded_allow_ips is not None,
        forwarded_allow_ips=limits.forwarded_allow_ips or "",
    )
