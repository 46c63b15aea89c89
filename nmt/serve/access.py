"""Who may translate, and how often: API keys from a file and a per-minute request limit.

With keys (`--api-keys-file`), a `POST /translate` must carry one of them as `api_key` (JSON,
form or query string, as LibreTranslate reads it): none is LibreTranslate's 400 "Please
contact the server operator to get an API key", an unknown one its 403 "Invalid API key".
`GET /metrics` takes the key as `Authorization: Bearer KEY` (Prometheus' `authorization`
setting) or `?api_key=`; `/languages` and `/health` stay open. The limit (`--req-limit`)
counts `POST /translate` requests in a moving window of one minute per key, or per client
address without keys, and answers LibreTranslate's 429 "Slowdown: N per 1 minute". Keys are
compared, never logged, and counted under no label.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nmt.errors import NmtError

WINDOW_S = 60.0


def read_api_keys(path: Path) -> frozenset[str]:
    """The keys in `path`: one a line; blank lines and `#` comments (whole lines, or after a key and
    a space) are skipped. An unreadable file or one without keys is an error at start-up."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise NmtError(f"{path}: cannot read the API keys file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise NmtError(f"{path}: the API keys file is not UTF-8 (byte {exc.start})") from None
    keys = set()
    for line in text.splitlines():
        key = line.split(" #", 1)[0].split("\t#", 1)[0].strip()
        if key and not key.startswith("#"):
            keys.add(key)
    if not keys:
        raise NmtError(
            f"{path}: no API keys in the file",
            hint="write one key per line (# starts a comment), or drop --api-keys-file",
        )
    return frozenset(keys)


@dataclass(frozen=True)
class Access:
    """The keys a request must carry (None: no keys) and the requests per minute each may send (-1: any)."""

    api_keys: frozenset[str] | None = None
    req_limit: int = -1

    def check_key(self, key: object) -> tuple[int, str] | None:
        """LibreTranslate's answer to a request carrying `key` (None when it may go on)."""
        if self.api_keys is None:
            return None
        if key is None or key == "":
            return 400, "Please contact the server operator to get an API key"
        if not isinstance(key, str) or key not in self.api_keys:
            return 403, "Invalid API key"
        return None


class RateLimiter:
    """At most `limit` hits in any `window_s` seconds per identity (a moving window, as LibreTranslate's).

    Called from the event loop only. Identities whose last hit left the window are forgotten
    (looked for once a window), so a stream of one-off client addresses does not pile up.
    """

    def __init__(self, limit: int, *, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self.windows: dict[str, deque[float]] = {}
        self._swept_at = clock()

    def hit(self, identity: str) -> float | None:
        """Record a hit and return None, or return the seconds until one is allowed (the hit is not recorded)."""
        now = self.clock()
        if now - self._swept_at >= self.window_s:
            self.windows = {k: w for k, w in self.windows.items() if w and w[-1] > now - self.window_s}
            self._swept_at = now
        window = self.windows.setdefault(identity, deque())
        while window and window[0] <= now - self.window_s:
            window.popleft()
        if len(window) >= self.limit:
            return window[0] + self.window_s - now
        window.append(now)
        return None
