"""`nmt serve` as a subprocess on 127.0.0.1, spoken to by LibreTranslate clients nobody here wrote.

libretranslatepy sends urlencoded forms with urllib; libretranslate-aio sends forms with
httpx (a list `q` as repeated fields); raw JSON goes through httpx. The reference for every
translation is `nmt translate` on the same checkpoint, one process per line set.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
libretranslatepy = pytest.importorskip("libretranslatepy")
libretranslate_aio = pytest.importorskip("libretranslate_aio")
pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

from tests.conftest import TinyCheckpoint, run_nmt  # noqa: E402

pytestmark = pytest.mark.slow  # a live `nmt serve` subprocess per module: `make test-fast` skips it

LINES = ["3 4 5", "a b c d e", "", "x y", "1 2 3 4 5 6 7 8", "q", "p q r s"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, *models: Path, args: tuple[str, ...] = ()) -> None:
        self.model = models[0]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "nmt", "serve", *map(str, models), "--port", str(self.port), *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.proc.stdout.read()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.proc.kill()
        raise AssertionError("server did not start in 60 s")

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=60)
        return self.proc.returncode, out


@pytest.fixture(scope="module")
def server(tiny_checkpoint: TinyCheckpoint) -> Iterator[Server]:
    srv = Server(tiny_checkpoint.path, args=("--max-wait-ms", "20"))
    yield srv
    code, out = srv.stop()
    assert code == 0, out
    assert "Traceback" not in out


@pytest.fixture(scope="module")
def reference(tiny_checkpoint: TinyCheckpoint) -> dict[str, list[str]]:
    """nmt translate's outputs for LINES: best, and the 3-best (beam 3) per line."""
    best = run_nmt("translate", str(tiny_checkpoint.path), input="\n".join(LINES) + "\n")
    nbest = run_nmt("translate", str(tiny_checkpoint.path), "--nbest", "3", input="\n".join(LINES) + "\n")
    assert best.returncode == 0 and nbest.returncode == 0, best.stderr + nbest.stderr
    three = nbest.stdout.split("\n")
    return {
        "best": best.stdout.split("\n")[: len(LINES)],
        "nbest": [three[3 * i : 3 * i + 3] for i in range(len(LINES))],
    }


def test_libretranslatepy_form_client(server: Server, reference: dict[str, list[str]]) -> None:
    client = libretranslatepy.LibreTranslateAPI(server.url + "/")
    for line, expected in zip(LINES, reference["best"], strict=True):
        if line:  # LibreTranslate answers an empty q with 400 (see test_bad_input)
            assert client.translate(line, source="src", target="tgt") == expected
    assert client.languages() == [  # each language a model reads or writes; each is its own target too
        {"code": "src", "name": "src", "targets": ["src", "tgt"]},
        {"code": "tgt", "name": "tgt", "targets": ["tgt"]},
    ]


def test_libretranslate_aio_client_list_and_alternatives(server: Server, reference: dict[str, list[str]]) -> None:
    with libretranslate_aio.LibreTranslate(base_url=server.url) as client:
        lines = [line for line in LINES if line]
        result = client.translate(lines, source="src", target="tgt")
        assert result.translated_text == [reference["best"][LINES.index(line)] for line in lines]
        alt = client.translate(LINES[1], source="src", target="tgt", alternatives=2)
        assert alt.translated_text == reference["nbest"][1][0]
        assert alt.alternatives == reference["nbest"][1][1:]
        assert [(lang.code, lang.targets) for lang in client.languages()] == [("src", ["src", "tgt"]), ("tgt", ["tgt"])]


def test_json_body_keeps_the_lines_of_a_text(server: Server, reference: dict[str, list[str]]) -> None:
    text = "\n".join(LINES)  # an empty line inside gives an empty line out
    r = httpx.post(f"{server.url}/translate", json={"q": text, "source": "src", "target": "tgt", "api_key": "x"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["translatedText"] == "\n".join(reference["best"])
    assert set(body) == {"translatedText", "confidence"} and 0.0 < body["confidence"] <= 1.0
    auto = httpx.post(f"{server.url}/translate", json={"q": LINES[0], "source": "auto", "target": "tgt"}).json()
    assert auto["translatedText"] == reference["best"][0]
    assert auto["detectedLanguage"]["language"] == "src"


def test_confidence_is_translate_confidences_per_text(server: Server) -> None:
    """nmt's `confidence` extension: per q string, the mean of its lines' `nmt translate --confidence`."""
    cli = run_nmt("translate", str(server.model), "--confidence", input="\n".join(LINES) + "\n")
    assert cli.returncode == 0, cli.stderr
    per_line = [float(row.split("\t")[0]) for row in cli.stdout.split("\n")[: len(LINES)]]
    r = httpx.post(f"{server.url}/translate", json={"q": [LINES[1], "\n".join(LINES[:3])], "source": "src",
                                                      "target": "tgt"})  # fmt: skip
    assert r.status_code == 200, r.text
    first, joined = r.json()["confidence"]
    assert first == pytest.approx(per_line[1], abs=2e-4)
    assert joined == pytest.approx((per_line[0] + per_line[1]) / 2, abs=2e-4)  # the empty third line left out


def test_format_html_through_the_aio_client_equals_translate_format_html(server: Server, tmp_path: Path) -> None:
    """LibreTranslate's format=html: each q an HTML document, answered as `nmt translate --format html`
    answers the same fragment (the CLI is the reference), malformed ones repaired and counted."""
    docs = [
        "<p>3 <b>4 <i>5</i></b> 6</p>",
        '<div>a <a href="?x=1&amp;y=2">b c</a> <!-- n --> d<br>e</div>',
        "<b>x <i>y</b> z",  # malformed
        "<script>var s = '<p>';</script>p <span translate=\"no\">q r</span> s",
    ]
    (tmp_path / "in.html").write_text("".join(f"{d}\n" for d in docs))
    cli = run_nmt("translate", str(server.model), "-i", str(tmp_path / "in.html"), "--format", "html")
    assert cli.returncode == 0, cli.stderr
    with libretranslate_aio.LibreTranslate(base_url=server.url) as client:
        result = client.translate(docs, source="src", target="tgt", format="html")
        alt = client.translate(docs[0], source="src", target="tgt", format="html", alternatives=2)
    assert result.translated_text == cli.stdout.split("\n")[: len(docs)]
    assert (alt.translated_text, alt.alternatives) == (result.translated_text[0], [])  # as LibreTranslate: none
    assert "<script>var s = '<p>';</script>" in result.translated_text[3]
    metrics = httpx.get(f"{server.url}/metrics").text
    assert "nmt_serve_html_repaired_total 1" in metrics


def test_200_requests_from_32_concurrent_clients_each_get_their_own_answer(
    server: Server, reference: dict[str, list[str]]
) -> None:
    lines = [line for line in LINES if line]
    expected = {line: reference["best"][LINES.index(line)] for line in lines}

    def ask(i: int) -> tuple[str, int, str]:
        line = lines[i % len(lines)]
        with httpx.Client(timeout=60) as client:
            r = client.post(f"{server.url}/translate", data={"q": line, "source": "src", "target": "tgt"})
        return line, r.status_code, r.json().get("translatedText", r.text)

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(ask, range(200)))
    assert all(code == 200 for _, code, _ in answers)
    assert all(text == expected[line] for line, _, text in answers)
    metrics = httpx.get(f"{server.url}/metrics").text
    batches = next(float(x.split()[-1]) for x in metrics.splitlines() if x.startswith("nmt_serve_batch_requests_count"))
    requests = next(float(x.split()[-1]) for x in metrics.splitlines() if x.startswith("nmt_serve_batch_requests_sum"))
    assert requests / batches > 1.5  # requests really shared batches


def post_raw(url: str, content: bytes, content_type: str) -> httpx.Response:
    return httpx.post(f"{url}/translate", content=content, headers={"content-type": content_type}, timeout=60)


@pytest.mark.parametrize(
    ("body", "content_type", "status", "says"),
    [
        (json.dumps({"q": "", "source": "src", "target": "tgt"}).encode(), "application/json", 400, "missing q"),
        (json.dumps({"q": [], "source": "src", "target": "tgt"}).encode(), "application/json", 400, "missing q"),
        (json.dumps({"source": "src", "target": "tgt"}).encode(), "application/json", 400, "missing q"),
        (json.dumps({"q": 5, "source": "src", "target": "tgt"}).encode(), "application/json", 400, "string"),
        (json.dumps({"q": ["a", 5], "source": "src", "target": "tgt"}).encode(), "application/json", 400, "string"),
        (json.dumps({"q": "a", "source": "src"}).encode(), "application/json", 400, "missing target"),
        (json.dumps({"q": "a", "source": "de", "target": "tgt"}).encode(), "application/json", 400, "src->tgt"),
        (json.dumps({"q": "a", "source": "auto", "target": "fr"}).encode(), "application/json", 400, "detection"),
        (json.dumps({"q": "a", "source": "src", "target": "tgt", "format": "xml"}).encode(), "application/json",
         400, "use text or html"),
        (json.dumps({"q": "a", "source": "src", "target": "tgt", "alternatives": "x"}).encode(), "application/json",
         400, "alternatives"),
        (b"{not json", "application/json", 400, "JSON"),
        (b"[1, 2]", "application/json", 400, "object"),
        (json.dumps({"q": ["a"] * 10_000, "source": "src", "target": "tgt"}).encode(), "application/json", 400,
         "exceeds text limit"),
        (json.dumps({"q": "a" * 6000, "source": "src", "target": "tgt"}).encode(), "application/json", 400,
         "exceeds text limit"),
        (b"q=" + b"a" * 10_000_000 + b"&source=src&target=tgt", "application/x-www-form-urlencoded", 413, "limit"),
        (b"q=%FF%FE&source=src&target=tgt", "application/x-www-form-urlencoded", 400, "UTF-8"),
        (b"q=\xff\xfe&source=src&target=tgt", "application/x-www-form-urlencoded", 400, "UTF-8"),
        (b"q=a&source=src&target=tgt", "text/plain", 400, "content type"),
    ],
)  # fmt: skip
def test_bad_input_gets_a_4xx_with_an_error_and_the_server_lives(
    server: Server, body: bytes, content_type: str, status: int, says: str
) -> None:
    r = post_raw(server.url, body, content_type)
    assert r.status_code == status, r.text
    assert says in r.json()["error"]
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_unknown_pair_lists_the_supported_ones_and_unknown_routes_answer_json(server: Server) -> None:
    r = httpx.post(f"{server.url}/translate", json={"q": "a", "source": "en", "target": "fr"})
    assert r.status_code == 400 and "supported: src->tgt" in r.json()["error"]
    r = httpx.get(f"{server.url}/nope")
    assert r.status_code == 404 and "error" in r.json()


def test_overload_answers_429_and_the_server_keeps_serving(tiny_checkpoint: TinyCheckpoint) -> None:
    srv = Server(tiny_checkpoint.path, args=("--queue-size", "1", "--batch-tokens", "1", "--max-wait-ms", "0"))
    try:
        line = "1 2 3 4 5 6 7 8 9 10 11 12"

        def ask(_: int) -> int:
            with httpx.Client(timeout=120) as client:
                return client.post(
                    f"{srv.url}/translate", json={"q": line, "source": "src", "target": "tgt"}
                ).status_code

        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            codes = list(pool.map(ask, range(64)))
        assert set(codes) == {200, 429}, codes
        after = httpx.post(f"{srv.url}/translate", json={"q": line, "source": "src", "target": "tgt"}, timeout=60)
        assert after.status_code == 200
    finally:
        code, out = srv.stop()
    assert code == 0, out


def test_sigterm_answers_the_requests_in_flight_then_exits_0(tiny_checkpoint: TinyCheckpoint) -> None:
    # one request per batch, and a wide beam: a queue builds up
    # a shutdown timeout far above the drain's few seconds: every request must be answered, however busy the CI
    args = ("--batch-tokens", "1", "--beam", "48", "--max-len-b", "60", "--shutdown-timeout", "300")
    srv = Server(tiny_checkpoint.path, args=args)
    lines = [f"{i} 2 3 4 5 6 7 8 9" for i in range(16)]

    def ask(line: str) -> int:
        with httpx.Client(timeout=120) as client:
            return client.post(f"{srv.url}/translate", json={"q": line, "source": "src", "target": "tgt"}).status_code

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(ask, line) for line in lines]
        deadline, depth = time.monotonic() + 30, 0.0
        while time.monotonic() < deadline and depth < 4:  # wait until requests queue up in the server
            metrics = httpx.get(f"{srv.url}/metrics").text
            depth = next(float(x.split()[-1]) for x in metrics.splitlines() if x.startswith("nmt_serve_queue_depth"))
            time.sleep(0.01)
        assert depth >= 4, "no queue built up: nothing was in flight at SIGTERM"
        code, out = srv.stop()
        codes = [f.result() for f in futures]
    assert code == 0, out
    assert codes == [200] * len(lines)
    assert "Traceback" not in out


def test_start_up_errors_are_one_paragraph(server: Server, tiny_checkpoint: TinyCheckpoint) -> None:
    in_use = run_nmt("serve", str(tiny_checkpoint.path), "--port", str(server.port), timeout=120)
    assert in_use.returncode != 0
    assert f"cannot listen on 127.0.0.1:{server.port}" in " ".join((in_use.stdout + in_use.stderr).split())
    assert "Traceback" not in in_use.stdout + in_use.stderr
    twice = run_nmt("serve", str(tiny_checkpoint.path), str(tiny_checkpoint.path), "--port", "0", timeout=120)
    assert twice.returncode != 0
    assert "both translate src->tgt" in " ".join((twice.stdout + twice.stderr).split())  # rich may wrap lines
    assert "Traceback" not in twice.stdout + twice.stderr


def test_a_client_that_leaves_while_queued_is_dropped_from_its_batch(tiny_checkpoint: TinyCheckpoint) -> None:
    # one request per batch and a wide beam, so requests queue; the impatient clients give up at once
    srv = Server(tiny_checkpoint.path, args=("--batch-tokens", "1", "--beam", "48", "--max-len-b", "60"))
    try:
        body = {"q": "1 2 3 4 5 6 7 8 9", "source": "src", "target": "tgt"}

        def patient(_: int) -> int:
            with httpx.Client(timeout=120) as client:
                return client.post(f"{srv.url}/translate", json=body).status_code

        def impatient(_: int) -> str:
            try:
                with httpx.Client(timeout=0.2) as client:
                    client.post(f"{srv.url}/translate", json=body)
                return "answered"
            except httpx.TimeoutException:
                return "left"

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            busy = [pool.submit(patient, i) for i in range(8)]
            deadline, depth = time.monotonic() + 30, 0.0
            while time.monotonic() < deadline and depth < 4:  # wait until requests queue up in the server
                metrics = httpx.get(f"{srv.url}/metrics").text
                depth = next(
                    float(x.split()[-1]) for x in metrics.splitlines() if x.startswith("nmt_serve_queue_depth")
                )
                time.sleep(0.01)
            left = list(pool.map(impatient, range(4)))
            assert [f.result() for f in busy] == [200] * 8
        assert "left" in left
        metrics = httpx.get(f"{srv.url}/metrics").text
        dropped = next(float(x.split()[-1]) for x in metrics.splitlines() if x.startswith("nmt_serve_dropped_requests"))
        assert 1 <= dropped <= left.count("left")  # one that left while being decoded is not dropped
    finally:
        code, out = srv.stop()
    assert code == 0, out


def test_an_overlong_line_is_truncated_counted_and_still_answered(
    server: Server, tiny_checkpoint: TinyCheckpoint
) -> None:
    words = " ".join(["alpha", "bravo", "charlie"] * 60)  # far over the model's 63 source tokens
    before = httpx.get(f"{server.url}/metrics").text
    r = httpx.post(f"{server.url}/translate", json={"q": f"{words}\nx y", "source": "src", "target": "tgt"}, timeout=60)
    assert r.status_code == 200, r.text
    assert len(r.json()["translatedText"].split("\n")) == 2  # still one line out per line in
    after = httpx.get(f"{server.url}/metrics").text

    def truncated(text: str) -> float:
        return next(float(x.split()[-1]) for x in text.splitlines() if x.startswith("nmt_serve_truncated_lines_total"))

    assert truncated(after) - truncated(before) == 1


def test_glossary_field_is_translate_glossary_and_bad_ones_are_400s(server: Server, tmp_path: Path) -> None:
    """nmt's `glossary` extension: the lines translated as `nmt translate --glossary` translates them (the
    CLI is the reference), in JSON and in a form (the list as a JSON string); malformed ones are 400s."""
    tsv = tmp_path / "terms.tsv"
    tsv.write_text("# src\ttgt\nq\tHOTEL\nx\tECHO\n")
    cli = run_nmt("translate", str(server.model), "--glossary", str(tsv), input="\n".join(LINES) + "\n")
    assert cli.returncode == 0, cli.stderr
    want = cli.stdout.split("\n")[: len(LINES)]
    assert "HOTEL" in want[5].split() and "ECHO" in want[3].split()
    pairs = [["q", "HOTEL"], ["x", "ECHO"]]
    body = {"q": LINES, "source": "src", "target": "tgt", "glossary": pairs}
    r = httpx.post(f"{server.url}/translate", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["translatedText"] == want
    form = httpx.post(f"{server.url}/translate", data={**body, "q": LINES[5], "glossary": json.dumps(pairs)})
    assert form.status_code == 200, form.text
    assert form.json()["translatedText"] == want[5]
    doc = "<p>x <b>q</b> y</p>"  # format=html: the glossary binds each block's text, as translate --format html
    cli_html = run_nmt("translate", str(server.model), "--format", "html", "--glossary", str(tsv), input=doc + "\n")
    assert cli_html.returncode == 0, cli_html.stderr
    html = httpx.post(f"{server.url}/translate", json={**body, "q": doc, "format": "html"})
    assert html.status_code == 200, html.text
    assert html.json()["translatedText"] == cli_html.stdout.rstrip("\n")
    assert "HOTEL" in html.json()["translatedText"] and "ECHO" in html.json()["translatedText"]
    for bad, says in [
        ({"q": "Hund"}, "must be a list"),
        ([["q"]], "entry 1 is not a"),
        ([["q", 3]], "entry 1 is not a"),
        ([["q", ""]], "empty target term"),
        ([["q", "A"], ["Q", "B"]], "already given"),
        ("not json", "must be a list"),
    ]:
        r = httpx.post(f"{server.url}/translate", json={**body, "glossary": bad})
        assert r.status_code == 400 and says in r.json()["error"], (bad, r.text)
