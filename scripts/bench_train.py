"""Training throughput of a config: target tokens/s, seconds per update, peak memory.

    python scripts/bench_train.py configs/multi30k_de_en.yaml --steps 60 [--set train.device=cpu]

Runs the real `nmt.train.loop.train` for --steps updates from scratch in a temporary
experiment dir that links the config's prepared data (run `nmt prepare` first), and
reports the median over log intervals after the first (warm-up) one, as one JSON line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import tempfile
from pathlib import Path

import torch

from nmt.config import load_config
from nmt.experiment import Experiment
from nmt.train.loop import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    threads = int(os.environ.get("OMP_NUM_THREADS", "2"))
    torch.set_num_threads(threads)
    base = load_config(args.config, args.overrides)
    data_dir = Experiment.from_config(base).data_dir
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "data").symlink_to(data_dir)
        cfg = load_config(
            args.config,
            args.overrides
            + [
                f"workdir={tmp}",
                f"train.max_steps={args.steps}",
                f"train.log_every={args.log_every}",
                f"train.valid_every={args.steps + 1}",
                "train.max_minutes=null",
            ],
        )
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        result = train(cfg, restart=True, final_validation=False)
        records = [json.loads(x) for x in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    intervals = [r for r in records if r["event"] == "train"][1:]  # first interval: warm-up
    elapsed = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(intervals, intervals[1:])]
    out = {
        "config": args.config,
        "overrides": args.overrides,
        "steps": result.state.step,
        "threads": threads,
        "device": "cuda" if torch.cuda.is_available() and cfg.train.device != "cpu" else "cpu",
        "tgt_tokens_per_s": round(statistics.median(r["tgt_tokens_per_s"] for r in intervals)),
        "s_per_update": round(statistics.median(elapsed) / args.log_every, 3) if elapsed else None,
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "peak_cuda_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
        "params": result.params,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "date": datetime.date.today().isoformat(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
