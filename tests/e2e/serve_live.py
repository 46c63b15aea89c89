"""`nmt serve` in the test process: its app, uvicorn server and batcher on 127.0.0.1, in threads."""

from __future__ import annotations

import threading
import time

from nmt.serve import bind
from nmt.serve.access import Access
from nmt.serve.api import Limits, build_app
from nmt.serve.connections import ConnectionLimits, NmtServer, uvicorn_config
from nmt.serve.models import Pair


class LiveServer:
    """`nmt serve`'s app, uvicorn config and batcher on a free port of 127.0.0.1, in threads."""

    def __init__(
        self,
        pairs: dict[tuple[str, str], Pair],
        *,
        access: Access | None = None,
        connections: ConnectionLimits | None = None,
    ) -> None:
        app, self.batcher = build_app(pairs, Limits(), access=access or Access())
        sock = bind("127.0.0.1", 0)
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn_config(app, connections or ConnectionLimits(), app.state.metrics)
        self.server = NmtServer(config)
        self.metrics = app.state.metrics
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        self.batcher.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.server.started

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
