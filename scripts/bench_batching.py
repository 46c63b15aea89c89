"""Cost of one epoch's batching (`nmt.data.batching.make_batches`) at training-set scale.

    python scripts/bench_batching.py CONFIG [--set KEY=VALUE ...] [--save-lengths L.npy]
    python scripts/bench_batching.py --lengths L.npy        # e.g. with PYTHONPATH=<older checkout>

Reads the padded lengths of a prepared training set (or a saved .npy of them, so an older
checkout whose reader cannot open today's shards can be timed on the same lengths via
PYTHONPATH), then times `make_batches` for epochs 1-3 with the config's batch_tokens /
max_sentences: median seconds, number of batches, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from nmt.data.batching import make_batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, nargs="?")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--lengths", type=Path, help="padded lengths (.npy) instead of a prepared config")
    parser.add_argument("--save-lengths", type=Path, help="write the padded lengths read from CONFIG here")
    parser.add_argument("--batch-tokens", type=int, default=4096)
    args = parser.parse_args()
    batch_tokens, max_sentences = args.batch_tokens, None
    if args.lengths is not None:
        lengths = np.load(args.lengths)
    else:
        from nmt.config import load_config
        from nmt.data.batching import padded_lengths
        from nmt.train.loop import load_datasets

        cfg = load_config(args.config, args.overrides)
        from nmt.experiment import Experiment

        train_ds = load_datasets(cfg, Experiment.from_config(cfg)).train
        lengths = padded_lengths(train_ds)
        batch_tokens, max_sentences = cfg.train.batch_tokens, cfg.train.max_sentences
        if args.save_lengths:
            np.save(args.save_lengths, lengths)
    times, n_batches = [], 0
    for epoch in (1, 2, 3):
        t0 = time.perf_counter()
        batches = make_batches(lengths, batch_tokens=batch_tokens, max_sentences=max_sentences, seed=1, epoch=epoch)
        times.append(time.perf_counter() - t0)
        n_batches = len(batches)
    print(
        json.dumps(
            {
                "figure": "seconds per epoch of make_batches (median of 3 epochs)",
                "examples": int(len(lengths)),
                "batch_tokens": batch_tokens,
                "batches": n_batches,
                "seconds": round(statistics.median(times), 3),
                "make_batches_from": __import__("nmt").__file__,
            }
        )
    )


if __name__ == "__main__":
    main()
