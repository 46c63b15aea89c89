"""Argos Translate packages: the layout the clients read, `nmt translate`'s translations, clear errors.

Argos Translate is not a dependency of nmt, so the consumer test replays the calls that
argos-translate-lt 1.12.1 (the client `pip install libretranslate==1.9.6` installs) makes on an
installed package, each next to the place in its source it comes from. `test_with_argostranslate`
checks that replay against the real client, run offline from the LibreTranslate test venv
(`make lt-venv`, tests/lt_server.py); tests/e2e/test_libretranslate.py runs the real server too.
"""

from __future__ import annotations

import importlib.util
import json
import zipfile
from importlib import resources
from pathlib import Path

import ctranslate2
import pytest
import sentencepiece
import torch

from nmt.checkpoint import build_checkpoint, save_checkpoint
from nmt.config import config_from_dict
from nmt.data.vocab import Vocab
from nmt.decode.translate import load_for_decoding, translate_lines
from nmt.errors import CheckpointError, NmtError
from nmt.export.argos import ArgosResult, export_argos
from nmt.model import build_model
from nmt.tokens import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from tests.conftest import ROOT as REPO
from tests.conftest import run_nmt
from tests.corpora import reverse_pairs, toy_vocabs
from tests.lt_server import ArgosHome, client_translate, install_package, make_argos_home, run_lt

PARAGRAPH_ONNX = resources.files("nmt.export").joinpath("paragraph.onnx")
PAIRS = reverse_pairs(300, seed=7)
LINES = [p[0] for p in reverse_pairs(12, seed=11)]
ROOT = "translate-de_en-nmt-1_0"


@pytest.fixture(scope="module")
def vocabs() -> dict[bool, Vocab]:
    return toy_vocabs(PAIRS)


def write_checkpoint(path: Path, vocab: Vocab, *, langs: tuple[str, str] = ("de", "en"), **model: object) -> Path:
    """A checkpoint of a random de->en model (or `langs`). A Transformer's outputs end by EOS at varied lengths and
    never hold pad, bos or unk, as a trained model's (Argos's search suppresses none of them)."""
    cfg = config_from_dict(
        {
            "data": {"src_lang": langs[0], "tgt_lang": langs[1]},
            "vocab": {"joint": vocab.joint, "size": vocab.src_size},
            "model": {"preset": "tiny", "max_len": 48, "share_embeddings": "none", **model},
            "decode": {"device": "cpu", "beam": 3},
        }
    )
    torch.manual_seed(2)  # with the weights below, LINES get outputs of 2 to 8 tokens
    net = build_model(cfg.model, src_vocab_size=vocab.src_size, tgt_vocab_size=vocab.tgt_size)
    weights = net.state_dict()  # type: ignore[attr-defined]
    if cfg.model.arch == "transformer":
        weights["dec_norm.bias"][0] += 3.0  # a feature every decoder output carries ...
        weights["out_proj.weight"][EOS_ID, 0] = 0.65  # ... makes EOS likelier
        weights["out_proj.weight"][[PAD_ID, BOS_ID, UNK_ID], 0] = -10.0  # ... and pad, bos, unk very unlikely
    ckpt = build_checkpoint(
        model_state=weights, cfg=cfg, vocab_models=(vocab.src_model, vocab.tgt_model), step=7, epoch=0, train_state=None
    )
    save_checkpoint(path, ckpt)
    return path


def stanza_dir(path: Path, lang: str = "de") -> Path:
    """What `stanza.download(lang, dir=path, processors="tokenize")` leaves (the model's bytes faked)."""
    (path / lang / "tokenize").mkdir(parents=True)
    (path / "resources.json").write_text(json.dumps({lang: {"tokenize": {"gsd": {}}}}))
    (path / lang / "tokenize" / "gsd.pt").write_bytes(b"not really a model")
    return path


@pytest.fixture(scope="module")
def package(vocabs: dict[bool, Vocab], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ArgosResult]:
    tmp = tmp_path_factory.mktemp("argos")
    ckpt = write_checkpoint(tmp / "model.pt", vocabs[True])
    stanza = stanza_dir(tmp / "stanza")
    result = export_argos(
        ckpt, tmp / "out" / "de_en.argosmodel", from_name="German", to_name="English", stanza_model=stanza
    )
    return ckpt, result


def test_minisbd_model_is_what_its_script_builds() -> None:
    """nmt/export/paragraph.onnx is scripts/build_minisbd_model.py's output, byte for byte."""
    pytest.importorskip("onnx")
    spec = importlib.util.spec_from_file_location("build_minisbd_model", REPO / "scripts" / "build_minisbd_model.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    shipped = PARAGRAPH_ONNX.read_bytes()
    assert script.model_bytes() == shipped and len(shipped) < 1024


def test_package_layout(package: tuple[Path, ArgosResult], vocabs: dict[bool, Vocab]) -> None:
    _, result = package
    assert result.root == ROOT and (result.from_code, result.to_code) == ("de", "en") and result.step == 7
    assert [p.name for p in result.package.parent.iterdir()] == ["de_en.argosmodel"]  # no temp file left
    with zipfile.ZipFile(result.package) as zf:
        names = zf.namelist()
        assert {name.split("/")[0] for name in names} == {ROOT}  # one top-level directory
        files = {name.removeprefix(f"{ROOT}/") for name in names if not name.endswith("/")}
        expected = {"metadata.json", "sentencepiece.model", "README.md", "minisbd/paragraph.onnx"}
        expected |= {"stanza/resources.json", "stanza/de/tokenize/gsd.pt"}
        expected |= {f"model/{n}" for n in ("model.bin", "config.json", "nmt.json")}
        assert expected <= files, expected - files
        # the client opens the first minisbd/*.onnx: ours, the one there
        assert [f for f in files if f.startswith("minisbd/")] == ["minisbd/paragraph.onnx"]
        assert zf.read(f"{ROOT}/minisbd/paragraph.onnx") == PARAGRAPH_ONNX.read_bytes()
        assert json.loads(zf.read(f"{ROOT}/metadata.json")) == {
            "package_version": "1.0",
            "argos_version": "1.9",
            "from_code": "de",
            "from_name": "German",
            "to_code": "en",
            "to_name": "English",
            "type": "translate",
            "links": [],
        }
        assert zf.read(f"{ROOT}/sentencepiece.model") == vocabs[True].src_model
        # what Argos relies on: CTranslate2 adds the source eos and starts the decoder with bos itself
        config = json.loads(zf.read(f"{ROOT}/model/config.json"))
        assert config["add_source_eos"] is True and config["add_source_bos"] is False
        assert config["decoder_start_token"] == config["bos_token"] == "<s>"
        assert "German -> English" in zf.read(f"{ROOT}/README.md").decode()


def argos_translate(packages: Path, lines: list[str], *, beam_size: int) -> tuple[dict, list[str]]:
    """Translate each line (no line breaks) with an installed package as argos-translate-lt 1.12.1 does."""
    # package.py, get_installed_packages: every directory in the packages directory is a Package
    (pkg,) = [p for p in packages.iterdir() if p.is_dir()]
    # package.py, Package.__init__: metadata.json, then SentencePieceTokenizer(package_path / "sentencepiece.model")
    metadata = json.loads((pkg / "metadata.json").read_text())
    sp = sentencepiece.SentencePieceProcessor(model_file=str(pkg / "sentencepiece.model"))
    # translate.py, PackageTranslation.hypotheses: ctranslate2.Translator(str(package_path / "model"), device=...),
    # then apply_packaged_translation per line: sbd.py's MiniSBDSentencizer with the package's minisbd/paragraph.onnx
    # keeps the line as one sentence (without surrounding whitespace) ...
    translator = ctranslate2.Translator(str(pkg / "model"), device="cpu")
    # ... tokenizer.py's SentencePieceTokenizer.encode per sentence ...
    tokenized = [sp.encode(line.strip(), out_type=str) for line in lines]
    # ... then this call (its beam_size is max(num_hypotheses, settings.beam_size): ARGOS_BEAM_SIZE, default 4) ...
    results = translator.translate_batch(
        tokenized,
        target_prefix=None,
        replace_unknowns=True,
        max_batch_size=32,
        batch_type="tokens",
        beam_size=beam_size,
        num_hypotheses=1,
        length_penalty=0.2,
        return_scores=True,
    )
    texts = []
    for result in results:
        # ... SentencePieceTokenizer.decode: decode_pieces, then "▁" and "_" -> " ", then one leading space dropped
        value = sp.decode_pieces(result.hypotheses[0]).replace("▁", " ").replace("_", " ")
        texts.append(value[1:] if value.startswith(" ") else value)
    return metadata, texts


def test_argos_consumer_gets_nmt_translations(package: tuple[Path, ArgosResult], tmp_path: Path) -> None:
    ckpt, result = package
    # package.py, install_from_path: zipfile.ZipFile(path).extractall(path=settings.package_data_dir)
    with zipfile.ZipFile(result.package) as zf:
        zf.extractall(tmp_path / "packages")
    metadata, theirs = argos_translate(tmp_path / "packages", LINES, beam_size=1)
    assert (metadata["from_code"], metadata["to_code"], metadata["type"]) == ("de", "en", "translate")

    model_dir = tmp_path / "packages" / ROOT / "model"  # `nmt translate DIR` on the package's model
    loaded, cfg, device = load_for_decoding(model_dir, overrides=["decode.beam=1"])
    rows = [row[0] for row in translate_lines(loaded, LINES, cfg, device=device)]
    assert theirs == [row.text for row in rows]
    native, cfg, device = load_for_decoding(ckpt, overrides=["decode.beam=1"])  # and on the checkpoint
    assert theirs == [row[0].text for row in translate_lines(native, LINES, cfg, device=device)]
    # outputs that ended by EOS at several lengths, before nmt's length limit (which Argos does not apply)
    assert all(0 < row.tokens < cfg.max_len_b for row in rows) and len({row.tokens for row in rows}) > 1


def test_with_argostranslate(package: tuple[Path, ArgosResult], lt_venv: Path, tmp_path: Path) -> None:
    """The real client (argos-translate-lt, from the LibreTranslate test venv) installs the package and, with the
    network gone, splits with its minisbd/paragraph.onnx and translates as the replay above, at its default beam
    (4) and greedy (ARGOS_BEAM_SIZE=1). A package without a MiniSBD model fails here: the client downloads one."""
    home = make_argos_home(tmp_path)
    install_package(home, package[1].package)
    metadata = run_lt_packages(home)
    assert metadata == [[ROOT, "de", "German", "en", "English", sentencepiece_pieces(home, LINES[0])]]
    for beam_size in (4, 1):
        got = client_translate(home, LINES, beam_size=beam_size)
        assert got["splitter"] == ["MiniSBDSentencizer", str(home.packages / ROOT / "minisbd" / "paragraph.onnx")]
        expected = argos_translate(home.packages, LINES, beam_size=beam_size)[1]
        assert got["lines"] == expected and got["text"] == "\n".join(expected)


def run_lt_packages(home: ArgosHome) -> list[list[object]]:
    """The installed packages as the client reads them: directory, codes, names, the pieces of LINES[0]."""
    code = f"""
import json
from argostranslate import package
print(json.dumps([[p.package_path.name, p.from_code, p.from_name, p.to_code, p.to_name,
                   p.tokenizer.encode({LINES[0]!r})] for p in package.get_installed_packages()]))
"""
    return json.loads(run_lt(code, home))


def sentencepiece_pieces(home: ArgosHome, line: str) -> list[str]:
    spm = sentencepiece.SentencePieceProcessor(model_file=str(home.packages / ROOT / "sentencepiece.model"))
    return spm.encode(line, out_type=str)


# ---------------------------------------------------------------- errors


def test_separate_vocabularies_are_refused(vocabs: dict[bool, Vocab], tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "model.pt", vocabs[False])
    with pytest.raises(NmtError, match="separate source and target vocabularies") as err:
        export_argos(ckpt, tmp_path / "x.argosmodel", from_name="German", to_name="English")
    assert "vocab.joint: true" in str(err.value) and "\n" not in err.value.message
    assert list(tmp_path.iterdir()) == [ckpt]


def test_recurrent_checkpoint_is_refused(vocabs: dict[bool, Vocab], tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "rnn.pt", vocabs[True], arch="rnn", enc_layers=1, dec_layers=1)
    with pytest.raises(CheckpointError, match="recurrent"):
        export_argos(ckpt, tmp_path / "x.argosmodel", from_name="German", to_name="English")
    assert list(tmp_path.iterdir()) == [ckpt]


def test_existing_package_and_bad_targets(
    package: tuple[Path, ArgosResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    ckpt = package[0]
    out = tmp_path / "de_en.argosmodel"
    names = dict(from_name="German", to_name="English")
    export_argos(ckpt, out, **names)
    assert "model.max_len is 48" in capsys.readouterr().err  # Argos lets outputs run to 256 tokens
    before = out.read_bytes()
    with pytest.raises(NmtError, match="file exists") as err:
        export_argos(ckpt, out, **names)
    assert "--force" in str(err.value) and out.read_bytes() == before

    real_write = zipfile.ZipFile.write
    calls = {"n": 0}

    def fail(self, *args, **kwargs):  # the disk fills up half way through the archive
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("No space left on device")
        return real_write(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(zipfile.ZipFile, "write", fail)
        with pytest.raises(OSError, match="No space"):
            export_argos(ckpt, out, **names, force=True)
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [out.name]
    export_argos(ckpt, out, **names, quantization="int8", force=True)
    assert out.read_bytes() != before and [p.name for p in tmp_path.iterdir()] == [out.name]

    other = tmp_path / "notes.argosmodel"
    other.write_text("keep")
    with pytest.raises(NmtError, match="not a zip archive"):
        export_argos(ckpt, other, **names, force=True)
    assert other.read_text() == "keep"
    with pytest.raises(NmtError, match="ending in .argosmodel"):
        export_argos(ckpt, tmp_path / "de_en.zip", **names)
    (tmp_path / "dir.argosmodel").mkdir()
    with pytest.raises(NmtError, match="is a directory"):
        export_argos(ckpt, tmp_path / "dir.argosmodel", **names, force=True)
    with pytest.raises(NmtError, match="not a Stanza sentence-splitting model for 'de'") as err:
        export_argos(ckpt, tmp_path / "sbd.argosmodel", **names, stanza_model=stanza_dir(tmp_path / "st", lang="en"))
    assert "stanza.download('de'" in str(err.value)
    with pytest.raises(NmtError, match="--from-name"):
        export_argos(ckpt, tmp_path / "name.argosmodel", from_name=" ", to_name="English")
    left = ["de_en.argosmodel", "dir.argosmodel", "notes.argosmodel", "st"]
    assert sorted(p.name for p in tmp_path.iterdir()) == left


def test_sbd_model(package: tuple[Path, ArgosResult], tmp_path: Path) -> None:
    """--sbd-model FILE.onnx replaces paragraph.onnx; a directory (Stanza's, as --sbd-model once took) is a
    one-paragraph error that names the clients that read each kind; a file that is not .onnx is refused."""
    ckpt, names = package[0], dict(from_name="German", to_name="English")
    model = tmp_path / "de.onnx"
    model.write_bytes(b"a MiniSBD model")  # copied as it is: the client reads it
    result = export_argos(ckpt, tmp_path / "out" / "a.argosmodel", **names, sbd_model=model)
    with zipfile.ZipFile(result.package) as zf:
        assert [n for n in zf.namelist() if "/minisbd/" in n] == [f"{ROOT}/minisbd/", f"{ROOT}/minisbd/de.onnx"]
        assert zf.read(f"{ROOT}/minisbd/de.onnx") == b"a MiniSBD model"
        assert "`minisbd/de.onnx`" in zf.read(f"{ROOT}/README.md").decode()
    stanza = stanza_dir(tmp_path / "stanza")
    with pytest.raises(NmtError, match="is a directory, but --sbd-model takes a MiniSBD model file") as err:
        export_argos(ckpt, tmp_path / "out" / "b.argosmodel", **names, sbd_model=stanza)
    assert "\n" not in err.value.message and "argos-translate-lt" in err.value.message
    assert "argostranslate 1.10 and earlier" in err.value.message and f"--stanza-model {stanza}" in str(err.value.hint)
    with pytest.raises(NmtError, match="not a MiniSBD model file"):
        export_argos(ckpt, tmp_path / "out" / "c.argosmodel", **names, sbd_model=stanza / "resources.json")
    with pytest.raises(NmtError, match="not a MiniSBD model file"):
        export_argos(ckpt, tmp_path / "out" / "c.argosmodel", **names, sbd_model=tmp_path / "missing.onnx")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.argosmodel"]


@pytest.mark.slow  # `nmt export --argos` subprocesses
def test_cli(package: tuple[Path, ArgosResult], tmp_path: Path) -> None:
    ckpt, out = str(package[0]), tmp_path / "de_en.argosmodel"
    done = run_nmt("export", ckpt, "--argos", str(out), "--lang-name", "German")
    assert done.returncode == 2 and "--lang-name 'German': write CODE=NAME" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    for args in ([], ["-o", str(tmp_path / "dir"), "--argos", str(out)]):
        done = run_nmt("export", ckpt, *args, "--from-name", "German", "--to-name", "English")
        assert done.returncode == 2 and "give one of -o DIR" in done.stderr and "Traceback" not in done.stderr
    names = ["--from-name", "German", "--to-name", "English"]
    done = run_nmt("export", ckpt, "-o", str(tmp_path / "dir"), "--stanza-model", str(tmp_path))
    assert done.returncode == 2 and "go with --argos FILE" in done.stderr and "Traceback" not in done.stderr
    done = run_nmt("export", ckpt, "--argos", str(out), *names, "--sbd-model", str(tmp_path))
    assert done.returncode == 2 and "--stanza-model" in done.stderr and "Traceback" not in done.stderr
    done = run_nmt("export", ckpt, "--argos", str(out), *names, "-q", "int8")
    assert done.returncode == 0, done.stderr
    with zipfile.ZipFile(out) as zf:
        assert json.loads(zf.read(f"{ROOT}/model/nmt.json"))["quantization"] == "int8"
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


# ---------------------------------------------------------------- multilingual models: a package per direction


def test_a_multilingual_model_becomes_one_package_per_direction(tmp_path: Path) -> None:
    """Each package carries the same CTranslate2 model (no start token of its own), its target language token
    as target_prefix, ISO 639-1 names unless --lang-name gives one; --direction picks some."""
    from nmt.export.argos import export_argos_packages
    from tests.conftest import random_multilingual_checkpoint

    ckpt = random_multilingual_checkpoint(tmp_path / "m")
    results = export_argos_packages(ckpt, tmp_path / "pkgs", lang_names={"de": "Deutsch"})
    assert [(r.from_code, r.to_code, r.target_prefix) for r in results] == [
        ("en", "de", ">>de<<"), ("en", "fr", ">>fr<<"), ("de", "en", ">>en<<"),
    ]  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "pkgs").iterdir()) == [
        "de_en.argosmodel",
        "en_de.argosmodel",
        "en_fr.argosmodel",
    ]  # fmt: skip (no temp export left)
    models = set()
    for r in results:
        root = f"translate-{r.from_code}_{r.to_code}-nmt-1_0"
        with zipfile.ZipFile(r.package) as zf:
            metadata = json.loads(zf.read(f"{root}/metadata.json"))
            config = json.loads(zf.read(f"{root}/model/config.json"))
            models.add(zf.read(f"{root}/model/model.bin"))
            assert f"{root}/minisbd/paragraph.onnx" in zf.namelist()
        names = {"en": "English", "de": "Deutsch", "fr": "French"}
        assert metadata["target_prefix"] == r.target_prefix
        assert (metadata["from_name"], metadata["to_name"]) == (names[r.from_code], names[r.to_code])
        assert config["decoder_start_token"] is None  # the prefix starts the decoder, as nmt's token does
    assert len(models) == 1
    picked = export_argos_packages(ckpt, tmp_path / "some", directions=["de-en"], quantization="int8")
    assert [p.package.name for p in picked] == ["de_en.argosmodel"]
    assert [p.name for p in (tmp_path / "some").iterdir()] == ["de_en.argosmodel"]


def test_what_a_multilingual_package_export_refuses(tmp_path: Path) -> None:
    from nmt.export.argos import export_argos_packages, parse_lang_names
    from tests.conftest import random_multilingual_checkpoint

    ckpt = random_multilingual_checkpoint(tmp_path / "m")
    with pytest.raises(
        NmtError, match=r"--direction fr-de: .* not trained on it; its directions are en-de, en-fr, de-en"
    ):
        export_argos_packages(ckpt, tmp_path / "out", directions=["fr-de"])
    with pytest.raises(NmtError, match="names a directory"):
        export_argos_packages(ckpt, tmp_path / "all.argosmodel")
    with pytest.raises(NmtError, match="--from-name and --to-name name a bilingual model"):
        export_argos_packages(ckpt, tmp_path / "out", from_name="German")
    with pytest.raises(NmtError, match="write CODE=NAME"):
        parse_lang_names(["German"])
    assert parse_lang_names(["de=Deutsch", "fr = Français "]) == {"de": "Deutsch", "fr": "Français"}
    tagged = random_multilingual_checkpoint(tmp_path / "s", lang_token="source")
    with pytest.raises(NmtError, match=r"source-side tag .* only as the decoder's first token \(target_prefix\)"):
        export_argos_packages(tagged, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "all.argosmodel").exists()


def test_bilingual_names_default_to_iso_639_1_and_an_unknown_code_needs_one(
    package: tuple[Path, ArgosResult], vocabs: dict[bool, Vocab], tmp_path: Path
) -> None:
    ckpt = package[0]
    result = export_argos(ckpt, tmp_path / "a.argosmodel", lang_names={"en": "Englisch"})
    with zipfile.ZipFile(result.package) as zf:
        metadata = json.loads(zf.read(f"{ROOT}/metadata.json"))
    assert (metadata["from_name"], metadata["to_name"]) == ("German", "Englisch") and "target_prefix" not in metadata
    with pytest.raises(NmtError, match="--direction picks directions of a multilingual model"):
        export_argos(ckpt, tmp_path / "b.argosmodel", directions=["de-en"])
    odd = write_checkpoint(tmp_path / "odd.pt", vocabs[True], langs=("gsw", "en"))  # Swiss German: ISO 639-2 only
    with pytest.raises(NmtError, match=r"no name for language code 'gsw'") as err:
        export_argos(odd, tmp_path / "c.argosmodel")
    assert "--from-name NAME" in str(err.value.hint)
    assert export_argos(odd, tmp_path / "c.argosmodel", lang_names={"gsw": "Swiss German"}).from_code == "gsw"
