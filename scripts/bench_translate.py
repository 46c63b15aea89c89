"""Translation speed of a checkpoint or a CTranslate2 export: sentences/s and generated target tokens/s.

    python scripts/bench_translate.py CHECKPOINT [--src FILE] [--beams 5 1] [--repeats 3] [--profile]
                                      [--direction SRC-TGT]

Model loading and SentencePiece encoding are excluded; tokens are generated target
SentencePiece tokens without EOS (as the peers' scripts count them). Reports the median
of --repeats runs per beam as one JSON line each. --profile also times the model's own
calls (encode, init_state, decode_step) to show how much of decoding is search
bookkeeping outside the model (a checkpoint only).
Default --src: $NMT_DATA/multi30k/test_2016_flickr.<src_lang>.gz (with --direction, its source language).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from pathlib import Path

import torch

from nmt.config import apply_decode_overrides
from nmt.decode.languages import LanguageRequest, choose_route
from nmt.decode.search import search
from nmt.decode.translate import load_for_decoding, source_ids
from nmt.fileio import read_lines


class ModelTimer:
    """Wraps a model's protocol methods and accumulates their wall time."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.seconds = model, 0.0
        for name in ("encode", "init_state", "decode_step"):
            setattr(self, name, self._timed(getattr(model, name)))
        self.max_len = model.max_len

    def _timed(self, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            self.seconds += time.perf_counter() - t0
            return out

        return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--src", type=Path)
    parser.add_argument("--beams", type=int, nargs="+", default=[5, 1])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-tokens", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--direction", metavar="SRC-TGT", help="a multilingual model's direction (default src: its test file)"
    )
    args = parser.parse_args()
    threads = int(os.environ.get("OMP_NUM_THREADS", "2"))
    torch.set_num_threads(threads)
    loaded, base, device = load_for_decoding(args.checkpoint, overrides=[f"decode.device={args.device}"])
    src_lang, tgt_lang = args.direction.split("-") if args.direction else (loaded.cfg.data.src_lang, None)
    route = choose_route(loaded.cfg, loaded.vocab, LanguageRequest(tgt_lang, src_lang))
    marks = route.steps[-1][1]
    src_path = args.src or Path(os.environ["NMT_DATA"]) / "multi30k" / f"test_2016_flickr.{src_lang}.gz"
    src = source_ids(loaded, list(read_lines(src_path)), marks)[0]
    for beam in args.beams:
        overrides = [f"decode.beam={beam}", "decode.nbest=1"]
        if args.batch_tokens:
            overrides.append(f"decode.batch_tokens={args.batch_tokens}")
        cfg = apply_decode_overrides(base, overrides, where="bench")
        runs = []
        for _ in range(args.repeats):
            timer = ModelTimer(loaded.model) if args.profile else None  # a torch model's calls only
            t0 = time.perf_counter()
            hyps = search(timer or loaded.model, src, cfg, device=device, start_id=marks.start_id)
            seconds = time.perf_counter() - t0
            tokens = sum(len(h[0].tokens) for h in hyps if h)
            runs.append((seconds, tokens, timer.seconds if timer else 0.0))
        seconds, tokens, model_s = sorted(runs)[len(runs) // 2]
        record = {
            "checkpoint": str(args.checkpoint),
            "direction": f"{src_lang}-{route.tgt_lang}",
            "src": str(src_path),
            "sentences": len(src),
            "beam": beam,
            "batch_tokens": cfg.batch_tokens,
            "threads": threads,
            "device": str(device),
            "decode_s": round(seconds, 2),
            "sent_per_s": round(len(src) / seconds, 1),
            "tgt_tokens_per_s": round(tokens / seconds),
            "tgt_tokens": tokens,
            "median_of": args.repeats,
            "all_decode_s": [round(r[0], 2) for r in runs],
            "date": datetime.date.today().isoformat(),
        }
        if args.profile:
            record["model_s"] = round(model_s, 2)
            record["outside_model_pct"] = round(100 * (1 - model_s / seconds), 1)
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
