"""`nmt evaluate --by-length / --plot / several --hyp`: per-bucket scores equal the sacrebleu CLI's on
exactly that bucket's lines, buckets cover the corpus, several systems share one plot."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TinyCheckpoint, run_nmt

SACREBLEU = Path(sys.executable).parent / "sacrebleu"
WORDS = "the a dog cat runs over green grass near big small red house".split()
# source word counts: both sides of every default boundary, plus random lengths
LENGTHS = [0, 1, 9, 10, 19, 20, 29, 30, 45] + [random.Random(5).randint(1, 40) for _ in range(51)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """src/ref (60 lines) and two noisy systems, `good` (drops 15% of words) and `poor` (40%)."""
    tmp = tmp_path_factory.mktemp("by_length")
    rng = random.Random(3)
    src = [" ".join(rng.choice(WORDS) for _ in range(n)) for n in LENGTHS]
    ref = [" ".join(reversed(s.split())).upper() for s in src]

    def noisy(drop: float) -> list[str]:
        return [" ".join(w for w in r.split() if rng.random() > drop) for r in ref]

    files = {"src": src, "ref": ref, "good": noisy(0.15), "poor": noisy(0.4)}
    paths = {}
    for name, lines in files.items():
        paths[name] = tmp / f"{name}.txt"
        paths[name].write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return paths


def _sacrebleu(ref: Path, hyp: Path) -> dict[str, float]:
    """BLEU and chrF from the sacrebleu CLI (JSON output, one document per metric)."""
    cmd = [str(SACREBLEU), str(ref), "-i", str(hyp), "-m", "bleu", "chrf", "-w", "4"]
    out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    return {d["name"].lower().rstrip("2"): d["score"] for d in out}  # "BLEU" -> bleu, "chrF2" -> chrf


def _bucket_files(corpus: dict[str, Path], hyp: Path, lo: int, hi: float, tmp: Path) -> tuple[Path, Path, int]:
    """This bucket's reference and hypothesis lines (lo <= source words <= hi) as files of their own."""
    src = corpus["src"].read_text().splitlines()
    ref, hyps = corpus["ref"].read_text().splitlines(), hyp.read_text().splitlines()
    keep = [i for i, s in enumerate(src) if lo <= len(s.split()) <= hi]
    ref_path, hyp_path = tmp / f"ref.{lo}.txt", tmp / f"hyp.{lo}.txt"
    ref_path.write_text("".join(ref[i] + "\n" for i in keep))
    hyp_path.write_text("".join(hyps[i] + "\n" for i in keep))
    return ref_path, hyp_path, len(keep)


def _evaluate(corpus: dict[str, Path], *args: str, systems: tuple[str, ...] = ("good",)) -> subprocess.CompletedProcess:
    hyps = [a for name in systems for a in ("--hyp", str(corpus[name]))]
    return run_nmt("evaluate", *hyps, "--ref", str(corpus["ref"]), "--src", str(corpus["src"]), *args)


@pytest.mark.parametrize(
    ("buckets", "ranges"),
    [(None, [(0, 9), (10, 19), (20, 29), (30, None)]), ("5,15", [(0, 4), (5, 14), (15, None)])],
)
def test_bucket_scores_equal_the_sacrebleu_cli_on_the_bucket_lines(
    corpus: dict[str, Path], tmp_path: Path, buckets: str | None, ranges: list[tuple[int, int | None]]
) -> None:
    result = _evaluate(corpus, "--by-length", "--json", *(["--buckets", buckets] if buckets else []))
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    rows = record["by_length"]
    assert [(b["min_words"], b["max_words"]) for b in rows] == ranges
    assert [b["range"] for b in rows] == [f"{lo}-{hi}" if hi is not None else f"{lo}+" for lo, hi in ranges]
    assert sum(b["sentences"] for b in rows) == record["lines"] == len(LENGTHS)
    scores = []
    for b in rows:
        ref, hyp, n = _bucket_files(corpus, corpus["good"], b["min_words"], b["max_words"] or float("inf"), tmp_path)
        assert b["sentences"] == n > 0
        theirs = _sacrebleu(ref, hyp)
        assert b["bleu"] == pytest.approx(theirs["bleu"], abs=1e-4)
        assert b["chrf"] == pytest.approx(theirs["chrf"], abs=1e-4)
        scores.append(b["bleu"])
    assert len(set(scores)) > 1 and any(0 < s < 100 for s in scores)  # the buckets really differ
    assert "scores" in record and "signatures" in record  # the one-system record keeps its shape


def test_nine_and_ten_words_land_in_different_buckets_and_empty_buckets_are_null(tmp_path: Path) -> None:
    src, ref = tmp_path / "src.txt", tmp_path / "ref.txt"
    src.write_text(" ".join(["w"] * 9) + "\n" + " ".join(["w"] * 10) + "\n")
    ref.write_text("a b c d e\nf g h i j\n")
    result = run_nmt("evaluate", "--hyp", str(ref), "--ref", str(ref), "--src", str(src), "--by-length", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["by_length"]
    assert [b["sentences"] for b in rows] == [1, 1, 0, 0]
    assert rows[0]["bleu"] == pytest.approx(100) and rows[1]["bleu"] == pytest.approx(100)
    assert rows[2]["bleu"] is None and rows[3]["bleu"] is None
    assert rows[2]["chrf"] is None
    table = run_nmt("evaluate", "--hyp", str(ref), "--ref", str(ref), "--src", str(src), "--by-length")
    assert table.returncode == 0 and "source words" in table.stderr and "20-29" in table.stderr


def test_several_systems_labels_plot_and_gate_on_each(corpus: dict[str, Path], tmp_path: Path) -> None:
    plot = tmp_path / "len.png"
    both = ("good", "poor")
    result = _evaluate(corpus, "--plot", str(plot), "--json", systems=both)  # --plot implies --by-length
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert [s["label"] for s in record["systems"]] == ["good", "poor"]
    assert all(len(s["by_length"]) == 4 for s in record["systems"]) and record["plot"] == str(plot)
    good, poor = (s["scores"]["bleu"] for s in record["systems"])
    assert good > poor
    alone = json.loads(_evaluate(corpus, "--json", systems=("poor",)).stdout)
    assert alone["scores"] == record["systems"][1]["scores"]  # each system scored on its own file

    data = plot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 200 * 1024
    import matplotlib.image

    image = matplotlib.image.imread(plot)
    assert image.shape[0] > 200 and image.shape[1] > 300
    assert not list(tmp_path.glob(".*.tmp"))  # written via a temp file, nothing left over

    named = _evaluate(corpus, "--by-length", "--label", "A", "--label", "B", "--json", systems=both)
    assert [s["label"] for s in json.loads(named.stdout)["systems"]] == ["A", "B"]
    gated = _evaluate(corpus, "--fail-under", f"{(good + poor) / 2:.2f}", "--json", systems=both)
    assert gated.returncode == 1
    gated_record = json.loads(gated.stdout)
    assert [s["passed"] for s in gated_record["systems"]] == [True, False] and gated_record["passed"] is False
    assert "1 of 2 systems" in gated.stderr and "poor" in gated.stderr and "Traceback" not in gated.stderr
    table = _evaluate(corpus, "--by-length", systems=both)
    assert table.returncode == 0 and "good BLEU" in table.stderr and "poor chrF" in table.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--by-length"], "--src"),  # no source to measure
        (["--buckets", "10,x"], "--buckets"),
        (["--buckets", "20,10"], "increasing"),
        (["--label", "only-one"], "--label"),  # two systems, one label
    ],
)
def test_bad_options_are_one_paragraph_errors(corpus: dict[str, Path], args: list[str], message: str) -> None:
    hyps = ["--hyp", str(corpus["good"]), "--hyp", str(corpus["poor"])]
    src = [] if args == ["--by-length"] else ["--src", str(corpus["src"])]
    result = run_nmt("evaluate", *hyps, "--ref", str(corpus["ref"]), *src, *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_missing_matplotlib_is_a_clear_error(corpus: dict[str, Path], tmp_path: Path) -> None:
    hide = tmp_path / "hide"
    (hide / "matplotlib").mkdir(parents=True)
    (hide / "matplotlib" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    plot = tmp_path / "len.png"
    hyps = ["--hyp", str(corpus["good"])]
    args = [*hyps, "--ref", str(corpus["ref"]), "--src", str(corpus["src"]), "--plot", str(plot)]
    result = run_nmt("evaluate", *args, env={"PYTHONPATH": f"{hide}:{Path(__file__).resolve().parents[2]}"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert "matplotlib" in message and "pip install 'nmt[plot]'" in message
    assert not plot.exists()


def test_checkpoint_modes_score_by_length(tiny_checkpoint: TinyCheckpoint, tmp_path: Path) -> None:
    plot = tmp_path / "len.png"
    fast = ["--beam", "1", "--max-len-a", "0", "--max-len-b", "8"]
    cfg = run_nmt("evaluate", str(tiny_checkpoint.config), "--split", "test", "--buckets", "4,5,6", "--json", *fast)
    assert cfg.returncode == 0, cfg.stderr
    record = json.loads(cfg.stdout)
    src = (tiny_checkpoint.corpus / "test.src").read_text().splitlines()
    expected = [sum(lo <= len(s.split()) <= hi for s in src) for lo, hi in ((0, 3), (4, 4), (5, 5), (6, 99))]
    assert [b["sentences"] for b in record["by_length"]] == expected and sum(expected) == 40
    assert record["label"] == "toy best"
    out = tmp_path / "hyps.txt"
    src_path, ref = tiny_checkpoint.corpus / "test.src", tiny_checkpoint.corpus / "test.tgt"
    ckpt = run_nmt(
        "evaluate", str(tiny_checkpoint.path), "--src", str(src_path), "--ref", str(ref), "--out", str(out),
        "--plot", str(plot), "--label", "tiny", "--json", *fast,
    )  # fmt: skip
    assert ckpt.returncode == 0, ckpt.stderr
    rows = json.loads(ckpt.stdout)["by_length"]
    assert [b["sentences"] for b in rows] == [40, 0, 0, 0] and rows[1]["bleu"] is None
    assert rows[0]["bleu"] == pytest.approx(_sacrebleu(ref, out)["bleu"], abs=1e-4)
    assert plot.read_bytes()[:4] == b"\x89PNG"
