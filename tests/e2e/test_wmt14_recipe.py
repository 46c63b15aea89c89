"""The WMT14 en->de recipe: its config, its download script (fake mirror), its steps (synthetic corpus)."""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import subprocess
import tarfile
from pathlib import Path

import pytest
import sentencepiece as spm

from nmt.config import load_config
from nmt.train.optim import lr_at
from tests.conftest import ROOT, run_nmt
from tests.corpora import FAST, write_split

pytestmark = pytest.mark.slow  # the recipe's own commands in subprocesses: `make test-fast` skips them

CONFIG = ROOT / "configs" / "wmt14_en_de.yaml"
SCRIPT = ROOT / "scripts" / "get_wmt14_en_de.sh"


def test_config_has_the_published_transformer_base_settings() -> None:
    cfg = load_config(CONFIG)
    m = cfg.model
    assert (m.d_model, m.n_heads, m.ffn_dim, m.enc_layers, m.dec_layers) == (512, 8, 2048, 6, 6)
    assert (m.dropout, m.norm, m.share_embeddings) == (0.1, "post", "all")
    assert (cfg.vocab.type, cfg.vocab.size, cfg.vocab.joint, cfg.vocab.byte_fallback) == ("bpe", 32000, True, True)
    t = cfg.train
    assert (t.betas, t.eps, t.warmup_steps, t.label_smoothing, t.max_steps) == ((0.9, 0.98), 1e-9, 4000, 0.1, 100_000)
    # Vaswani et al.'s eq. 3 peaks at d_model^-0.5 * warmup^-0.5 = 6.99e-4 at the end of warmup
    assert lr_at(4000, t, d_model=512) == pytest.approx(6.99e-4, rel=1e-3)
    assert lr_at(2000, t, d_model=512) == pytest.approx(6.99e-4 / 2, rel=1e-3)
    assert lr_at(16000, t, d_model=512) == pytest.approx(6.99e-4 / 2, rel=1e-3)
    # ~25k target tokens per update on 8 GPUs: 8 x 3584 padded tokens (the longer side)
    assert 24_000 <= 8 * t.batch_tokens * t.accum_steps <= 33_000
    d = cfg.decode
    assert (d.beam, d.length_penalty, d.alpha, d.max_len_a, d.max_len_b) == (4, "gnmt", 0.6, 1.0, 50)
    assert (cfg.data.src_lang, cfg.data.tgt_lang) == ("en", "de")
    nmt_data = Path(os.environ["NMT_DATA"])
    assert {k: s.prefix for k, s in cfg.data.splits.items()} == {
        split: str(nmt_data / "wmt14_en_de" / split) for split in ("train", "valid", "test")
    }


# ---------------------------------------------------------------- the download script on a fake mirror

PARTS = {  # archive -> (member prefix, line count) of the training corpora, in concatenation order
    "wmt13/training-parallel-europarl-v7.tgz": ("training/europarl-v7.de-en", 5),
    "wmt13/training-parallel-commoncrawl.tgz": ("commoncrawl.de-en", 4),
    "wmt14/training-parallel-nc-v9.tgz": ("training/news-commentary-v9.de-en", 3),
}
COUNTS = {
    "WMT14_LINES_EUROPARL": "5",
    "WMT14_LINES_COMMONCRAWL": "4",
    "WMT14_LINES_NC": "3",
    "WMT14_LINES_VALID": "2",
    "WMT14_LINES_TEST": "3",
}
SGM_EN = """<srcset setid="newstest2014" srclang="any">
<doc sysid="ref" docid="1012-bbc" genre="news" origlang="en">
<p>
<seg id="1">Gutach: Increased safety for pedestrians</seg>
<seg id="2">  They are not\teven  100 metres apart: AT&amp;T </seg>
</p>
<seg id="3">Second <i>doc</i></seg>
</doc>
</srcset>
"""
SGM_DE = """<refset setid="newstest2014" srclang="any" trglang="de">
<doc sysid="ref" docid="1012-bbc" genre="news" origlang="en">
<seg id="1">Gutach: Noch mehr Sicherheit für Fußgänger</seg>
<seg id="2">Sie stehen keine 100 Meter voneinander entfernt</seg>
<seg id="3">Zweites   Dokument</seg>
</doc>
</refset>
"""


def lines_of(name: str, lang: str, n: int) -> str:
    return "".join(f"{name} {lang} Zeile {i} – ü\n" for i in range(n))


def write_tgz(path: Path, members: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def fake_mirror(root: Path, *, dev_de_lines: int = 2) -> Path:
    """Archives with the real ones' internal layout (plus a member of another pair, to be ignored)."""
    for archive, (prefix, n) in PARTS.items():
        name = prefix.rsplit("/", 1)[-1]
        members = {f"{prefix}.{lang}": lines_of(name, lang, n) for lang in ("en", "de")}
        members[prefix.replace("de-en", "fr-en") + ".fr"] = lines_of("other", "fr", 7)
        write_tgz(root / archive, members)
    write_tgz(
        root / "wmt14/dev.tgz",
        {
            "dev/newstest2013.en": lines_of("newstest2013", "en", 2),
            "dev/newstest2013.de": lines_of("newstest2013", "de", dev_de_lines),
            "dev/newstest2012.de": lines_of("newstest2012", "de", 9),
        },
    )
    write_tgz(
        root / "wmt14/test-full.tgz",
        {"test-full/newstest2014-deen-src.en.sgm": SGM_EN, "test-full/newstest2014-deen-ref.de.sgm": SGM_DE},
    )
    return root


def get_wmt14(dest: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), str(dest)],
        env={**os.environ, **COUNTS, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def gz_lines(path: Path) -> list[str]:
    return gzip.decompress(path.read_bytes()).decode().splitlines()


def test_download_script_builds_the_splits_from_a_mirror_then_is_a_noop(tmp_path: Path) -> None:
    mirror = fake_mirror(tmp_path / "mirror")
    dest = tmp_path / "data"
    first = get_wmt14(dest, WMT14_URL=f"file://{mirror}")
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("downloading") == 5
    assert f"export NMT_DATA={dest}" in first.stdout
    out = dest / "wmt14_en_de"
    for lang in ("en", "de"):
        expected = "".join(lines_of(prefix.rsplit("/", 1)[-1], lang, n) for prefix, n in PARTS.values())
        assert gz_lines(out / f"train.{lang}.gz") == expected.splitlines()  # 5 + 4 + 3 pairs, in order
        assert gz_lines(out / f"valid.{lang}.gz") == lines_of("newstest2013", lang, 2).splitlines()
    # the <seg> text as sacreBLEU extracts it: trimmed, whitespace collapsed, inner markup and entities kept
    assert gz_lines(out / "test.en.gz") == [
        "Gutach: Increased safety for pedestrians",
        "They are not even 100 metres apart: AT&amp;T",
        "Second <i>doc</i>",
    ]
    assert gz_lines(out / "test.de.gz")[2] == "Zweites Dokument"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["orig"] + [f"{s}.{lang}.gz" for s in ("train", "valid", "test") for lang in ("en", "de")]
    )
    assert sorted(p.name for p in (out / "orig").iterdir()) == sorted(
        Path(a).name for a in [*PARTS, "dev.tgz", "test-full.tgz"]
    )

    # complete splits are not rebuilt: no archive is needed and an unreachable URL proves nothing is downloaded
    for archive in (out / "orig").iterdir():
        archive.unlink()
    second = get_wmt14(dest, WMT14_URL="http://127.0.0.1:9/none")
    assert second.returncode == 0, second.stderr
    assert "downloading" not in second.stdout and "ready" in second.stdout
    # an incomplete split is rebuilt, and only its archive downloaded
    (out / "valid.de.gz").write_bytes(gzip.compress(b"truncated\n"))
    third = get_wmt14(dest, WMT14_URL=f"file://{mirror}")
    assert third.returncode == 0, third.stderr
    assert third.stdout.count("downloading") == 1 and "downloading wmt14/dev.tgz" in third.stdout
    assert gz_lines(out / "valid.de.gz") == lines_of("newstest2013", "de", 2).splitlines()


def test_sgm_extraction_matches_sacrebleu(tmp_path: Path) -> None:
    from sacrebleu.dataset import DATASETS

    mirror = fake_mirror(tmp_path / "mirror")
    assert get_wmt14(tmp_path / "data", WMT14_URL=f"file://{mirror}").returncode == 0
    for lang, text in (("en", SGM_EN), ("de", SGM_DE)):
        (tmp_path / f"in.{lang}.sgm").write_text(text, encoding="utf-8")
        DATASETS["wmt14/full"]._convert_format(str(tmp_path / f"in.{lang}.sgm"), str(tmp_path / f"ref.{lang}"))
        ours = gz_lines(tmp_path / "data" / "wmt14_en_de" / f"test.{lang}.gz")
        assert ours == (tmp_path / f"ref.{lang}").read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize(
    ("mirror_args", "env", "message"),
    [
        ({}, {"WMT14_LINES_COMMONCRAWL": "2399123"}, "commoncrawl.de-en.en has 4 lines, expected 2399123"),
        ({"dev_de_lines": 1}, {}, "newstest2013.de has 1 lines, expected 2"),  # the two sides differ
    ],
)
def test_download_script_reports_a_wrong_line_count(
    tmp_path: Path, mirror_args: dict[str, int], env: dict[str, str], message: str
) -> None:
    mirror = fake_mirror(tmp_path / "mirror", **mirror_args)
    result = get_wmt14(tmp_path / "data", WMT14_URL=f"file://{mirror}", **env)
    assert result.returncode == 1
    assert message in " ".join(result.stderr.split()) and "set WMT14_LINES_" in " ".join(result.stderr.split())
    assert "ready" not in result.stdout
    out = tmp_path / "data" / "wmt14_en_de"
    # nothing half-built is left to pass for a complete split: no .part files, no extracted members
    written = {p.name for p in out.iterdir()} - {"orig"}
    assert written <= {"train.en.gz", "train.de.gz"} and not (out / "orig" / "x").exists()
    assert not list(out.rglob("*.part"))


def test_download_script_reports_an_unreachable_mirror(tmp_path: Path) -> None:
    result = get_wmt14(tmp_path / "data", WMT14_URL="http://127.0.0.1:9/none")
    assert result.returncode == 1
    message = " ".join(result.stderr.split())
    assert "could not download http://127.0.0.1:9/none/wmt13/training-parallel-europarl-v7.tgz" in message
    assert not list((tmp_path / "data").rglob("*.part"))


# ---------------------------------------------------------------- the recipe's steps on a synthetic corpus

EN_DE = {
    "the": "der",
    "small": "kleine",
    "green": "grüne",
    "house": "haus",
    "street": "straße",
    "is": "ist",
    "near": "nahe",
    "old": "alte",
    "bridge": "brücke",
    "and": "und",
    "big": "große",
    "tree": "baum",
    "in": "in",
    "town": "stadt",
    "river": "fluss",
    "beautiful": "schöne",
}


def synthetic_pairs(n: int, *, seed: int) -> list[tuple[str, str]]:
    """English-like sources and their word-for-word German-like targets, 4 to 9 words each."""
    rng = random.Random(seed)
    words = sorted(EN_DE)
    pairs = []
    for _ in range(n):
        src = [rng.choice(words) for _ in range(rng.randint(4, 9))]
        pairs.append((" ".join(src).capitalize() + ".", " ".join(EN_DE[w] for w in src).capitalize() + "."))
    return pairs


def test_recipe_steps_run_on_a_synthetic_corpus(tmp_path: Path) -> None:
    data = tmp_path / "nmt_data" / "wmt14_en_de"  # the files get_wmt14_en_de.sh writes
    for split, n, seed in (("train", 300, 1), ("valid", 12, 2), ("test", 12, 3)):
        write_split(data, split, synthetic_pairs(n, seed=seed), gz=True, src="en", tgt="de")
    env = {"NMT_DATA": str(tmp_path / "nmt_data")}
    shrink = FAST + [
        f"workdir={tmp_path / 'exp'}",
        "vocab.size=300",
        "train.device=cpu",
        "decode.device=cpu",
        "train.max_steps=2",
        "train.valid_every=1",
        "train.log_every=1",
    ]
    sets = [a for o in shrink for a in ("--set", o)]

    prepared = run_nmt("prepare", str(CONFIG), *sets, env=env)
    assert prepared.returncode == 0, prepared.stderr
    (model,) = (tmp_path / "exp").rglob("spm.model")  # joint: one model
    vocab = spm.SentencePieceProcessor(model_file=str(model))
    assert vocab.get_piece_size() == 300 and vocab.encode("Ω", out_type=str)[-2:] == ["<0xCE>", "<0xA9>"]
    trained = run_nmt("train", str(CONFIG), *sets, env=env)
    assert trained.returncode == 0, trained.stderr
    checkpoints = tmp_path / "exp" / "checkpoints"
    assert (checkpoints / "step_1.pt").is_file() and (checkpoints / "step_2.pt").is_file()
    averaged = run_nmt("average", "--last", "2", str(tmp_path / "exp"), env=env)
    assert averaged.returncode == 0, averaged.stderr
    evaluated = run_nmt(
        "evaluate", str(CONFIG), "--split", "test", "--checkpoint", "averaged", "--json", *sets, env=env
    )
    assert evaluated.returncode == 0, evaluated.stderr
    record = json.loads(evaluated.stdout)
    assert record["split"] == "test" and record["refs"] == [str(data / "test.de.gz")]
    assert record["checkpoint"] == str(checkpoints / "averaged.pt") and record["step"] == 2
    assert (record["decode"]["length_penalty"], record["decode"]["alpha"]) == ("gnmt", 0.6)
    assert len(Path(record["hyp"]).read_text(encoding="utf-8").splitlines()) == 12
    assert 0.0 <= record["scores"]["bleu"] <= 100.0
