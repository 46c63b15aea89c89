"""Argos Translate packages: the layout argostranslate 1.9.6 reads, `nmt translate`'s translations, clear errors.

argostranslate is not a dependency (its own pins pull in stanza and torch versions), so the
consumer test replays the calls argostranslate 1.9.6 makes on an installed package, each next to
the place in its source it comes from. Where argostranslate is installed, a second test installs
the package with it and translates through its own function.
"""

from __future__ import annotations

import importlib.util
import json
import zipfile
from pathlib import Path
from types import SimpleNamespace

import ctranslate2
import pytest
import sentencepiece
import torch

from nmt.checkpoint import build_checkpoint, save_checkpoint
from nmt.config import config_from_dict
from nmt.data.vocab import Vocab
from nmt.decode.translate import load_for_decoding, translate_lines
from nmt.errors import CheckpointError, NmtError
from nmt.export import argos
from nmt.export.argos import ArgosResult, export_argos
from nmt.model import build_model
from nmt.tokens import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from tests.conftest import run_nmt
from tests.corpora import reverse_pairs, toy_vocabs

PAIRS = reverse_pairs(300, seed=7)
LINES = [p[0] for p in reverse_pairs(12, seed=11)]
ROOT = "translate-de_en-nmt-1_0"


@pytest.fixture(scope="module")
def vocabs() -> dict[bool, Vocab]:
    return toy_vocabs(PAIRS)


def write_checkpoint(path: Path, vocab: Vocab, **model: object) -> Path:
    """A checkpoint of a random de->en model. A Transformer's outputs end by EOS at varied lengths and
    never hold pad, bos or unk, as a trained model's (Argos's search suppresses none of them)."""
    cfg = config_from_dict(
        {
            "data": {"src_lang": "de", "tgt_lang": "en"},
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
    sbd = stanza_dir(tmp / "stanza")
    result = export_argos(ckpt, tmp / "out" / "de_en.argosmodel", from_name="German", to_name="English", sbd_model=sbd)
    return ckpt, result


def test_package_layout(package: tuple[Path, ArgosResult], vocabs: dict[bool, Vocab]) -> None:
    _, result = package
    assert result.root == ROOT and (result.from_code, result.to_code) == ("de", "en") and result.step == 7
    assert [p.name for p in result.package.parent.iterdir()] == ["de_en.argosmodel"]  # no temp file left
    with zipfile.ZipFile(result.package) as zf:
        names = zf.namelist()
        assert {name.split("/")[0] for name in names} == {ROOT}  # one top-level directory
        files = {name.removeprefix(f"{ROOT}/") for name in names if not name.endswith("/")}
        expected = {"metadata.json", "sentencepiece.model", "README.md", "stanza/resources.json"}
        expected |= {"stanza/de/tokenize/gsd.pt", *(f"model/{n}" for n in ("model.bin", "config.json", "nmt.json"))}
        assert expected <= files, expected - files
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
    """Install a package and translate one sentence per line as argostranslate 1.9.6 does."""
    # package.py, get_installed_packages: every directory in the packages directory is a Package
    (pkg,) = [p for p in packages.iterdir() if p.is_dir()]
    # package.py, Package.__init__: metadata.json, then SentencePieceTokenizer(package_path / "sentencepiece.model")
    metadata = json.loads((pkg / "metadata.json").read_text())
    sp = sentencepiece.SentencePieceProcessor(model_file=str(pkg / "sentencepiece.model"))
    # translate.py, PackageTranslation.hypotheses: ctranslate2.Translator(str(package_path / "model"), device=...)
    translator = ctranslate2.Translator(str(pkg / "model"), device="cpu")
    # translate.py, apply_packaged_translation: tokenizer.py's SentencePieceTokenizer.encode per sentence ...
    tokenized = [sp.encode(line, out_type=str) for line in lines]
    # ... then this call (its beam_size is max(num_hypotheses, 4)) ...
    results = translator.translate_batch(
        tokenized,
        target_prefix=None,
        replace_unknowns=True,
        max_batch_size=32,
        beam_size=beam_size,
        num_hypotheses=1,
        length_penalty=0.2,
        return_scores=True,
    )
    texts = []
    for result in results:
        # ... SentencePieceTokenizer.decode: "".join(tokens).replace("▁", " "), then one leading space dropped
        value = "".join(result.hypotheses[0]).replace("▁", " ")
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


@pytest.mark.skipif(importlib.util.find_spec("argostranslate") is None, reason="argostranslate is not installed")
def test_with_argostranslate(
    package: tuple[Path, ArgosResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ARGOS_PACKAGES_DIR", "XDG_DATA_HOME", "XDG_CACHE_HOME"):  # read when argostranslate is imported
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    from argostranslate import package as argos_package
    from argostranslate import settings
    from argostranslate import translate as argos_translation

    packages = tmp_path / "packages"
    packages.mkdir()
    monkeypatch.setattr(settings, "package_data_dir", packages)  # where argostranslate was imported before
    monkeypatch.setattr(settings, "package_dirs", [packages])
    argos_package.install_from_path(package[1].package)
    (pkg,) = argos_package.get_installed_packages()
    assert (pkg.from_code, pkg.from_name, pkg.to_code, pkg.to_name) == ("de", "German", "en", "English")
    assert pkg.tokenizer.encode(LINES[0]) == sentencepiece.SentencePieceProcessor(
        model_file=str(pkg.package_path / "sentencepiece.model")
    ).encode(LINES[0], out_type=str)

    class OneSentence:  # Stanza's splitter (the package's model is fake): the line is one sentence
        def __init__(self, **kwargs: object) -> None:
            assert Path(str(kwargs["dir"])) == pkg.package_path / "stanza"

        def __call__(self, text: str) -> SimpleNamespace:
            return SimpleNamespace(sentences=[SimpleNamespace(text=text)])

    monkeypatch.setattr(argos_translation.stanza, "Pipeline", OneSentence)
    monkeypatch.setattr(settings, "stanza_available", True)
    translator = ctranslate2.Translator(str(pkg.package_path / "model"), device="cpu")
    got = [argos_translation.apply_packaged_translation(pkg, line, translator, 1)[0].value for line in LINES]
    assert got == argos_translate(packages, LINES, beam_size=4)[1]  # the replay above is Argos's


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

    def fail(root: Path, dest: Path) -> None:  # the disk fills up half way through the archive
        dest.write_bytes(b"PK\x03\x04 half")
        raise OSError("No space left on device")

    with monkeypatch.context() as m:
        m.setattr(argos, "_write_zip", fail)
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
        export_argos(ckpt, tmp_path / "sbd.argosmodel", **names, sbd_model=stanza_dir(tmp_path / "st", lang="en"))
    assert "stanza.download('de'" in str(err.value)
    with pytest.raises(NmtError, match="--from-name"):
        export_argos(ckpt, tmp_path / "name.argosmodel", from_name=" ", to_name="English")
    left = ["de_en.argosmodel", "dir.argosmodel", "notes.argosmodel", "st"]
    assert sorted(p.name for p in tmp_path.iterdir()) == left


def test_cli(package: tuple[Path, ArgosResult], tmp_path: Path) -> None:
    ckpt, out = str(package[0]), tmp_path / "de_en.argosmodel"
    done = run_nmt("export", ckpt, "--argos", str(out), "--to-name", "English")
    assert done.returncode == 2 and "--from-name" in done.stderr and "Traceback" not in done.stderr
    for args in ([], ["-o", str(tmp_path / "dir"), "--argos", str(out)]):
        done = run_nmt("export", ckpt, *args, "--from-name", "German", "--to-name", "English")
        assert done.returncode == 2 and "give one of -o DIR" in done.stderr and "Traceback" not in done.stderr
    done = run_nmt("export", ckpt, "--argos", str(out), "--from-name", "German", "--to-name", "English", "-q", "int8")
    assert done.returncode == 0, done.stderr
    with zipfile.ZipFile(out) as zf:
        assert json.loads(zf.read(f"{ROOT}/model/nmt.json"))["quantization"] == "int8"
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]
