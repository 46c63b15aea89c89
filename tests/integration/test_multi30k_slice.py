"""A 3,000-pair slice of Multi30k de->en through prepare -> train -> evaluate (CLI)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nmt.config import load_config
from nmt.data.prepare import prepare
from nmt.evaluate.buckets import DEFAULT_BOUNDARIES
from nmt.evaluate.report import evaluate
from nmt.train.loop import train
from tests.conftest import ROOT, THREADS, run_nmt


def slice_of(multi30k: Path, tmp_path: Path, *, train: int, valid: int, test: int) -> list[str]:
    """Write the first lines of Multi30k's train/val/test_2016_flickr into `tmp_path`; the --set values using them."""
    for split, n in (("train", train), ("val", valid), ("test_2016_flickr", test)):
        for lang in ("de", "en"):
            with gzip.open(multi30k / f"{split}.{lang}.gz", "rt", encoding="utf-8") as fh:
                lines = [next(fh) for _ in range(n)]
            (tmp_path / f"{split}.{lang}").write_text("".join(lines), encoding="utf-8")
    return [
        f"workdir={tmp_path / 'exp'}",
        f"data.splits.train={tmp_path / 'train'}",
        f"data.splits.valid={tmp_path / 'val'}",
        f"data.splits.test_2016_flickr={tmp_path / 'test_2016_flickr'}",
        "data.splits.test_2017_flickr=null",
    ]


@pytest.mark.slow
def test_multi30k_slice_trains_and_scores_like_sacrebleu(tmp_path: Path, multi30k: Path) -> None:
    sets = [
        *slice_of(multi30k, tmp_path, train=3000, valid=100, test=100),
        "vocab.size=2000",
        "model.preset=tiny",
        "train.max_steps=120",
        "train.valid_every=60",
        "train.batch_tokens=2048",
        "train.warmup_steps=60",
        "train.lr=2e-3",
        "train.device=cpu",
        "decode.beam=2",
    ]
    config = str(ROOT / "configs" / "multi30k_de_en.yaml")
    args = [a for s in sets for a in ("--set", s)]
    for command in ("prepare", "train"):
        result = run_nmt(command, config, *args, env={"OMP_NUM_THREADS": THREADS}, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(x) for x in (tmp_path / "exp" / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["event"] == "valid"]
    assert len(valid) == 2 and valid[1]["loss"] < valid[0]["loss"]
    result = run_nmt("evaluate", config, "--split", "test_2016_flickr", "--json", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    ours = json.loads(result.stdout)
    hyp = tmp_path / "exp" / "checkpoints" / "best.test_2016_flickr.hyp"
    assert len(hyp.read_text().splitlines()) == 100
    sacrebleu = str(Path(sys.executable).with_name("sacrebleu"))

    def cli(metric: str) -> float:
        out = subprocess.run(
            [sacrebleu, str(tmp_path / "test_2016_flickr.en"), "-i", str(hyp), "-m", metric, "-b", "-w", "4"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return float(out.strip())

    bleu, chrf = cli("bleu"), cli("chrf")
    assert ours["scores"]["bleu"] == pytest.approx(bleu, abs=1e-4)
    assert ours["scores"]["chrf"] == pytest.approx(chrf, abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["seq2seq", "bahdanau", "luong"])
def test_recurrent_configs_train_and_score_by_length(tmp_path: Path, multi30k: Path, family: str) -> None:
    """The shipped recurrent configs, shrunk, through prepare -> train -> evaluate by length, in this
    process (the CLI around the same calls is the transformer test's above: here each subprocess
    would spend more time importing torch than training)."""
    sets = [
        *slice_of(multi30k, tmp_path, train=1000, valid=50, test=100),
        "vocab.size=1000",
        "model.d_model=64",
        "train.max_steps=40",
        "train.valid_every=20",
        "train.batch_tokens=1024",
        "train.lr=3e-3",
        "train.device=cpu",
        "decode.beam=2",
    ]
    config = ROOT / "configs" / f"multi30k_de_en_{family}.yaml"
    cfg = load_config(config, sets)
    assert cfg.model.arch == "rnn"
    prepare(cfg)
    train(cfg)
    records = [json.loads(x) for x in (tmp_path / "exp" / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["event"] == "valid"]
    assert len(valid) == 2 and valid[1]["loss"] < valid[0]["loss"]
    (report,) = evaluate(config, split="test_2016_flickr", overrides=sets, boundaries=DEFAULT_BOUNDARIES)
    assert report.by_length is not None and sum(b.sentences for b in report.by_length) == 100
    assert report.lines == 100
