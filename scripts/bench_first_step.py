"""Time from `nmt train` to the end of its first update, on prepared data of any size.

    python scripts/bench_first_step.py CONFIG [--set KEY=VALUE ...] [--json OUT]

Starts `python -m nmt train CONFIG --restart --set train.log_every=1 ...` as a user would,
from a fresh process (imports included), and watches `<workdir>/metrics.jsonl` for the
first training record: the seconds from launch to that record are the figure. The run is
then stopped with SIGTERM (it saves and exits) and its peak RSS (ru_maxrss) is reported.
What happens before the first update and grows with the corpus: opening the shards
(memory-mapped), reading the offsets into per-example lengths, the budget and length checks,
and the first epoch's batching (a sort of every example by length).
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

from nmt.config import load_config
from nmt.data.prepared import read_manifest
from nmt.experiment import Experiment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    parser.add_argument("--json", type=Path, help="append the record as one JSON line")
    args = parser.parse_args()
    overrides = [*args.overrides, "train.log_every=1", "train.valid_every=1000000"]
    cfg = load_config(args.config, overrides)
    exp = Experiment.from_config(cfg)
    manifest = read_manifest(exp.data_dir)
    if manifest is None:
        sys.exit(f"{exp.data_dir}: no prepared data; run `nmt prepare {args.config}` first")
    metrics = exp.root / "metrics.jsonl"
    metrics.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "nmt", "train", str(args.config), "--restart"]
    cmd += [a for o in overrides for a in ("--set", o)]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    first = None
    while time.monotonic() - t0 < args.timeout and proc.poll() is None:
        if metrics.is_file() and any('"train"' in line for line in metrics.read_text().splitlines()):
            first = time.monotonic() - t0
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if first is None:
        sys.exit(f"no training record within {args.timeout:.0f} s; stderr:\n{err[-3000:]}")
    record = {
        "figure": "seconds from `nmt train` to its first update",
        "first_step_s": round(first, 2),
        "train_examples": manifest["splits"]["train"]["sentences"],
        "shards": manifest["splits"]["train"].get("shards"),
        "peak_rss_mib": round(peak_mib),
        "config": str(args.config),
        "overrides": args.overrides,
        "cpu": next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?"),
        "avx512_bf16": "avx512_bf16" in open("/proc/cpuinfo").read(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    print(json.dumps(record))
    if args.json:
        with open(args.json, "a") as fh:
            fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
