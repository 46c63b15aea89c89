"""Training throughput of a config: target tokens/s, seconds per update, peak memory, MFU.

    python scripts/bench_train.py configs/multi30k_de_en.yaml --steps 60 [--set train.device=cpu]

Runs the real `nmt.train.loop.train` for --steps updates from scratch in a temporary
experiment dir that links the config's prepared data (run `nmt prepare` first), and
reports the median over log intervals after the first (warm-up) one, as one JSON line.

`mfu` (model FLOPs utilisation) = 6 x params x target tokens/s / the device's dense bf16
peak FLOP/s, the peak looked up by `torch.cuda.get_device_name()` in PEAK_BF16_FLOPS (null
for a GPU not listed and on CPU; --peak-tflops gives it). 6 x params per token is the
usual forward + backward estimate, but counting target tokens only undercounts: the
encoder's parameters work once per source token, and attention's length-squared terms are
left out. Multi30k has about 1.03 source tokens per target token, so here the figure is
slightly low: a rough, comparable number, not an exact one.
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

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' datasheets, FLOP/s; the first
# entry whose words all occur in the device name wins.
PEAK_BF16_FLOPS = [
    (("H100", "PCIe"), 756e12),
    (("H100", "SXM"), 989e12),
    (("H100", "HBM3"), 989e12),  # "NVIDIA H100 80GB HBM3": the SXM part
    (("H200",), 989e12),
    (("A100",), 312e12),
]


def peak_flops(device_name: str | None) -> float | None:
    """The dense bf16 peak of a GPU named `device_name`, or None when it is not listed."""
    for words, flops in PEAK_BF16_FLOPS:
        if device_name and all(w in device_name for w in words):
            return flops
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, for mfu (default: looked up)")
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
    on_cuda = torch.cuda.is_available() and cfg.train.device != "cpu"
    gpu = torch.cuda.get_device_name() if on_cuda else None
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(gpu)
    tgt_tokens_per_s = statistics.median(r["tgt_tokens_per_s"] for r in intervals)
    out = {
        "config": args.config,
        "overrides": args.overrides,
        "steps": result.state.step,
        "threads": threads,
        "device": "cuda" if on_cuda else "cpu",
        "tgt_tokens_per_s": round(tgt_tokens_per_s),
        "s_per_update": round(statistics.median(elapsed) / args.log_every, 3) if elapsed else None,
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "peak_cuda_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
        "params": result.params,
        "mfu": round(6 * result.params * tgt_tokens_per_s / peak, 4) if peak else None,
        "peak_tflops": peak / 1e12 if peak else None,
        "gpu": gpu,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "date": datetime.date.today().isoformat(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
