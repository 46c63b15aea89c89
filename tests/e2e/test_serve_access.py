"""API keys and per-minute limits of `nmt serve`, spoken to by the real LibreTranslate clients.

The server runs in this process on 127.0.0.1 (`tests.e2e.serve_live`: uvicorn in a thread,
built by the same functions `nmt serve` uses), so each configuration starts in milliseconds.
libretranslatepy (urllib, urlencoded forms) and libretranslate-aio (httpx, forms) send
`api_key` themselves; raw requests go through httpx.
"""

from __future__ import annotations

import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
libretranslatepy = pytest.importorskip("libretranslatepy")
libretranslate_aio = pytest.importorskip("libretranslate_aio")
pytest.importorskip("uvicorn")

from nmt.serve.access import Access, read_api_keys  # noqa: E402
from nmt.serve.connections import ConnectionLimits  # noqa: E402
from nmt.serve.models import Pair, load_pairs  # noqa: E402
from tests.conftest import TinyCheckpoint  # noqa: E402
from tests.e2e.serve_live import LiveServer  # noqa: E402

pytestmark = pytest.mark.slow  # live servers and the real clients: `make test-fast` skips them

KEY_CLIENTS, KEY_LIMITED, KEY_OTHER = "k-clients-5b1f", "k-limited-77aa", "k-other-0c3e"


@pytest.fixture(scope="module")
def pairs(tiny_checkpoint: TinyCheckpoint) -> dict[tuple[str, str], Pair]:
    return load_pairs([tiny_checkpoint.path])


@pytest.fixture(scope="module")
def keyed(pairs: dict[tuple[str, str], Pair], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    path = tmp_path_factory.mktemp("keys") / "keys.txt"
    path.write_text(f"# clients\n{KEY_CLIENTS}\n{KEY_LIMITED}  # the limit test's\n\n{KEY_OTHER}\n")
    srv = LiveServer(pairs, access=Access(read_api_keys(path), req_limit=4))
    yield srv
    srv.stop()


def http_error(exc: urllib.error.HTTPError) -> tuple[int, dict]:
    import json

    return exc.code, json.loads(exc.read())


def test_keys_with_the_real_clients(keyed: LiveServer, capfd: pytest.CaptureFixture[str]) -> None:
    good = libretranslatepy.LibreTranslateAPI(keyed.url + "/", api_key=KEY_CLIENTS)
    assert isinstance(good.translate("3 4 5", source="src", target="tgt"), str)
    with pytest.raises(urllib.error.HTTPError) as exc:
        libretranslatepy.LibreTranslateAPI(keyed.url + "/", api_key="not-a-key").translate("3 4 5", "src", "tgt")
    assert http_error(exc.value) == (403, {"error": "Invalid API key"})
    with pytest.raises(urllib.error.HTTPError) as exc:
        libretranslatepy.LibreTranslateAPI(keyed.url + "/").translate("3 4 5", "src", "tgt")
    assert http_error(exc.value) == (400, {"error": "Please contact the server operator to get an API key"})
    assert libretranslatepy.LibreTranslateAPI(keyed.url + "/").languages()[0]["code"] == "src"  # open

    with libretranslate_aio.LibreTranslate(base_url=keyed.url, api_key=KEY_CLIENTS) as client:
        assert isinstance(client.translate(["3 4 5", "x y"], source="src", target="tgt").translated_text, list)
    with libretranslate_aio.LibreTranslate(base_url=keyed.url, api_key="not-a-key") as client:
        with pytest.raises(libretranslate_aio.exceptions.ForbiddenError, match="Invalid API key"):
            client.translate("3 4 5", source="src", target="tgt")
    with libretranslate_aio.LibreTranslate(base_url=keyed.url) as client:
        with pytest.raises(libretranslate_aio.exceptions.BadRequestError, match="contact the server operator"):
            client.translate("3 4 5", source="src", target="tgt")
        assert client.health() and [lang.code for lang in client.languages()] == ["src", "tgt"]  # open

    # JSON bodies and the query string carry the key too; /metrics wants one (Bearer, as Prometheus sends it)
    r = httpx.post(f"{keyed.url}/translate", json={"q": "x y", "source": "src", "target": "tgt", "api_key": KEY_OTHER})
    assert r.status_code == 200, r.text
    r = httpx.post(f"{keyed.url}/translate?api_key={KEY_OTHER}", json={"q": "x y", "source": "src", "target": "tgt"})
    assert r.status_code == 200, r.text
    assert httpx.get(f"{keyed.url}/metrics").status_code == 400
    assert httpx.get(f"{keyed.url}/metrics", headers={"authorization": "Bearer nope"}).status_code == 403
    metrics = httpx.get(f"{keyed.url}/metrics", headers={"authorization": f"Bearer {KEY_OTHER}"})
    assert metrics.status_code == 200
    assert 'nmt_serve_requests_total{path="/translate",code="403"} 2' in metrics.text
    logged = capfd.readouterr()
    for key in (KEY_CLIENTS, KEY_OTHER, "not-a-key"):
        assert key not in metrics.text and key not in logged.out + logged.err


def test_req_limit_counts_per_key(keyed: LiveServer) -> None:
    with libretranslate_aio.LibreTranslate(base_url=keyed.url, api_key=KEY_LIMITED) as client:
        for _ in range(4):
            client.translate("x y", source="src", target="tgt")
        with pytest.raises(libretranslate_aio.exceptions.RateLimitError, match="Slowdown: 4 per 1 minute"):
            client.translate("x y", source="src", target="tgt")
    r = httpx.post(
        f"{keyed.url}/translate", data={"q": "x y", "source": "src", "target": "tgt", "api_key": KEY_LIMITED}
    )
    assert r.status_code == 429 and 0 < int(r.headers["retry-after"]) <= 60
    other = libretranslatepy.LibreTranslateAPI(keyed.url + "/", api_key=KEY_OTHER)
    assert isinstance(other.translate("x y", source="src", target="tgt"), str)  # another key: its own minute
    assert httpx.get(f"{keyed.url}/languages").status_code == 200  # not limited


def test_req_limit_counts_per_socket_peer_unless_a_proxy_is_named(pairs: dict[tuple[str, str], Pair]) -> None:
    def codes(srv: LiveServer) -> list[int]:
        body = {"q": "x y", "source": "src", "target": "tgt"}
        return [
            httpx.post(f"{srv.url}/translate", json=body, headers={"x-forwarded-for": f"203.0.113.{i}"}).status_code
            for i in range(3)
        ]

    direct = LiveServer(pairs, access=Access(req_limit=2))
    try:  # a client cannot buy a fresh limit by sending X-Forwarded-For
        assert codes(direct) == [200, 200, 429]
    finally:
        direct.stop()
    proxied = LiveServer(
        pairs, access=Access(req_limit=2), connections=ConnectionLimits(forwarded_allow_ips="127.0.0.1")
    )
    try:  # behind a named proxy, the address it forwards is the client
        assert codes(proxied) == [200, 200, 200]
    finally:
        proxied.stop()


def test_an_unreadable_keys_file_stops_the_start_up(tiny_checkpoint: TinyCheckpoint, tmp_path: Path) -> None:
    from tests.conftest import run_nmt  # (an empty file: test_serve_api's test of read_api_keys)

    missing = tmp_path / "keys.txt"
    r = run_nmt("serve", str(tiny_checkpoint.path), "--port", "0", "--api-keys-file", str(missing), timeout=120)
    out = " ".join((r.stdout + r.stderr).split())
    assert r.returncode == 2 and f"{missing}: cannot read the API keys file" in out and "Traceback" not in out, out
