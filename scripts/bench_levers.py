"""Recipe levers on Multi30k, each measured alone: the same wall budget, one change against today's recipe.

    python scripts/bench_levers.py --config configs/multi30k_de_en.yaml [--minutes 30 | --steps N]
                                   [--only NAME ...] [--out data/bench_levers] [--list]

For each lever (LEVERS: a name and the `--set` overrides it makes to the config): `nmt prepare`, `nmt train`
from scratch for --minutes of wall time (validation included, as a user's run spends it), then
`nmt evaluate` of best.pt (and of averaged.pt when the lever averages) on the validation set, by which a
lever is chosen, and on test_2016_flickr and test_2017_flickr. Runs are sequential, each with the
machine to itself; every run keeps its last 10 numbered checkpoints (train.keep_last=10, which changes
neither the updates nor best.pt). Averaging happens after the budget is spent and training is
deterministic, so an averaging lever (overrides only `train.average_last`) trains nothing: it averages
the last N step_N.pt of the `today` run (`nmt average --last N`, the same mean `train.average_last`
computes) and evaluates that, so `today` is measured first. Results accumulate in
OUT/<config name>/results.json across sittings (a lever already there is skipped unless named in
--only), and the table printed at the end gives every lever's change against `today` from the same file.
Record the machine (CPU flags) and date of each sitting beside the figures: the budget makes the step
count, and so the BLEU, depend on the CPU.

--steps N trains every lever for exactly N updates instead (no wall budget), recorded as "NAME, N updates"
beside the wall-budget results: a CPU without native bf16 (about 1,000 updates in 30 minutes) can then
measure the levers at the update count a bf16 CPU reaches in 30 minutes (about 2,400). Training is
deterministic, so a step-budget figure does not depend on the machine's load, only on its arithmetic.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from bench_families import run  # noqa: E402  (one way to run a step and stop on its failure)

LEVERS: dict[str, list[str]] = {
    "today": [],
    "dropout 0.3": ["model.dropout=0.3"],
    "attention + activation dropout 0.1": ["model.attention_dropout=0.1", "model.activation_dropout=0.1"],
    "label smoothing 0.2": ["train.label_smoothing=0.2"],
    # the recipes' peak lr was 1e-3 until this lever (then "lr 2e-3") paid on both directions: the old recipe
    "lr 1e-3 (the recipe before)": ["train.lr=1e-3"],
    "warmup 1000": ["train.warmup_steps=1000"],
    "average last 5": ["train.average_last=5"],
    "average last 10": ["train.average_last=10"],
    "average last 5, saved every 100": ["train.save_every=100", "train.average_last=5"],
    "4+4 layers": ["model.enc_layers=4", "model.dec_layers=4"],
}
SPLITS = ("valid", "test_2016_flickr", "test_2017_flickr")


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def averaging_only(name: str) -> int | None:
    """N when the lever only sets train.average_last: N (it changes nothing before the budget is spent)."""
    overrides = LEVERS[name]
    if len(overrides) == 1 and overrides[0].startswith("train.average_last="):
        return int(overrides[0].split("=")[1])
    return None


def key(name: str, steps: int | None) -> str:
    """The name a result is stored under: the lever, and the step budget when there is one."""
    return name if steps is None else f"{name}, {steps} updates"


def measure(config: str, name: str, minutes: float, out: Path, steps: int | None = None) -> dict:
    nmt = [sys.executable, "-m", "nmt"]
    last = averaging_only(name)
    workdir = out / slug(key("today" if last else name, steps))
    sets = [f"--set=workdir={workdir}", "--set=train.keep_last=10", *(f"--set={o}" for o in LEVERS[name])]
    if last:
        if not (workdir / "metrics.jsonl").exists():
            sys.exit(f"{name}: averages the `{key('today', steps)}` run's checkpoints; measure it first")
        ckpt_dir = workdir / "checkpoints"
        averaged = ckpt_dir / f"averaged_last{last}.pt"
        run([*nmt, "average", "--last", str(last), str(workdir), "-o", str(averaged)])
    else:
        run([*nmt, "prepare", config, *sets], log=out / f"{slug(key(name, steps))}.prepare.log")
        if steps is None:
            budget = [f"--set=train.max_minutes={minutes}", "--set=train.max_steps=100000"]
        else:
            budget = [f"--set=train.max_steps={steps}"]
        train = [*nmt, "train", config, "--restart", *sets, *budget]
        run(train, log=out / f"{slug(key(name, steps))}.train.log")
    metrics = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    record: dict = {
        "overrides": LEVERS[name],
        "minutes": minutes if steps is None else None,
        "step_budget": steps,
        "steps": max(m["step"] for m in metrics),
        "best_valid_bleu_during_training": max(m["bleu"] for m in metrics if m["event"] == "valid"),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes"),
        "threads": int(os.environ.get("OMP_NUM_THREADS", "2")),
    }
    if last:
        checkpoints = [f"averaged_last{last}"]
    else:
        checkpoints = ["best"] + (["averaged"] if (workdir / "checkpoints" / "averaged.pt").exists() else [])
    for ckpt in checkpoints:
        for split in SPLITS:
            doc = json.loads(
                run(
                    [
                        *nmt,
                        "evaluate",
                        config,
                        "--split",
                        split,
                        "--checkpoint",
                        ckpt,
                        "--json",
                        "--device",
                        "cpu",
                        "--out",
                        str(workdir / f"{ckpt}.{split}.hyp"),
                        *sets,
                    ]
                )  # fmt: skip
            )
            record[f"{'averaged' if last else ckpt}.{split}"] = {
                "bleu": round(doc["scores"]["bleu"], 2),
                "chrf": round(doc["scores"]["chrf"], 2),
            }
    return record


def table(results: dict, steps: int | None = None) -> str:
    """The results of one budget (wall time, or `steps` updates), each against `today` under the same budget."""
    base = results.get(key("today", steps))
    results = {n: r for n, r in results.items() if r.get("step_budget") == steps}
    rows = [
        "| lever | steps | valid BLEU | test_2016 BLEU | test_2017 BLEU | test_2016 change |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        kind = "averaged" if "averaged.valid" in r else "best"
        t16, t17, val = (r[f"{kind}.{s}"]["bleu"] for s in ("test_2016_flickr", "test_2017_flickr", "valid"))
        change = "" if base is None else f"{t16 - base['best.test_2016_flickr']['bleu']:+.2f}"
        rows.append(f"| {name} ({kind}) | {r['steps']:,} | {val:.2f} | {t16:.2f} | {t17:.2f} | {change} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/multi30k_de_en.yaml")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=30.0, help="wall budget of each run (default 30)")
    budget.add_argument("--steps", type=int, help="train each lever for exactly this many updates instead")
    parser.add_argument("--only", nargs="+", choices=list(LEVERS))
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "bench_levers")
    parser.add_argument("--list", action="store_true", help="print the levers and their overrides, run nothing")
    args = parser.parse_args()
    if args.list:
        for name, sets in LEVERS.items():
            print(f"{name}: {' '.join(sets) or '(the recipe as it is)'}")
        return
    out = args.out / Path(args.config).stem
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    for name in args.only or [n for n in LEVERS if key(n, args.steps) not in results]:
        results[key(name, args.steps)] = measure(args.config, name, args.minutes, out, args.steps)
        path.write_text(json.dumps(results, indent=1))
    print(table(results, args.steps))


if __name__ == "__main__":
    main()
