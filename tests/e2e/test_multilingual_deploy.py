"""A multilingual model where single-pair models go: its CTranslate2 export (`nmt translate DIR --tgt-lang`),
its Argos packages (one per direction) in the real Argos Translate client and the real `libretranslate`
server, and `nmt serve` answering LibreTranslate's clients for every direction and through a pivot.

The model is the session's three-direction number-words model (en-de, en-fr, de-en; tests/conftest.py).
References are nmt's own search on the checkpoint (greedy where Argos searches greedily, ARGOS_BEAM_SIZE=1).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from nmt.decode.languages import LanguageRequest, choose_route
from nmt.decode.translate import TranslateStats, load_for_decoding, translate_route
from tests.conftest import MultilingualModel, run_nmt
from tests.corpora import number_lines
from tests.lt_server import ArgosHome, LibreTranslateServer, install_package, make_argos_home, run_lt

httpx = pytest.importorskip("httpx")
libretranslatepy = pytest.importorskip("libretranslatepy")
libretranslate_aio = pytest.importorskip("libretranslate_aio")

pytestmark = pytest.mark.slow

LINES = number_lines(12, seed=11, below=100)  # {lang: lines}, multi-way parallel
ROUTES = [("en", "de", None), ("en", "fr", None), ("de", "en", None), ("de", "fr", "en")]  # the last: a pivot


def nmt_outputs(path: Path, *overrides: str) -> dict[tuple[str, str], list[str]]:
    """nmt's translations of LINES[src] for every route, in process, from a checkpoint or an export."""
    loaded, cfg, device = load_for_decoding(path, overrides=list(overrides))
    out = {}
    for src, tgt, pivot in ROUTES:
        route = choose_route(loaded.cfg, loaded.vocab, LanguageRequest(tgt, src_lang=src, pivot=pivot))
        rows = translate_route(loaded, LINES[src], cfg, route, device=device, stats=TranslateStats())
        out[src, tgt] = [row[0].text for row in rows]
    return out


@pytest.fixture(scope="module")
def greedy(multilingual_model: MultilingualModel) -> dict[tuple[str, str], list[str]]:
    return nmt_outputs(multilingual_model.checkpoint, "decode.beam=1")


def test_ctranslate2_export_translates_every_direction_as_the_checkpoint(
    multilingual_model: MultilingualModel, greedy: dict[tuple[str, str], list[str]], tmp_path: Path
) -> None:
    done = run_nmt("export", str(multilingual_model.checkpoint), "-o", str(tmp_path / "ct2"))
    assert done.returncode == 0, done.stderr
    assert nmt_outputs(tmp_path / "ct2", "decode.beam=1") == greedy
    # the CLI on the export: --tgt-lang required, a pivot through English
    src = "".join(f"{x}\n" for x in LINES["de"])
    out = run_nmt("translate", str(tmp_path / "ct2"), "--src-lang", "de", "--tgt-lang", "fr", "--pivot", "en",
                  "--beam", "1", input=src)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == greedy["de", "fr"]
    bad = run_nmt("translate", str(tmp_path / "ct2"), input=src)
    assert bad.returncode == 2 and "say which with --tgt-lang" in bad.stderr and "Traceback" not in bad.stderr


@pytest.fixture(scope="module")
def packages(multilingual_model: MultilingualModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("argos") / "packages"
    done = run_nmt("export", str(multilingual_model.checkpoint), "--argos", str(out))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["de_en.argosmodel", "en_de.argosmodel", "en_fr.argosmodel"]
    return out


def test_the_argos_client_translates_with_every_package_and_pivots_through_them(
    packages: Path, greedy: dict[tuple[str, str], list[str]], lt_venv: Path, tmp_path: Path
) -> None:
    """argos-translate-lt installs all three packages and, offline and greedy, translates each direction as
    `nmt translate --tgt-lang` does; de->fr, which no package has, it pivots through en as `--pivot en` does."""
    home = make_argos_home(tmp_path)
    for package in sorted(packages.iterdir()):
        install_package(home, package)
    code = """
import json, sys
from argostranslate import translate
lines, routes = json.load(sys.stdin)
print(json.dumps([[translate.translate(line, src, tgt) for line in lines[src]] for src, tgt in routes]))
"""
    routes = [[src, tgt] for src, tgt, _ in ROUTES]
    got = json.loads(run_lt(code, home, stdin=json.dumps([LINES, routes]), env={"ARGOS_BEAM_SIZE": "1"}))
    assert {(src, tgt): lines for (src, tgt), lines in zip(routes, got, strict=True)} == greedy


@pytest.fixture(scope="module")
def two_packages_home(packages: Path, lt_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> ArgosHome:
    home = make_argos_home(tmp_path_factory.mktemp("lt_two"))
    for name in ("de_en.argosmodel", "en_fr.argosmodel"):
        install_package(home, packages / name)
    return home


def test_libretranslate_serves_two_of_the_packages(
    two_packages_home: ArgosHome, greedy: dict[tuple[str, str], list[str]]
) -> None:
    """The real server with de_en and en_fr only: both directions as nmt translates them, and de->fr through
    English (LibreTranslate's own pivot, over our two packages) as `nmt translate --pivot en`."""
    server = LibreTranslateServer(two_packages_home, env={"ARGOS_BEAM_SIZE": "1"}, load_only="de,en,fr")
    try:
        languages = {lang["code"]: lang for lang in server.get("/languages")}  # type: ignore[union-attr]
        assert {code: lang["name"] for code, lang in languages.items()} == {
            "de": "German", "en": "English", "fr": "French",
        }  # fmt: skip
        for src, tgt in (("de", "en"), ("en", "fr"), ("de", "fr")):
            body = json.dumps({"q": LINES[src], "source": src, "target": tgt}).encode()
            status, answer = server.post("/translate", body, "application/json")
            assert status == 200, answer
            assert answer["translatedText"] == greedy[src, tgt], (src, tgt)  # type: ignore[index]
    finally:
        server.stop()


@pytest.fixture(scope="module")
def served(multilingual_model: MultilingualModel) -> Iterator[str]:
    from tests.e2e.test_serve import Server

    server = Server(multilingual_model.checkpoint, args=("--max-wait-ms", "10"))
    yield server.url
    code, out = server.stop()
    assert code == 0 and "Traceback" not in out, out


def test_nmt_serve_answers_libretranslate_clients_for_every_direction_and_through_a_pivot(
    served: str, multilingual_model: MultilingualModel
) -> None:
    expected = nmt_outputs(multilingual_model.checkpoint)  # the checkpoint's own settings (beam 4), as served
    client = libretranslatepy.LibreTranslateAPI(served + "/")
    for src, tgt, _ in ROUTES:
        assert [client.translate(line, source=src, target=tgt) for line in LINES[src]] == expected[src, tgt]
    with libretranslate_aio.LibreTranslate(base_url=served) as aio:
        assert aio.translate(LINES["de"], source="de", target="fr").translated_text == expected["de", "fr"]
        assert [(lang.code, lang.targets) for lang in aio.languages()] == [
            ("de", ["de", "en", "fr"]),
            ("en", ["de", "en", "fr"]),
            ("fr", ["fr"]),
        ]  # fmt: skip (de->fr through en)
    r = httpx.post(f"{served}/translate", json={"q": LINES["de"][0], "source": "de", "target": "fr"})
    assert r.status_code == 200 and r.headers["x-translation-pivot"] == "en"
    r = httpx.post(f"{served}/translate", json={"q": LINES["en"][0], "source": "en", "target": "fr"})
    assert r.status_code == 200 and "x-translation-pivot" not in r.headers


def test_nmt_serve_answers_impossible_requests_with_one_json_error_each(served: str) -> None:
    for body, says in (
        ({"q": "eins", "source": "de", "target": "cs"}, "no model for de->cs, directly or through one pivot"),
        ({"q": "un", "source": "fr", "target": "de"}, "no model for fr->de, directly or through one pivot"),
        ({"q": "one", "source": "auto", "target": "cs"}, "source auto needs language detection"),
    ):
        r = httpx.post(f"{served}/translate", json=body)
        assert r.status_code == 400 and says in r.json()["error"], r.text
        assert "supported: de->en, en->de, en->fr" in r.json()["error"]
