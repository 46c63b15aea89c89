"""A checkpoint against its CTranslate2 exports: output parity, BLEU, speed and size.

    python scripts/bench_export.py CHECKPOINT [--split test_2016_flickr] [--beams 5 1] [--batch-tokens 600]
                                  [--quantizations none int8] [--repeats 3] [--native-precisions fp32 bf16]

Exports the checkpoint (into a temporary directory) once per quantization, then decodes
the split's source with nmt's native search and with each export, `--repeats` times per
beam (median reported), and prints one JSON line per (engine, precision, beam): target
tokens/s (generated SentencePiece tokens, EOS excluded, as the peers count them),
sentences/s, BLEU/chrF against the raw references (sacreBLEU, as `nmt evaluate`), model
size on disk. For every export at beam > 1 it also reports parity with the native fp32
search: the share of identical outputs, and on the lines that differ whether nmt's own
teacher-forced score of its output is at least its score of the export's output
(within 1e-4): then the difference is the search, not the model.
Model loading, export and SentencePiece encoding are excluded from the timings.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from nmt.config import apply_decode_overrides
from nmt.decode.scoring import sequence_scores
from nmt.decode.search import search
from nmt.decode.translate import load_for_decoding
from nmt.export.ct2 import export_checkpoint
from nmt.fileio import read_lines
from nmt.metrics import corpus_scores
from nmt.tokens import EOS_ID


def nmt_scores(model: torch.nn.Module, src: list[list[int]], tgt: list[list[int]], cfg) -> list[float]:
    """nmt's length-normalised score of each (source, output) pair, teacher-forced, in fp32."""
    return sequence_scores(model, src, tgt, penalty=cfg.length_penalty, alpha=cfg.alpha)


def decode(loaded, device, src, cfg, repeats: int) -> tuple[list[list[int]], float]:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        hyps = search(loaded.model, src, cfg, device=device)
        runs.append(time.perf_counter() - t0)
    return [h[0].tokens if h else [] for h in hyps], sorted(runs)[len(runs) // 2]


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--split", default="test_2016_flickr")
    parser.add_argument("--beams", type=int, nargs="+", default=[5, 1])
    parser.add_argument("--batch-tokens", type=int, default=600)
    parser.add_argument("--quantizations", nargs="*", default=["none", "int8"])
    parser.add_argument("--native-precisions", nargs="+", default=["fp32"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    threads = int(os.environ.get("OMP_NUM_THREADS", "2"))
    torch.set_num_threads(threads)

    native, base, device = load_for_decoding(args.checkpoint, overrides=["decode.device=cpu"])
    data = Path(os.environ["NMT_DATA"]) / "multi30k"
    lines = list(read_lines(data / f"{args.split}.{native.cfg.data.src_lang}.gz"))
    refs = [r.rstrip() for r in read_lines(data / f"{args.split}.{native.cfg.data.tgt_lang}.gz")]
    src = [ids[: native.model.max_len - 1] + [EOS_ID] if ids else [] for ids in native.vocab.encode_src(lines)]
    tmp = Path(tempfile.mkdtemp(prefix="nmt-export-bench."))

    def engines():
        """Native first; then one CTranslate2 translator at a time, the previous one released: idle
        translators' worker threads in the process made torch's decoding 1.3-1.4x slower and another
        translator's decoding up to 2x slower (measured)."""
        for p in args.native_precisions:
            yield "native", p, native, args.checkpoint.stat().st_size
        for q in args.quantizations:
            out = export_checkpoint(args.checkpoint, tmp / q, quantization=q).out_dir
            engine, _, _ = load_for_decoding(out, overrides=["decode.device=cpu"])
            yield f"ct2-{q}", "fp32", engine, dir_size(out)
            del engine
            gc.collect()

    reference: dict[int, list[list[int]]] = {}
    for name, precision, loaded, size in engines():
        for beam in args.beams:
            overrides = [f"decode.beam={beam}", "decode.nbest=1", f"decode.batch_tokens={args.batch_tokens}"]
            cfg = apply_decode_overrides(base, [*overrides, f"decode.precision={precision}"], where="bench")
            ids, seconds = decode(loaded, device, src, cfg, args.repeats)
            hyps = [t.replace("\n", " ") for t in native.vocab.decode_tgt(ids)]
            scores = corpus_scores(hyps, [refs], keys=("bleu", "chrf"), tgt_lang=native.cfg.data.tgt_lang)
            tokens = sum(map(len, ids))
            record = {
                "engine": name,
                "precision": precision,
                "beam": beam,
                "batch_tokens": args.batch_tokens,
                "sentences": len(src),
                "threads": threads,
                "decode_s": round(seconds, 2),
                "sent_per_s": round(len(src) / seconds, 1),
                "tgt_tokens_per_s": round(tokens / seconds),
                "bleu": round(scores["bleu"].score, 2),
                "chrf": round(scores["chrf"].score, 2),
                "size_mb": round(size / 1e6, 1),
                "median_of": args.repeats,
                "date": datetime.date.today().isoformat(),
            }
            if name == "native" and precision == "fp32":
                reference[beam] = ids
            elif name.startswith("ct2") and beam in reference:
                ref_ids = reference[beam]
                differ = [i for i, (a, b) in enumerate(zip(ref_ids, ids)) if a != b]
                cfg32 = dataclasses.replace(cfg, precision="fp32")
                own = nmt_scores(native.model, [src[i] for i in differ], [ref_ids[i] for i in differ], cfg32)
                theirs = nmt_scores(native.model, [src[i] for i in differ], [ids[i] for i in differ], cfg32)
                record["identical_pct"] = round(100 * (1 - len(differ) / len(src)), 2)
                record["differing_lines"] = len(differ)
                record["differing_where_nmt_prefers_its_own"] = sum(o >= t - 1e-4 for o, t in zip(own, theirs))
            print(json.dumps(record), flush=True)
        del loaded  # release a translator before the next one is loaded (see engines)


if __name__ == "__main__":
    main()
