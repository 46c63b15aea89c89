"""`nmt serve`: models behind LibreTranslate's HTTP API, with dynamic batching.

Layout: `models` loads the checkpoints/exports (one language pair each), `batcher` holds
the bounded queue and the decoder thread, `protocol` reads requests and holds the limits,
`access` the API keys and the per-minute limit, `api` the Starlette routes, `metrics` the
Prometheus counters, `connections` uvicorn's connection cap and deadlines; this module binds
the port and runs uvicorn. Starlette, uvicorn and python-multipart are the optional extra
`nmt[serve]`.

SIGTERM or Ctrl-C: the server stops accepting connections, answers every request already
received (queued ones included) for up to `--shutdown-timeout` seconds, answers what is
left 503, then exits 0. A second SIGTERM or Ctrl-C exits at once (128 + the signal).
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nmt.console import info
from nmt.errors import NmtError


def require_serve_extra() -> None:
    missing = []
    # python-multipart's module is python_multipart since 0.0.13 (multipart before; now deprecated)
    for name, modules in (("starlette", ["starlette"]), ("uvicorn", ["uvicorn"]),
                          ("python-multipart", ["python_multipart", "multipart"])):  # fmt: skip
        for module in modules:
            try:
                __import__(module)
                break
            except ImportError:
                continue
        else:
            missing.append(name)
    if missing:
        raise NmtError(
            f"nmt serve needs {', '.join(missing)}, which are not installed",
            hint="pip install 'nmt[serve]'",
        )


def bind(host: str, port: int) -> socket.socket:
    """A bound socket for uvicorn; a port in use is a one-paragraph error, not a traceback at start-up."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NmtError(f"cannot listen on {host}:{port}: unknown host ({exc.strerror})") from None
    family, _, proto, _, address = infos[0]
    # proto IPPROTO_TCP (not 0): asyncio then sets TCP_NODELAY on accepted connections; without it
    # a response written in two parts waited for the client's delayed ACK (~40 ms per request)
    sock = socket.socket(family, socket.SOCK_STREAM, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart may reuse a port in TIME_WAIT
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise NmtError(
            f"cannot listen on {host}:{port}: {exc.strerror}",
            hint="another process uses this port (an earlier nmt serve?): stop it or pick another with --port",
        ) from None
    return sock


class _Forced(BaseException):
    """Raised in the main thread by a second SIGTERM/SIGINT: stop without waiting."""

    def __init__(self, sig: int) -> None:
        self.sig = sig


def serve(
    models: Sequence[Path],
    *,
    host: str,
    port: int,
    overrides: Sequence[str] = (),
    char_limit: int,
    batch_limit: int,
    line_limit: int,
    max_queue: int,
    max_wait_ms: float,
    batch_tokens: int | None,
    api_keys_file: Path | None = None,
    req_limit: int = -1,
    forwarded_allow_ips: str | None = None,
    max_connections: int | None = None,
    read_timeout_s: float = 30.0,
    shutdown_timeout_s: float = 20.0,
) -> None:
    """Load `models`, bind `host:port` and serve until SIGTERM/SIGINT (a second one: at once)."""
    require_serve_extra()
    from nmt.serve.access import Access, read_api_keys

    if not models:
        raise NmtError("give at least one model (a checkpoint .pt or an `nmt export` directory)")
    access = Access(read_api_keys(api_keys_file) if api_keys_file is not None else None, req_limit)

    from nmt.serve.api import build_app  # torch, after the checks that need none
    from nmt.serve.connections import ConnectionLimits, NmtServer, fit_open_files, uvicorn_config
    from nmt.serve.models import load_pairs
    from nmt.serve.protocol import Limits

    pairs = load_pairs(models, overrides=overrides)
    budget = batch_tokens if batch_tokens is not None else max(pair.decode.batch_tokens for pair in pairs.values())
    limits = Limits(
        char_limit=char_limit, batch_limit=batch_limit, line_limit=line_limit, max_queue=max_queue,
        max_wait_ms=max_wait_ms, batch_tokens=budget, body_timeout_s=read_timeout_s,
    )  # fmt: skip
    sock = bind(host, port)
    cap, backlog = fit_open_files(max_connections)
    connections = ConnectionLimits(
        max_connections=cap,
        backlog=backlog,
        head_timeout_s=read_timeout_s,
        shutdown_timeout_s=shutdown_timeout_s,
        forwarded_allow_ips=forwarded_allow_ips,
    )
    app, batcher = build_app(pairs, limits, access=access)
    _announce(pairs, f"http://{host}:{port}", limits, access, cap)
    server = NmtServer(uvicorn_config(app, connections, app.state.metrics))
    _run(server, sock, batcher, shutdown_timeout_s=shutdown_timeout_s)
    if not server.started:
        raise NmtError(f"the HTTP server on {host}:{port} did not start (see the messages above)")
    cut = app.state.metrics.cut_at_shutdown
    info(
        f"stopped at the shutdown timeout ({shutdown_timeout_s:g} s): {cut} request{'s' * (cut != 1)} in flight "
        "answered 503"
        if cut
        else "stopped: every request received was answered"
    )


def _announce(pairs: dict[tuple[str, str], Any], url: str, limits: Any, access: Any, cap: int) -> None:
    """The start-up lines: each model with its engine, then where and how the server listens."""
    from nmt.decode.search import SearchEngine

    for pair in pairs.values():
        engine = "CTranslate2" if isinstance(pair.loaded.model, SearchEngine) else f"torch {pair.device.type}"
        info(f"{pair.source}->{pair.target}: {pair.path} ({engine}, beam {pair.decode.beam})")
    keys = f"{len(access.api_keys)} API keys" if access.api_keys else "no API keys"
    info(
        f"listening on {url} (LibreTranslate API: POST /translate, GET /languages; /health, /metrics); "
        f"batches of up to {limits.batch_tokens} source tokens, waiting up to {limits.max_wait_ms:g} ms; {keys}; "
        f"at most {cap} connections, {limits.body_timeout_s:g} s to send a request"
    )


def _run(server: Any, sock: socket.socket, batcher: Any, *, shutdown_timeout_s: float) -> None:
    """uvicorn in a thread, the decoder loop in this one, until SIGTERM/SIGINT (a second one: at once)."""
    http = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="nmt-serve-http", daemon=True)

    def stop(sig: int, frame: Any) -> None:
        if server.should_exit:  # the second signal: no more waiting
            server.force_exit = True
            raise _Forced(sig)
        server.should_exit = True  # stop accepting; uvicorn then waits for the requests in flight
        info(
            f"stopping: answering the requests received (up to {shutdown_timeout_s:g} s; "
            f"{signal.Signals(sig).name} again stops at once)"
        )

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        http.start()
        batcher.run(alive=http.is_alive)  # returns when the app's shutdown closes it (or uvicorn died)
        http.join()
    except _Forced as forced:
        name, unanswered = signal.Signals(forced.sig).name, len(server.server_state.tasks)
        raise NmtError(
            f"stopped at a second signal ({name}): {unanswered} requests in flight were not answered",
            exit_code=128 + forced.sig,
        ) from None
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
