"""Glossary terms from the reference: nmt's constrained beam search against fairseq's `--constraints`.

    python scripts/bench_glossary.py MODEL.pt --fairseq-ckpt CKPT --fairseq-data BIN --spm SPM
        [--split test_2016_flickr] [--out data/bench_glossary] [--repeats 3] [--lines N]

MODEL.pt is the fairseq checkpoint imported into nmt (`nmt import CKPT --spm SPM -o MODEL.pt`), so both
engines decode the same model. Terms: for every test sentence, nmt's word alignment of the source with
its *reference* (the teacher-forced cross-attention of `nmt translate --alignments`, run on the reference
instead of a translation) gives the reference words aligned to a source word; of those, content words
(letters only, at least 3, not an English function word) are candidates, and the longest two (even lines)
or the longest one (odd lines) become that sentence's terms, stripped of punctuation, as written in the
reference. The same `source<TAB>term<TAB>...` file goes to `nmt translate --constraints` and to
`fairseq-interactive --constraints` (beam 5, lenpen 1, batch 32, as the peers' decode benchmark).

Four runs per repeat, interleaved: each engine without and with the terms. Reported per system: BLEU and
chrF (sacreBLEU, against the reference), term use (terms found as whole words, case-sensitive, in the
output / terms asked for), and target tokens/s: the outputs' SentencePiece tokens (EOS excluded; the
same model, so the same pieces for both engines) over the engine's own decode time (nmt translate's
"translated N lines in X s", fairseq-interactive's "translation time"; model loading excluded), median of
--repeats. Writes OUT/terms.tsv, the outputs, OUT/results.json, and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAIRSEQ_VENV = Path.home() / ".cache" / "nmt-peers" / "venv-fairseq"
FUNCTION_WORDS = set(
    """a an the and or but nor of in on at to for with by from into onto over under up down out off as is are
    was were be been being am has have had do does did not no this that these those there their they them
    his her its him she he it we you your our who whom whose which what while when where near next some
    one two three four five many several other another each both all any few more most very just than then
    also about above after before behind between through during against along around across toward towards
    front top side back beside something someone""".split()
)
TOKEN = re.compile(r"^\W*(.*?)\W*$")


def content_terms(ref_words: list[str], links: str, *, count: int) -> list[str]:
    """The `count` longest content words of the reference that are aligned to some source word."""
    aligned = {int(pair.split("-")[1]) for pair in links.split()}
    seen: list[str] = []
    for j, word in enumerate(ref_words):
        core = TOKEN.match(word).group(1)  # type: ignore[union-attr]
        if j in aligned and core.isalpha() and len(core) >= 3 and core.lower() not in FUNCTION_WORDS:
            if core not in seen:
                seen.append(core)
    return sorted(seen, key=lambda w: -len(w))[:count]  # stable: the earlier of equally long words first


def make_terms(model: Path, src: list[str], ref: list[str]) -> list[list[str]]:
    import torch

    from nmt.decode.translate import Translation, load_for_decoding, source_ids, with_alignments
    from nmt.tokens import BOS_ID

    loaded, _, device = load_for_decoding(model, overrides=["decode.precision=fp32"])
    ids, _ = source_ids(loaded, src)
    tgt = loaded.vocab.encode_tgt(ref)
    done = [[Translation(r, 0.0, len(t), tuple(t))] for r, t in zip(ref, tgt, strict=True)]
    with torch.inference_mode():
        aligned = with_alignments(loaded, src, ids, done, start_id=BOS_ID, marks=None, device=device)
    return [
        content_terms(r.split(), row[0].alignment, count=2 if i % 2 == 0 else 1)
        for i, (r, row) in enumerate(zip(ref, aligned, strict=True))
    ]


def term_use(hyps: list[str], terms: list[list[str]]) -> tuple[int, int]:
    found = sum(
        bool(re.search(rf"(?<!\w){re.escape(t)}(?!\w)", h)) for h, row in zip(hyps, terms, strict=True) for t in row
    )
    return found, sum(len(row) for row in terms)


def run_nmt(model: Path, inp: Path, out: Path, constraints: bool) -> float:
    cmd = [sys.executable, "-m", "nmt", "translate", str(model), "-i", str(inp), "-o", str(out)]
    result = subprocess.run(cmd + (["--constraints"] if constraints else []), capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(result.stderr)
    return float(re.search(r"translated [\d,]+ lines in ([\d.]+) s", result.stderr).group(1))  # type: ignore[union-attr]


def run_fairseq(args: argparse.Namespace, inp: Path, out: Path, constraints: bool) -> float:
    cmd = [
        str(FAIRSEQ_VENV / "bin" / "fairseq-interactive"), str(args.fairseq_data), "--path", str(args.fairseq_ckpt),
        "--source-lang", "de", "--target-lang", "en", "--beam", "5", "--lenpen", "1.0", "--bpe", "sentencepiece",
        "--sentencepiece-model", str(args.spm), "--batch-size", "32", "--buffer-size", "1024", "--cpu",
        "--input", str(inp),
    ]  # fmt: skip
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    result = subprocess.run(cmd + (["--constraints"] if constraints else []), capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(result.stderr[-3000:])
    hyps: dict[int, str] = {}
    for line in result.stdout.splitlines():
        if line.startswith("D-"):
            tag, _, text = line.split("\t", 2)
            hyps[int(tag[2:])] = text
    out.write_text("".join(hyps.get(i, "") + "\n" for i in range(len(hyps))))
    log = result.stdout + result.stderr
    return float(re.search(r"translation time: ([\d.]+)", log).group(1))  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--fairseq-ckpt", type=Path, required=True)
    parser.add_argument("--fairseq-data", type=Path, required=True)
    parser.add_argument("--spm", type=Path, required=True)
    parser.add_argument("--split", default="test_2016_flickr")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "bench_glossary")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lines", type=int, default=None, help="only the first N lines (a trial run)")
    args = parser.parse_args()
    import gzip

    import sentencepiece as spm

    from nmt.metrics import corpus_scores

    data = Path(os.environ["NMT_DATA"]) / "multi30k"
    src = gzip.open(data / f"{args.split}.de.gz", "rt", encoding="utf-8").read().splitlines()[: args.lines]
    ref = gzip.open(data / f"{args.split}.en.gz", "rt", encoding="utf-8").read().splitlines()[: args.lines]
    args.out.mkdir(parents=True, exist_ok=True)
    terms = make_terms(args.model, src, ref)
    plain, constrained = args.out / "src.txt", args.out / "terms.tsv"
    plain.write_text("".join(f"{s}\n" for s in src))
    constrained.write_text("".join("\t".join([s, *row]) + "\n" for s, row in zip(src, terms, strict=True)))
    pieces = spm.SentencePieceProcessor(model_file=str(args.spm))
    systems = {
        "fairseq": lambda i, o: run_fairseq(args, plain, o, False),
        "fairseq --constraints": lambda i, o: run_fairseq(args, constrained, o, True),
        "nmt": lambda i, o: run_nmt(args.model, plain, o, False),
        "nmt --constraints": lambda i, o: run_nmt(args.model, constrained, o, True),
    }
    times: dict[str, list[float]] = {name: [] for name in systems}
    for r in range(args.repeats):
        for name, go in systems.items():
            out = args.out / (name.replace(" --", "_") + ".hyp")
            times[name].append(go(r, out))
            print(f"repeat {r + 1}: {name}: {times[name][-1]:.2f} s", flush=True)
    results = {}
    for name in systems:
        hyps = (args.out / (name.replace(" --", "_") + ".hyp")).read_text().splitlines()
        assert len(hyps) == len(src), (name, len(hyps))
        scores = corpus_scores(hyps, [ref], tgt_lang="en")
        tokens = sum(len(p) for p in pieces.encode(hyps))
        found, asked = term_use(hyps, terms)
        seconds = statistics.median(times[name])
        results[name] = {
            "bleu": round(scores["bleu"].score, 2),
            "chrf": round(scores["chrf"].score, 2),
            "terms_found": found,
            "terms": asked,
            "term_use": round(found / asked, 4),
            "tgt_tokens": tokens,
            "decode_s": round(seconds, 2),
            "decode_s_all": times[name],
            "tgt_tokens_per_s": round(tokens / seconds),
        }
    record = {
        "split": args.split,
        "lines": len(src),
        "sentences_with_terms": sum(bool(t) for t in terms),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes"),
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "results": results,
    }
    (args.out / "results.json").write_text(json.dumps(record, indent=1))
    base = results["fairseq --constraints"]["tgt_tokens_per_s"]
    print("| system | BLEU | chrF | term use | decode s | tgt tokens/s | vs fairseq --constraints |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['bleu']:.2f} | {r['chrf']:.2f} | {r['term_use']:.1%} ({r['terms_found']}/{r['terms']}) "
            f"| {r['decode_s']:.2f} | {r['tgt_tokens_per_s']:,} | {r['tgt_tokens_per_s'] / base:.2f}x |"
        )


if __name__ == "__main__":
    main()
