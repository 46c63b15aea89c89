"""An `nmt export --argos` package in the real programs: the Argos Translate client LibreTranslate installs
(argos-translate-lt, offline) and the real `libretranslate` server, against `nmt translate` on every line.

Both come from the LibreTranslate test venv (`make lt-venv`: `pip install libretranslate==1.9.6`);
tests/lt_server.py runs them with Argos Translate's directories in a temp dir. The reference is
`nmt translate` with greedy search on the checkpoint; the client and server search greedily too
(ARGOS_BEAM_SIZE=1).
"""

from __future__ import annotations

import json
import urllib.parse

import pytest

from tests.conftest import run_nmt
from tests.lt_server import FROM, LINES, TO, ArgosHome, ArgosPackage, LibreTranslateServer, client_translate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference(argos_package: ArgosPackage) -> list[str]:
    """`nmt translate CKPT --beam 1` of LINES."""
    done = run_nmt("translate", str(argos_package.checkpoint), "--beam", "1", input="".join(f"{x}\n" for x in LINES))
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == len(LINES)
    return done.stdout.splitlines()


def test_client_translates_offline_as_nmt_translate(
    argos_package: ArgosPackage, lt_home: ArgosHome, reference: list[str]
) -> None:
    """With the network gone, argostranslate.translate.translate() splits with the package's MiniSBD model
    (no download) and gives nmt translate's output on every line, and on all lines as one text."""
    got = client_translate(lt_home, LINES, beam_size=1)
    splitter = lt_home.packages / argos_package.root / "minisbd" / "paragraph.onnx"
    assert got["splitter"] == ["MiniSBDSentencizer", str(splitter)]
    mismatches = [(line, theirs, ours) for line, theirs, ours in zip(LINES, got["lines"], reference) if theirs != ours]
    assert not mismatches, mismatches
    assert got["text"] == "\n".join(reference)


def test_libretranslate_server(lt_server: LibreTranslateServer, reference: list[str]) -> None:
    """The real server, started offline with only our package: /languages lists its pair, and
    POST /translate answers nmt translate's translations to JSON (a list, a string, a text of
    several lines) and form bodies."""
    languages = lt_server.get("/languages")
    assert {lang["code"]: lang["name"] for lang in languages} == {FROM[0]: FROM[1], TO[0]: TO[1]}
    assert {lang["code"]: sorted(lang["targets"]) for lang in languages}[FROM[0]] == sorted([FROM[0], TO[0]])

    def translate(q: str | list[str], *, form: bool = False) -> object:
        fields = {"q": q, "source": FROM[0], "target": TO[0]}
        if form:
            status, body = lt_server.post(
                "/translate", urllib.parse.urlencode(fields).encode(), "application/x-www-form-urlencoded"
            )
        else:
            status, body = lt_server.post("/translate", json.dumps(fields).encode(), "application/json")
        assert status == 200, body
        return body["translatedText"]

    assert translate(LINES) == reference
    assert translate("\n".join(LINES)) == "\n".join(reference)
    for line, expected in list(zip(LINES, reference))[:5]:
        assert translate(line) == expected
        assert translate(line, form=True) == expected
