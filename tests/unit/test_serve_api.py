"""The server's routes in process (httpx's ASGI transport, no socket): /languages, same-language
requests, bodies Python's json module cannot take, the catch-all, status counting, the line limit,
the API keys file and the per-minute limiter."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

from nmt.config import DecodeConfig  # noqa: E402
from nmt.serve.api import Limits, build_app  # noqa: E402
from nmt.serve.models import Pair  # noqa: E402


def fake_pair(source: str, target: str, loaded: object = None) -> Pair:
    """A pair with no model behind it: enough for routes that never decode."""
    return Pair(source, target, Path(f"{source}{target}.pt"), loaded, DecodeConfig(), torch.device("cpu"))  # type: ignore[arg-type]


class Client:
    """Synchronous requests to an ASGI app, in process (the app's errors are answers, not raised)."""

    def __init__(self, app: object) -> None:
        self.transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # type: ignore[arg-type]

    def request(self, method: str, url: str, **kwargs: object) -> httpx.Response:
        async def go() -> httpx.Response:
            async with httpx.AsyncClient(transport=self.transport, base_url="http://test") as client:
                return await client.request(method, url, **kwargs)  # type: ignore[arg-type]

        return asyncio.run(go())

    def get(self, url: str, **kwargs: object) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: object) -> httpx.Response:
        return self.request("POST", url, **kwargs)


def client_for(pairs: list[Pair], **limits: object) -> Client:
    app, _ = build_app({(p.source, p.target): p for p in pairs}, Limits(**limits))  # type: ignore[arg-type]
    return Client(app)


def metric(client: Client, path: str, code: int) -> float:
    text = client.get("/metrics").text
    line = f'nmt_serve_requests_total{{path="{path}",code="{code}"}} '
    return next((float(x.split()[-1]) for x in text.splitlines() if x.startswith(line)), 0.0)


def test_languages_lists_every_language_a_model_reads_or_writes_with_what_it_can_become() -> None:
    client = client_for([fake_pair("en", "de")])
    assert client.get("/languages").json() == [
        {"code": "de", "name": "German", "targets": ["de"]},
        {"code": "en", "name": "English", "targets": ["de", "en"]},
    ]
    client = client_for([fake_pair("en", "de"), fake_pair("de", "fr")])
    langs = {lang["code"]: lang["targets"] for lang in client.get("/languages").json()}
    assert langs == {"de": ["de", "fr"], "en": ["de", "en", "fr"], "fr": ["fr"]}  # en->fr through de


def test_a_pivot_is_english_when_it_can_be_and_a_pair_with_no_route_is_a_400() -> None:
    from nmt.serve.models import route

    pairs = {
        (p.source, p.target): p
        for p in (fake_pair(*d.split("-")) for d in ["de-cs", "cs-fr", "de-en", "en-fr", "fr-it"])
    }
    assert [(p.source, p.target) for p in route(pairs, "de", "fr") or ()] == [("de", "en"), ("en", "fr")]
    del pairs["de", "en"]
    assert [(p.source, p.target) for p in route(pairs, "de", "fr") or ()] == [("de", "cs"), ("cs", "fr")]
    assert route(pairs, "de", "it") is None  # two pivots would be needed
    r = client_for(list(pairs.values())).post("/translate", json={"q": "x", "source": "de", "target": "it"})
    assert r.status_code == 400 and "no model for de->it, directly or through one pivot language" in r.json()["error"]


@pytest.mark.parametrize("q", ["Hallo Welt\n\nZweite Zeile", ["eins", "zwei\ndrei"]])
def test_a_same_language_request_is_answered_with_its_text_as_libretranslate_does(q: str | list[str]) -> None:
    client = client_for([fake_pair("en", "de")])  # no decoder runs: nothing may be queued
    r = client.post("/translate", json={"q": q, "source": "de", "target": "de", "alternatives": 2})
    assert r.status_code == 200, r.text
    assert r.json() == {"translatedText": q, "alternatives": [[] for _ in q] if isinstance(q, list) else []}
    r = client.post("/translate", json={"q": "x", "source": "fr", "target": "fr"})
    assert r.status_code == 400  # a language no model reads or writes


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ('{"q": "\\ud800", "source": "src", "target": "tgt"}', "surrogate"),
        ('{"q": "a", "source": "\\udfff", "target": "tgt"}', "surrogate"),
        ('{"q": ' + "[" * 100_000 + "]" * 100_000 + ', "source": "src", "target": "tgt"}', "nested"),
        ('{"q": "a", "source": "src", "target": "tgt", "alternatives": ' + "9" * 4301 + "}", "digits"),
        ('{"q": "a", "source": "src", "target": "tgt", "x": ' + "1" * 5000 + "}", "digits"),
    ],
    ids=["lone-surrogate-q", "lone-surrogate-source", "deep-nesting", "4301-digits", "5000-digits-unknown-field"],
)
def test_json_python_cannot_take_is_a_400_with_a_json_error_and_counted(body: str, says: str) -> None:
    client = client_for([fake_pair("src", "tgt")])
    r = client.post("/translate", content=body.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert says in r.json()["error"]
    assert metric(client, "/translate", 400) == 1


class Broken:
    """A loaded model whose vocabulary fails: an error no request should be able to cause."""

    class model:  # noqa: N801
        max_len = 64

    @property
    def vocab(self) -> object:
        raise RuntimeError("vocab\nexploded")


def test_an_unexpected_error_is_a_json_500_logged_in_one_line_and_counted(capfd: pytest.CaptureFixture[str]) -> None:
    client = client_for([fake_pair("src", "tgt", loaded=Broken())])
    r = client.post("/translate", json={"q": "a", "source": "src", "target": "tgt"})
    assert r.status_code == 500
    assert r.json() == {"error": "internal error"}
    assert metric(client, "/translate", 500) == 1
    err = capfd.readouterr().err
    assert "Traceback" not in err
    logged = [line for line in err.splitlines() if "exploded" in line]
    assert len(logged) == 1 and "RuntimeError" in logged[0], err


def test_every_status_is_counted_in_metrics() -> None:
    client = client_for([fake_pair("src", "tgt")])
    assert client.get("/nope").status_code == 404
    assert client.get("/translate").status_code == 405
    assert client.get("/health").status_code == 200
    too_big = client.post("/translate", content=b"q=" + b"a" * 2_000_000, headers={"content-type": "text/plain"})
    assert too_big.status_code == 413
    assert client.post("/translate", json={"q": "a"}).status_code == 400
    assert metric(client, "other", 404) == 1  # unknown paths share one label: no label per scanner's guess
    assert metric(client, "/translate", 405) == 1
    assert metric(client, "/health", 200) == 1
    assert metric(client, "/translate", 413) == 1
    assert metric(client, "/translate", 400) == 1


def test_line_limit_counts_lines_after_splitting_and_batch_limit_counts_list_items() -> None:
    client = client_for([fake_pair("src", "tgt")], line_limit=4, batch_limit=2)
    for q in ["a\nb\nc\nd\ne", ["a\nb", "c\nd\ne"]]:
        r = client.post("/translate", json={"q": q, "source": "src", "target": "tgt"})
        assert r.status_code == 400
        assert r.json() == {"error": "Invalid request: request (5 lines) exceeds text limit (4 lines)"}
    r = client.post("/translate", json={"q": ["a", "b", "c"], "source": "src", "target": "tgt"})
    assert r.json() == {"error": "Invalid request: request (3) exceeds text limit (2)"}


def test_api_keys_file_one_key_a_line_with_comments(tmp_path: Path) -> None:
    from nmt.errors import NmtError
    from nmt.serve.access import read_api_keys

    path = tmp_path / "keys.txt"
    path.write_text("# team A\nkey-one\n\n  key-two   # the CI's key\n#key-three\n")
    assert read_api_keys(path) == frozenset({"key-one", "key-two"})
    path.write_text("# nothing but comments\n\n")
    with pytest.raises(NmtError, match="no API keys"):
        read_api_keys(path)
    with pytest.raises(NmtError, match="cannot read"):
        read_api_keys(tmp_path / "missing.txt")
    path.write_bytes(b"\xff\xfe key\n")
    with pytest.raises(NmtError, match="UTF-8"):
        read_api_keys(path)


def test_rate_limiter_is_a_moving_window_per_identity() -> None:
    from nmt.serve.access import RateLimiter

    now = [0.0]
    limiter = RateLimiter(3, clock=lambda: now[0])
    assert [limiter.hit("a") for _ in range(3)] == [None, None, None]
    assert limiter.hit("a") == pytest.approx(60.0)  # refused: the first slot frees at t=60
    assert limiter.hit("b") is None  # another key (or address) has its own minute
    now[0] = 30.0
    assert limiter.hit("a") == pytest.approx(30.0)
    now[0] = 60.0
    assert [limiter.hit("a") for _ in range(3)] == [None, None, None]  # the three at t=0 left the window
    assert limiter.hit("a") == pytest.approx(60.0)
    now[0] = 1000.0
    limiter.hit("c")
    assert set(limiter.windows) == {"c"}  # identities idle for a minute are forgotten


def test_json_body_is_not_echoed_into_the_error(tmp_path: Path) -> None:
    client = client_for([fake_pair("src", "tgt")])
    r = client.post("/translate", content=b'{"api_key": "s3cret", "q": ', headers={"content-type": "application/json"})
    assert r.status_code == 400 and "s3cret" not in r.text
    assert json.loads(r.text)["error"].startswith("Invalid request")


def test_a_glossary_for_a_model_without_constrained_search_is_a_400() -> None:
    """A pair whose engine takes no terms (an exported CTranslate2 model: no `glued` mask) refuses a
    glossary before decoding; an empty glossary is no glossary."""
    client = client_for([fake_pair("en", "de")])
    r = client.post("/translate", json={"q": "x", "source": "en", "target": "de", "glossary": [["x", "y"]]})
    assert r.status_code == 400 and "CTranslate2" in r.json()["error"]
