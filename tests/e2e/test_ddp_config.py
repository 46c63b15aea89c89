"""Ranks that would disagree stop at start with one error on every rank, and no collective waits forever.

Two torchrun launchers (gloo on CPU) meet by c10d rendezvous as in test_multinode.py, whose
helpers these tests reuse: one launcher given another `train.lr` and `train.label_smoothing`
(which used to finish with exit 0 and diverged replicas), and an epoch with fewer batches
than ranks (which used to train no step). The timeout test spawns two ranks by hand: rank 1
never joins rank 0's collective but stays alive, so only the timeout can end rank 0's wait.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nmt.config import load_config
from nmt.data.batching import make_batches
from nmt.data.prepare import prepare
from nmt.errors import ConfigError
from nmt.train.distributed import TIMEOUT_ENV, Dist, collective_timeout
from tests.corpora import toy_config
from tests.e2e.test_multinode import COMMON, free_port, launch_two_nodes, squeeze, with_data

pytestmark = pytest.mark.slow  # torchrun launchers (subprocesses): `make test-fast` skips them


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(config, experiment dir) of the toy task (200 training pairs), prepared once."""
    base = tmp_path_factory.mktemp("ddp_config")
    config = toy_config(base, train=200, valid=8)
    prepare(load_config(config, COMMON))
    return config, base / "exp"


def worker_errors(outputs: list[tuple[int, str]]) -> list[str]:
    """Each launcher's worker output before torchrun's report of our exit code 2, whitespace removed."""
    said = []
    for code, out in outputs:
        worker, _, launcher = out.partition("failed (exitcode: 2)")
        assert code != 0 and launcher, out[-4000:]
        assert "Traceback" not in worker, out[-4000:]
        said.append(squeeze(worker))
    return said


def test_nodes_with_different_configs_stop_together_naming_the_keys_and_ranks(
    prepared: tuple[Path, Path], tmp_path: Path
) -> None:
    config, exp = prepared
    workdirs = [with_data(exp, tmp_path / f"node{n}") for n in (0, 1)]  # paths may differ: not named
    steps = "train.max_steps=2"
    outputs = launch_two_nodes(
        (config, config),
        (
            [f"workdir={workdirs[0]}", steps],
            [f"workdir={workdirs[1]}", steps, "train.lr=2e-2", "train.label_smoothing=0.2"],
        ),
        tmp_path / "logs",
    )
    for said in worker_errors(outputs):
        assert squeeze("error: the ranks' configs differ in 2 settings:") in said, said[-3000:]
        message = said[said.index(squeeze("configs differ")) : said.index("hint:")]
        # c10d numbers the launchers in the order they join: either may be rank 0
        assert re.search(r"train\.label_smoothing:0\.1onrank[01]\(.+\),0\.2onrank[01]", message), message
        assert re.search(r"train\.lr:0\.01onrank[01]\(.+\),0\.02onrank[01]", message), message
        assert "workdir" not in message and "splits" not in message
        assert squeeze("hint: start every node with the same config and --set options") in said
    for workdir in workdirs:
        assert not (workdir / "checkpoints").exists()


def test_an_epoch_with_fewer_batches_than_ranks_is_an_error_not_an_endless_loop(
    prepared: tuple[Path, Path], tmp_path: Path
) -> None:
    """All 200 pairs fit in one batch of 100,000 tokens: two ranks would get none and train no step."""
    config, exp = prepared
    workdir = with_data(exp, tmp_path / "exp")
    same = [f"workdir={workdir}", "train.batch_tokens=100000", "train.max_epochs=2"]
    outputs = launch_two_nodes((config, config), (same, same), tmp_path / "logs")
    for said in worker_errors(outputs):
        assert squeeze("error: an epoch of the training data makes 1 batch") in said, said[-3000:]
        assert squeeze("for 2 ranks") in said
        hint = re.search(r"hint:lowertrain\.batch_tokensto([\d,]+)orless", said)
        assert hint, said[-3000:]
        assert 0 < int(hint.group(1).replace(",", "")) < 100000 // 2
    assert not (workdir / "checkpoints").exists()


@pytest.mark.parametrize("ranks", [2, 3, 8])
def test_the_budget_in_the_hint_gives_every_rank_a_batch(ranks: int) -> None:
    """make_batches (the loop's batching) cuts at least one batch per rank under the hint's budget."""
    lengths = np.random.default_rng(ranks).integers(5, 40, size=120)
    dist = Dist(rank=ranks - 1, world_size=ranks)
    with pytest.raises(ConfigError) as error:
        dist.epoch_share(
            make_batches(lengths, batch_tokens=10**6, max_sentences=None, seed=1, epoch=0),
            lengths=lengths,
            batch_tokens=10**6,
        )
    assert f"makes 1 batch (train.batch_tokens=1,000,000) for {ranks} ranks" in str(error.value)
    budget = int(re.search(r"to ([\d,]+) or less", error.value.hint).group(1).replace(",", ""))
    for seed in range(5):
        batches = make_batches(lengths, batch_tokens=budget, max_sentences=None, seed=seed, epoch=0)
        assert len(batches) >= ranks
        assert len(dist.epoch_share(batches, lengths=lengths, batch_tokens=budget)) == len(batches) // ranks
    tiny = np.full(ranks - 1, 30)  # fewer examples than ranks: no budget helps
    with pytest.raises(ConfigError, match="train on fewer processes"):
        dist.epoch_share(
            make_batches(tiny, batch_tokens=30, max_sentences=None, seed=1, epoch=0), lengths=tiny, batch_tokens=30
        )


# One of two ranks (RANK from the environment): rank 0 enters a barrier that rank 1 never
# enters and writes how it ended to argv[1]; rank 1 stays alive until that file exists, so
# that only the timeout (not a closed connection) can end rank 0's wait.
WAITING_RANK = """
import json, os, sys, time
from pathlib import Path
from nmt.train.distributed import init_distributed
result = Path(sys.argv[1])
dist = init_distributed("cpu")
if dist.rank == 1:
    deadline = time.monotonic() + 60
    while not result.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    sys.exit(0)
start = time.monotonic()
try:
    dist.barrier()
    outcome = "returned"
except Exception as exc:  # torch's timeout error (a RuntimeError)
    outcome = f"{type(exc).__name__}: {exc}"
result.write_text(json.dumps({"waited_s": time.monotonic() - start, "outcome": outcome}))
"""


def test_a_rank_waiting_for_a_collective_that_never_comes_gives_up_after_the_timeout(tmp_path: Path) -> None:
    result, port = tmp_path / "rank0.json", free_port()
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", WAITING_RANK, str(result)],
            env={
                **os.environ,
                **dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2"),
                **{"LOCAL_RANK": "0", "OMP_NUM_THREADS": "1", TIMEOUT_ENV: "2"},
            },
        )
        for rank in (0, 1)
    ]
    deadline = time.monotonic() + 45  # before the fix: gloo's default, 30 minutes
    try:
        while not result.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert result.exists(), "rank 0 still waits in the barrier: no finite timeout"
        report = json.loads(result.read_text())
        assert report["outcome"] != "returned" and report["waited_s"] < 30, report
        assert "Timed out" in report["outcome"], report
    finally:
        for process in ranks:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.mark.parametrize("value", ["", "2.5", "1800"])
def test_the_timeout_comes_from_the_environment_with_a_default(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(TIMEOUT_ENV, value)
    assert collective_timeout().total_seconds() == (float(value) if value else 600)


@pytest.mark.parametrize("value", ["ten", "0", "-5", "nan", "inf"])
def test_a_bad_timeout_is_a_config_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(TIMEOUT_ENV, value)
    with pytest.raises(ConfigError, match=TIMEOUT_ENV):
        collective_timeout()
