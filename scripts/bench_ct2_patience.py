"""The CTranslate2 engine's second search, without the patience bound, of degenerate lines (a source that
repeats itself, an output much shorter than its source: `nmt.decode.ct2.degenerate`): speed with it on
and off, how often it runs, what it changes on repeating lines, and parity with nmt's search per option.

    python scripts/bench_ct2_patience.py CHECKPOINT [--parts speed repeating parity] [--split test_2016_flickr]
        [--beam 5] [--batch-tokens 600] [--repeats 5] [--quantization none] [--parity "" decode.min_len=5 ...]

Exports the checkpoint (into a temporary directory), then prints one JSON line per part:
- "speed": the export decodes the split's source with the rule on and off (patience 2 only),
  `--repeats` times each, on and off interleaved, after one warm-up; medians, target tokens/s (generated
  SentencePiece tokens, EOS excluded), the on/off speed ratio, the lines decoded again and the lines
  whose best output the rule changed.
- "repeating": degenerate inputs (the first two words of each of the split's first 10 sentences, 30
  times; a word 40 and 80 times): nmt's native search and the export with the rule off and on (output lengths,
  scores), then how many best outputs equal nmt's with the rule off and on.
- "parity": for each `--parity` option set (comma-separated `decode.KEY=VALUE`s on top of --beam;
  "" for none; default: none, no_repeat_ngram 2 and 3, min_len 5 and 10, and greedy with each
  option) nmt's native search and the export (rule on) in fp32 on the split: identical best outputs;
  on the lines that differ, how often nmt's own teacher-forced score of its output is at least its
  score of the export's (within 1e-4; then the difference is the search); BLEU of each; and how many
  of nmt's outputs the option changed against the same search without options.
Model loading, export and SentencePiece encoding are excluded from the timings.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from nmt.config import apply_decode_overrides
from nmt.decode import ct2
from nmt.decode.scoring import sequence_scores
from nmt.decode.search import search
from nmt.decode.translate import load_for_decoding
from nmt.export.ct2 import export_checkpoint
from nmt.fileio import read_lines
from nmt.metrics import corpus_scores
from nmt.tokens import EOS_ID

RULE = {"SHORT_RATIO": ct2.SHORT_RATIO, "REPEATED_BIGRAMS": ct2.REPEATED_BIGRAMS}
RULE_OFF = {"SHORT_RATIO": 0.0, "REPEATED_BIGRAMS": 1.01}  # no output is shorter than 0 tokens; no share is > 1


def decode_export(engine, src: list[list[int]], cfg, *, rule: bool) -> tuple[list, float]:
    """The export's hypotheses with the rule on or off, and the seconds taken."""
    for name, value in (RULE if rule else RULE_OFF).items():
        setattr(ct2, name, value)
    try:
        t0 = time.perf_counter()
        hyps = engine.search(src, cfg)
        return hyps, time.perf_counter() - t0
    finally:
        for name, value in RULE.items():
            setattr(ct2, name, value)


def nmt_scores(model: torch.nn.Module, src: list[list[int]], tgt: list[list[int]], cfg) -> list[float]:
    """nmt's length-normalised score of each (source, output) pair, teacher-forced, in fp32."""
    return sequence_scores(model, src, tgt, penalty=cfg.length_penalty, alpha=cfg.alpha)


def best(hyps: list) -> list[list[int]]:
    return [row[0].tokens if row else [] for row in hyps]


def repeating_lines(lines: list[str]) -> list[str]:
    """Degenerate inputs: the first two words of each of the first 10 lines 30 times, a word 40 and 80 times."""
    return [" ".join(line.split()[:2] * 30) for line in lines[:10]] + [" ".join(["Hund"] * 40), " ".join(["la"] * 80)]


def speed(engine, src: list[list[int]], cfg, *, repeats: int) -> dict:
    """The export on `src` with the rule on and off, interleaved (after one warm-up run)."""
    runs: dict[str, list[float]] = {"on": [], "off": []}
    outputs: dict[str, list[list[int]]] = {}
    decode_export(engine, src, cfg, rule=True)
    for _ in range(repeats):
        for name in ("off", "on"):
            hyps, seconds = decode_export(engine, src, cfg, rule=name == "on")
            runs[name].append(seconds)
            outputs[name] = best(hyps)
    tokens = {name: sum(map(len, ids)) for name, ids in outputs.items()}
    median = {name: statistics.median(seconds) for name, seconds in runs.items()}
    on_at_all = ct2.ct2_length_penalty(cfg) != 0.0  # (without a length penalty the rule never runs)
    again = [s for s, ids in zip(src, outputs["off"], strict=True) if s and ct2.degenerate(s, len(ids))]
    return {
        "part": "speed",
        "sentences": len(src),
        "rule": RULE,
        "decode_s_on": round(median["on"], 3),
        "decode_s_off": round(median["off"], 3),
        "tgt_tokens_per_s_on": round(tokens["on"] / median["on"]),
        "tgt_tokens_per_s_off": round(tokens["off"] / median["off"]),
        "speed_on_over_off": round(median["off"] / median["on"], 4),
        "lines_decoded_again": len(again) if on_at_all else 0,
        "lines_changed": sum(a != b for a, b in zip(outputs["on"], outputs["off"], strict=True)),
        "runs_s": {name: [round(s, 3) for s in seconds] for name, seconds in runs.items()},
    }


def repeating(native, engine, texts: list[str], rep: list[list[int]], cfg, device) -> list[dict]:
    """nmt's search and the export with the rule off and on, on degenerate lines."""
    ours = search(native.model, rep, cfg, device=device)
    off, _ = decode_export(engine, rep, cfg, rule=False)
    on, _ = decode_export(engine, rep, cfg, rule=True)
    rows = []
    for text, s, a, b, c in zip(texts, rep, ours, off, on, strict=True):
        row = {"part": "repeating", "src": text[:40] + "...", "src_pieces": len(s) - 1}
        for name, hyp in (("native", a[0]), ("rule_off", b[0]), ("rule_on", c[0])):
            row[name] = {"tokens": len(hyp.tokens), "score": round(hyp.score, 4)}
        rows.append(row)
    summary = {"part": "repeating", "lines": len(rep)}
    for name, hyps in (("off", off), ("on", on)):
        summary[f"equal_to_native_rule_{name}"] = sum(a == b for a, b in zip(best(ours), best(hyps), strict=True))
    return [*rows, summary]


def parity(native, engine, src, refs: list[str], cfg, device, option_sets: list[str]) -> list[dict]:
    """Native search and the export per option set (see the module docstring)."""
    rows: list[dict] = []
    plain: dict[int, list[list[int]]] = {}  # beam size -> nmt's outputs without options
    for option_set in option_sets:
        extra = [o for o in option_set.split(",") if o]
        opt_cfg = apply_decode_overrides(cfg, [*extra, "decode.precision=fp32"], where="bench")
        ids = {"native": best(search(native.model, src, opt_cfg, device=device))}
        ids["ct2"] = best(engine.search(src, opt_cfg))
        differ = [i for i, (a, b) in enumerate(zip(ids["native"], ids["ct2"], strict=True)) if a != b]
        own = nmt_scores(native.model, [src[i] for i in differ], [ids["native"][i] for i in differ], opt_cfg)
        theirs = nmt_scores(native.model, [src[i] for i in differ], [ids["ct2"][i] for i in differ], opt_cfg)
        row = {"part": "parity", "options": extra, "beam": opt_cfg.beam, "sentences": len(src)}
        row["identical"] = len(src) - len(differ)
        row["differing_where_nmt_prefers_its_own"] = sum(o >= t - 1e-4 for o, t in zip(own, theirs, strict=True))
        for name, found in ids.items():
            hyps = [t.replace("\n", " ") for t in native.vocab.decode_tgt(found)]
            scores = corpus_scores(hyps, [refs], keys=("bleu",), tgt_lang=native.cfg.data.tgt_lang)
            row[f"bleu_{name}"] = round(scores["bleu"].score, 2)
        if all(o.startswith("decode.beam=") for o in extra):  # no option: the baseline of this beam size
            plain[opt_cfg.beam] = ids["native"]
        elif opt_cfg.beam in plain:
            changed = sum(a != b for a, b in zip(plain[opt_cfg.beam], ids["native"], strict=True))
            row["native_lines_changed_by_options"] = changed
        rows.append(row)
    return rows


PARITY = ["", "decode.no_repeat_ngram=2", "decode.no_repeat_ngram=3", "decode.min_len=5", "decode.min_len=10",
          "decode.beam=1", "decode.beam=1,decode.no_repeat_ngram=2", "decode.beam=1,decode.no_repeat_ngram=3",
          "decode.beam=1,decode.min_len=5", "decode.beam=1,decode.min_len=10"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--parts", nargs="+", choices=["speed", "repeating", "parity"], default=["speed", "repeating"])
    parser.add_argument("--split", default="test_2016_flickr")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--batch-tokens", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quantization", default="none")
    parser.add_argument("--parity", nargs="*", default=PARITY, help='option sets, e.g. "" decode.no_repeat_ngram=3')
    args = parser.parse_args()
    threads = int(os.environ.get("OMP_NUM_THREADS", "2"))
    torch.set_num_threads(threads)

    native, base, device = load_for_decoding(args.checkpoint, overrides=["decode.device=cpu"])
    out = export_checkpoint(args.checkpoint, Path(tempfile.mkdtemp(prefix="nmt-ct2-patience.")) / "export",
                            quantization=args.quantization).out_dir  # fmt: skip
    engine = load_for_decoding(out, overrides=["decode.device=cpu"])[0].model
    data = Path(os.environ["NMT_DATA"]) / "multi30k"
    lines = list(read_lines(data / f"{args.split}.{native.cfg.data.src_lang}.gz"))
    refs = [r.rstrip() for r in read_lines(data / f"{args.split}.{native.cfg.data.tgt_lang}.gz")]
    max_src = native.model.max_len - 1
    encode = lambda text: [ids[:max_src] + [EOS_ID] if ids else [] for ids in native.vocab.encode_src(text)]  # noqa: E731
    src = encode(lines)
    overrides = [f"decode.beam={args.beam}", "decode.nbest=1", f"decode.batch_tokens={args.batch_tokens}"]
    cfg = apply_decode_overrides(base, overrides, where="bench")
    common = {"split": args.split, "beam": args.beam, "batch_tokens": args.batch_tokens, "threads": threads,
              "quantization": args.quantization, "date": datetime.date.today().isoformat()}  # fmt: skip

    records: list[dict] = []
    if "speed" in args.parts:
        records.append(speed(engine, src, cfg, repeats=args.repeats))
    if "repeating" in args.parts:
        texts = repeating_lines(lines)
        records += repeating(native, engine, texts, encode(texts), cfg, device)
    if "parity" in args.parts:
        records += parity(native, engine, src, refs, cfg, device, args.parity)
    for record in records:
        print(json.dumps({**common, **record}), flush=True)


if __name__ == "__main__":
    main()
