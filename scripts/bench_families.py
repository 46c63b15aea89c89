"""Model families on Multi30k de->en under one wall budget: BLEU overall and by length, speed.

    python scripts/bench_families.py [--minutes 10] [--out data/bench_families] [--only NAME ...]
                                     [--device cpu|cuda] [--set KEY=VALUE ...] [--speed-repeats 3]
                                     [--reuse] [--no-speed]

For each of the Transformer, Bahdanau, Luong and no-attention (seq2seq) configs: `nmt prepare`,
`nmt train` from scratch for --minutes of wall time (validation included, as a user's run
would spend it), then `nmt evaluate --split test_2016_flickr --by-length --buckets 10,14,18 --json` on the best
checkpoint, and `scripts/bench_translate.py` at beam 5 (median of --speed-repeats runs).
Training target tokens/s is the median of the run's logged intervals (null when a budget
too short for two log intervals left none). Finally one `nmt evaluate --hyp ... --plot` draws BLEU
by source length for all four. Writes OUT/results.json and prints a markdown table.
Runs are sequential: each gets the machine's cores to itself. --device picks where training,
evaluation and the speed run go (default cpu); each --set is passed on to every config (e.g.
--set train.compile=false). --reuse keeps a system's finished training (its workdir's train log ends
in the run's summary) and only evaluates it, e.g. after a stop during evaluation; --no-speed skips the
speed run (for a sitting that shares the machine, whose speed would not be a timing).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = {  # name -> (config, label)
    "transformer": ("configs/multi30k_de_en.yaml", "Transformer"),
    "luong": ("configs/multi30k_de_en_luong.yaml", "LSTM + Luong attention"),
    "bahdanau": ("configs/multi30k_de_en_bahdanau.yaml", "GRU + Bahdanau attention"),
    "seq2seq": ("configs/multi30k_de_en_seq2seq.yaml", "LSTM, no attention"),
}
SPLIT = "test_2016_flickr"
# Multi30k sentences are short: the default 10/20/30 buckets leave 35 sentences above 19 words
BUCKETS = "10,14,18"  # 0-9 (406 sentences), 10-13 (386), 14-17 (157), 18+ (51)


def run(cmd: list[str], *, log: Path | None = None) -> str:
    print("+", " ".join(cmd), flush=True)
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if log is not None:
        log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {' '.join(cmd)}\n{result.stderr[-3000:]}")
    return result.stdout


def params_of(checkpoint: Path) -> int:
    import torch

    from nmt.decode.load import load_model

    model = load_model(checkpoint).model
    assert isinstance(model, torch.nn.Module)
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "bench_families")
    parser.add_argument("--only", nargs="+", choices=list(SYSTEMS), default=list(SYSTEMS))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--speed-repeats", type=int, default=3, help="runs of the beam-5 speed test (median)")
    parser.add_argument("--reuse", action="store_true", help="evaluate a finished training again, do not retrain")
    parser.add_argument("--no-speed", action="store_true", help="skip the beam-5 speed run")
    args = parser.parse_args()
    nmt = [sys.executable, "-m", "nmt"]
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for name in args.only:
        config, label = SYSTEMS[name]
        workdir = args.out / name
        where = [f"--set=workdir={workdir}", *(f"--set={o}" for o in args.overrides)]
        train_log = args.out / f"{name}.train.log"
        finished = train_log.exists() and "best step" in train_log.read_text()
        if not (args.reuse and finished and (workdir / "checkpoints" / "best.pt").exists()):
            run([*nmt, "prepare", config, *where], log=args.out / f"{name}.prepare.log")
            train(nmt, config, where, args, train_log)
        hyp = workdir / f"{SPLIT}.hyp"
        record = json.loads(
            run(
                [
                    *nmt,
                    "evaluate",
                    config,
                    "--split",
                    SPLIT,
                    "--by-length",
                    "--buckets",
                    BUCKETS,
                    "--json",
                    "--device",
                    args.device,
                    "--out",
                    str(hyp),
                    *where,
                ]
            )
        )
        speed = (
            None
            if args.no_speed
            else json.loads(
                run(
                    [
                        sys.executable,
                        "scripts/bench_translate.py",
                        str(workdir / "checkpoints" / "best.pt"),
                        "--beams",
                        "5",
                        "--device",
                        args.device,
                        "--repeats",
                        str(args.speed_repeats),
                    ]
                )
                .strip()
                .splitlines()[-1]
            )
        )
        metrics = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
        train_records = [m for m in metrics if m["event"] == "train"]
        valid = [m for m in metrics if m["event"] == "valid"]
        intervals = train_records[1:] or train_records  # the first log interval includes warm-up
        results[name] = {
            "label": label,
            "config": config,
            "minutes": args.minutes,
            "device": args.device,
            "overrides": args.overrides,
            "steps": max((m["step"] for m in metrics), default=0),
            "best_valid_bleu": max(m["bleu"] for m in valid),
            "params": params_of(workdir / "checkpoints" / "best.pt"),
            "train_tgt_tokens_per_s": (
                round(statistics.median(m["tgt_tokens_per_s"] for m in intervals)) if intervals else None
            ),
            "beam5_tgt_tokens_per_s": None if speed is None else speed["tgt_tokens_per_s"],
            "bleu": record["scores"]["bleu"],
            "chrf": record["scores"]["chrf"],
            "bleu_signature": record["signatures"]["bleu"],
            "by_length": record["by_length"],
            "hyp": str(hyp),
            "threads": int(os.environ.get("OMP_NUM_THREADS", "2")),
            "date": datetime.date.today().isoformat(),
        }
        results_path.write_text(json.dumps(results, indent=1))
    done = [n for n in SYSTEMS if n in results]
    data = Path(os.environ["NMT_DATA"]) / "multi30k"
    plot_cmd = [*nmt, "evaluate", "--src", str(data / f"{SPLIT}.de.gz"), "--ref", str(data / f"{SPLIT}.en.gz")]
    for n in done:
        plot_cmd += ["--hyp", results[n]["hyp"], "--label", results[n]["label"]]
    run([*plot_cmd, "--by-length", "--buckets", BUCKETS, "--plot", str(args.out / "bleu_by_length.png")])
    print(table(results, done))


def train(nmt: list[str], config: str, where: list[str], args: argparse.Namespace, log: Path) -> None:
    train_set = [
        f"--set=train.max_minutes={args.minutes}",
        f"--set=train.device={args.device}",
        "--set=train.max_steps=100000",
    ]
    run([*nmt, "train", config, "--restart", *where, *train_set], log=log)


def table(results: dict, names: list[str]) -> str:
    buckets = [b["range"] + " (" + str(b["sentences"]) + ")" for b in results[names[0]]["by_length"]]
    head = ["model", "params", "steps", "train tok/s", "beam-5 tok/s", "BLEU", "chrF", *[f"BLEU {b}" for b in buckets]]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in names:
        r = results[n]
        per = [f"{b['bleu']:.2f}" if b.get("bleu") is not None else "-" for b in r["by_length"]]
        speed = "-" if r["train_tgt_tokens_per_s"] is None else f"{r['train_tgt_tokens_per_s']:,}"
        beam = "-" if r["beam5_tgt_tokens_per_s"] is None else f"{r['beam5_tgt_tokens_per_s']:,}"
        rows.append(
            f"| {r['label']} | {r['params'] / 1e6:.1f}M | {r['steps']} | {speed} | "
            f"{beam} | {r['bleu']:.2f} | {r['chrf']:.2f} | " + " | ".join(per) + " |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
