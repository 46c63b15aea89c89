"""Validation under DDP (two gloo processes on CPU) splits the work and scores like one process.

A toy model is trained briefly in this process; then two spawned ranks validate its
checkpoint together. Each must decode only about half of the sentences, and both must
return the one-process BLEU (the same hypotheses, so exactly) and loss (up to float
summation order).
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from nmt.config import load_config
from nmt.data.prepare import prepare
from nmt.data.prepared import open_for_training
from nmt.decode.load import load_model
from nmt.experiment import Experiment
from nmt.precision import Precision
from nmt.train import validate as validate_module
from nmt.train.distributed import Dist, init_distributed
from nmt.train.loop import train
from nmt.train.validate import Validation, shard_by_length, validate
from tests.corpora import FAST, reverse_pairs, toy_config, write_split

pytestmark = pytest.mark.slow  # torchrun (subprocesses): `make test-fast` skips them

TRAIN = FAST + [
    "train.max_steps=200",
    "train.valid_every=200",
    "train.log_every=200",
    "train.lr=1e-2",
    "train.warmup_steps=10",
    "model.dropout=0",
    "train.precision=fp32",
]
# small budgets, so that the loss and the decoding both have several batches to share
VALIDATE = TRAIN + ["train.batch_tokens=64", "decode.batch_tokens=64"]
VALID = reverse_pairs(15, seed=2) + [("", "EMPTY SOURCE")] + reverse_pairs(14, seed=4)
NONEMPTY = sum(1 for src, _ in VALID if src)


def run_validation(config: Path, dist: Dist | None) -> tuple[Validation, int]:
    """Validate the toy experiment's last checkpoint; also how many non-empty sources this process decoded."""
    cfg = load_config(config, VALIDATE)
    exp = Experiment.from_config(cfg)
    data = open_for_training(cfg, exp.data_dir, exp.config_path)
    model = load_model(exp.last_checkpoint).model
    decoded = []
    translate_ids = validate_module.translate_ids

    def counting(model, src, *args, **kwargs):
        decoded.append(sum(1 for ids in src if ids))
        return translate_ids(model, src, *args, **kwargs)

    validate_module.translate_ids = counting
    try:
        device = torch.device("cpu")
        precision = Precision("fp32", device)
        valid = validate(model, data.valid, data.vocab, cfg, device=device, precision=precision, dist=dist)
    finally:
        validate_module.translate_ids = translate_ids
    return valid, sum(decoded)


def worker(rank: int, world_size: int, port: int, config: str, out_dir: str) -> None:
    """One rank (under torch.multiprocessing.spawn): join the gloo group and validate; write the result."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size)
    )
    torch.set_num_threads(1)
    dist = init_distributed("cpu")
    try:
        valid, decoded = run_validation(Path(config), dist)
    finally:
        dist.close()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps({**asdict(valid), "decoded": decoded}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_split_the_decoding_and_score_like_one_process(tmp_path: Path) -> None:
    config = toy_config(tmp_path, train=200, valid=len(VALID))
    write_split(tmp_path / "corpus", "valid", VALID)
    cfg = load_config(config, TRAIN)
    prepare(cfg)
    assert train(cfg).stopped_by == "max_steps"
    alone, decoded = run_validation(config, None)
    assert decoded == NONEMPTY
    assert alone.bleu > 0  # not trivial hypotheses

    ranks = mp.spawn(worker, args=(2, free_port(), str(config), str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 120
    while not ranks.join(timeout=1):
        if time.monotonic() > deadline:
            for process in ranks.processes:
                process.kill()
            pytest.fail("validation under DDP did not finish in 120 s")
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    scores = [{k: v for k, v in r.items() if k != "decoded"} for r in results]
    assert scores[0] == scores[1]  # every field, valid_s too: rank 0's Validation
    assert results[0]["bleu"] == alone.bleu
    assert results[0]["loss"] == pytest.approx(alone.loss, rel=1e-5)
    assert results[0]["nll"] == pytest.approx(alone.nll, rel=1e-5)
    decoded_by_rank = [r["decoded"] for r in results]
    assert sum(decoded_by_rank) == NONEMPTY
    assert all(abs(n - NONEMPTY / 2) <= 1 for n in decoded_by_rank), decoded_by_rank


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 11])
def test_shards_cover_every_index_once(world_size: int, n: int) -> None:
    lengths = [(7 * i) % 5 + 1 for i in range(n)]
    dists = [Dist(rank=r, world_size=world_size) for r in range(world_size)]
    for shards in ([shard_by_length(lengths, d) for d in dists], [d.share(list(range(n))) for d in dists]):
        assert sorted(i for shard in shards for i in shard) == list(range(n))
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    tokens = [sum(lengths[i] for i in shard_by_length(lengths, d)) for d in dists]
    assert max(tokens) - min(tokens) <= max(lengths, default=0)  # dealt by length: similar token counts
