"""Two-node training: two torchrun launchers on this machine meet by c10d rendezvous (gloo on CPU).

Each launcher stands for a node with one process. c10d gives node ranks in join order, so
no launcher test depends on which launcher becomes rank 0: where both must act alike they
get the same arguments, and otherwise the test finds rank 0 afterwards (the workdir it
wrote to). The last test fixes the ranks by hand (two spawned processes) to show that rank
1 never reads its experiment dir when resuming. The oracle is one process that accumulates
two batches per step (`train.accum_steps=2`), trained once for the whole module; the
prepared data is shared the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from nmt.checkpoint import read_checkpoint
from nmt.config import load_config
from nmt.data.prepare import prepare
from nmt.data.prepared import load_vocab
from nmt.experiment import Experiment
from nmt.model import build_model
from nmt.train.loop import train
from tests.corpora import FAST, toy_config

pytestmark = pytest.mark.slow  # torchrun launchers (subprocesses): `make test-fast` skips them

COMMON = FAST + [
    "model.dropout=0",  # ranks draw other dropout masks than one process would
    "train.warmup_steps=0",
    "train.lr=1e-2",
    "train.log_every=1",
    "train.valid_every=2",
    "train.precision=fp32",
]
STEPS = 4
LAUNCH_TIMEOUT_S = 120


def squeeze(text: str) -> str:
    """`text` without whitespace: rich wraps long lines (and paths) where it likes."""
    return "".join(text.split())


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(configs: tuple[Path, Path], overrides: tuple[list[str], list[str]], logs: Path) -> list[str]:
    """Run two torchrun launchers (one process each) that rendezvous with each other; their outputs.

    Asserts that both exit 0. Fails (after killing both) when either is still running after
    LAUNCH_TIMEOUT_S.
    """
    outputs = launch_two_nodes(configs, overrides, logs)
    for code, out in outputs:
        assert code == 0, out[-4000:]
    return [out for _, out in outputs]


def launch_two_nodes(
    configs: tuple[Path, Path], overrides: tuple[list[str], list[str]], logs: Path
) -> list[tuple[int, str]]:
    """Start both launchers, wait for both; (exit code, stdout+stderr) of each."""
    port, rdzv_id = free_port(), uuid.uuid4().hex
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for node, (config, extra) in enumerate(zip(configs, overrides)):
        log = open(logs / f"node{node}.txt", "w")  # noqa: SIM115 (closed below)
        args = [
            *(sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1"),
            *("--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", rdzv_id),
            *("-m", "nmt", "train", str(config), *sets(COMMON + extra)),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        procs.append(
            (subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True), log)
        )
    try:
        for proc, _ in procs:
            proc.wait(timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        for proc, _ in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the launcher's own session: it and its worker
                proc.wait()
        pytest.fail(f"the two launchers did not finish within {LAUNCH_TIMEOUT_S} s (a hang?); logs in {logs}")
    finally:
        for _, log in procs:
            log.close()
    return [(proc.returncode, (logs / f"node{n}.txt").read_text()) for n, (proc, _) in enumerate(procs)]


def with_data(prepared: Path, workdir: Path) -> Path:
    """A fresh experiment dir holding a copy of the prepared data (a node's own copy)."""
    shutil.copytree(prepared / "data", workdir / "data")
    return workdir


def listing(workdir: Path) -> list[tuple[str, int]]:
    """Every path under `workdir` with its modification time: changes when anything is written there."""
    return sorted((str(p.relative_to(workdir)), p.lstat().st_mtime_ns) for p in workdir.rglob("*"))


def model_of(workdir: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(workdir / "checkpoints" / "last.pt")["model"]


def records(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def assert_same_training(got: Path, want: Path) -> None:
    """The same weights (not the initial ones) and one metrics record per event, losses equal."""
    a, b = model_of(got), model_of(want)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    got_records, want_records = records(got), records(want)
    assert [(r["event"], r["step"]) for r in got_records] == [(r["event"], r["step"]) for r in want_records]
    for r, s in zip(got_records, want_records):
        assert r["loss"] == pytest.approx(s["loss"], rel=1e-5)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(config, experiment dir) of the toy task, prepared once."""
    base = tmp_path_factory.mktemp("multinode")
    config = toy_config(base, train=200, valid=8)
    prepare(load_config(config, COMMON))
    return config, base / "exp"


@pytest.fixture(scope="module")
def reference(prepared: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One process, two batches per step, STEPS steps: what two nodes of one process each must equal."""
    config, exp = prepared
    workdir = with_data(exp, tmp_path_factory.mktemp("reference") / "exp")
    result = train(
        load_config(config, COMMON + [f"workdir={workdir}", "train.accum_steps=2", f"train.max_steps={STEPS}"])
    )
    assert result.stopped_by == "max_steps" and result.state.step == STEPS
    # the oracle trained: most tensors moved away from the initial weights (the same seed builds them again)
    cfg = load_config(config, COMMON)
    vocab = load_vocab(Experiment(workdir).data_dir)
    torch.manual_seed(cfg.train.seed)
    initial = build_model(cfg.model, src_vocab_size=vocab.src_size, tgt_vocab_size=vocab.tgt_size).state_dict()
    trained = model_of(workdir)
    assert sum(not torch.allclose(trained[k], initial[k]) for k in trained) > len(trained) // 2
    return workdir


def test_two_nodes_equal_one_process_accumulating_both_batches_and_only_rank_0_writes(
    prepared: tuple[Path, Path], reference: Path, tmp_path: Path
) -> None:
    """Each node its own experiment dir and prepared data: only rank 0's dir is written to."""
    config, exp = prepared
    # the second node keeps the corpus elsewhere and prepared it there: the same data, other paths
    corpus = shutil.copytree(config.parent / "corpus", tmp_path / "elsewhere")
    at = [f"data.splits.{split}={corpus / split}" for split in ("train", "valid", "test")]
    prepare(load_config(config, COMMON + [f"workdir={tmp_path / 'node1'}", *at]))
    workdirs = [with_data(exp, tmp_path / "node0"), tmp_path / "node1"]
    before = [listing(w) for w in workdirs]
    steps = f"train.max_steps={STEPS}"
    two_nodes(
        (config, config), ([f"workdir={workdirs[0]}", steps], [f"workdir={workdirs[1]}", steps]), tmp_path / "logs"
    )
    written = [w for w in workdirs if (w / "checkpoints").exists()]
    assert len(written) == 1, "exactly one node (rank 0) writes checkpoints"
    (main,) = written
    (other,) = [w for w in workdirs if w != main]
    assert listing(other) == before[workdirs.index(other)], "the other rank wrote to its experiment dir"
    ckpts = lambda w: sorted(p.name for p in (w / "checkpoints").iterdir())  # noqa: E731
    assert ckpts(main) == ckpts(reference) == ["best.pt", "last.pt", "step_2.pt", "step_4.pt"]
    assert (main / "config.yaml").is_file()
    assert_same_training(main, reference)


def test_both_nodes_restart_and_resume_from_rank_0s_checkpoint(
    prepared: tuple[Path, Path], reference: Path, tmp_path: Path
) -> None:
    """Train to step 2, both launchers exit, both restart to step STEPS: as if never stopped."""
    config, exp = prepared
    workdir = with_data(exp, tmp_path / "exp")  # one dir both nodes see, as on a shared filesystem
    same = [f"workdir={workdir}"]
    two_nodes((config, config), (same + ["train.max_steps=2"], same + ["train.max_steps=2"]), tmp_path / "first")
    assert read_checkpoint(workdir / "checkpoints" / "last.pt")["step"] == 2
    outputs = two_nodes(
        (config, config),
        (same + [f"train.max_steps={STEPS}"], same + [f"train.max_steps={STEPS}"]),
        tmp_path / "second",
    )
    resumed = squeeze(f"resuming from {workdir / 'checkpoints' / 'last.pt'} at step 2")
    assert sum(squeeze(out).count(resumed) for out in outputs) == 1, "rank 0 (alone) says it resumed"
    assert_same_training(workdir, reference)


def manifest_fingerprint(workdir: Path) -> str:
    """The manifest's sha256 without input paths, computed here independently of nmt."""
    manifest = json.loads((workdir / "data" / "manifest.json").read_text())
    for spec in manifest["inputs"].values():
        del spec["src"], spec["tgt"]
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def test_nodes_with_different_prepared_data_stop_together_with_one_clear_error(
    prepared: tuple[Path, Path], tmp_path: Path
) -> None:
    """The second node's data come from another corpus (same settings): both stop at start, no hang."""
    config, exp = prepared
    mine = with_data(exp, tmp_path / "mine")
    other_config = toy_config(tmp_path / "other", train=150, valid=8)
    prepare(load_config(other_config, COMMON))
    other = tmp_path / "other" / "exp"
    outputs = launch_two_nodes(
        (config, other_config),
        ([f"workdir={mine}", f"train.max_steps={STEPS}"], [f"workdir={other}", f"train.max_steps={STEPS}"]),
        tmp_path / "logs",
    )
    fingerprints = {manifest_fingerprint(mine)[:12], manifest_fingerprint(other)[:12]}
    assert len(fingerprints) == 2
    for code, out in outputs:
        worker, _, launcher = out.partition("failed (exitcode: 2)")  # torchrun's report of our exit code follows
        assert code != 0 and launcher, out[-4000:]
        said = squeeze(worker)
        assert squeeze("error: the ranks' prepared data differ: rank 1 has fingerprint") in said, out[-4000:]
        assert all(f in said for f in fingerprints) and squeeze("rank 0 has fingerprint") in said, out[-4000:]
        assert squeeze(str(mine / "data")) in said and squeeze(str(other / "data")) in said
        assert squeeze("hint: prepare the same data on every node") in said
        assert "Traceback" not in worker, out[-4000:]  # torchrun prints its own after the report


def rank_worker(rank: int, port: int, config: str, workdirs: tuple[str, str], steps: int, out_dir: str) -> None:
    """One of two ranks (torch.multiprocessing.spawn) training to `steps` in its own `workdirs[rank]`."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK="0", WORLD_SIZE="2")
    torch.set_num_threads(1)
    result = train(load_config(Path(config), COMMON + [f"workdir={workdirs[rank]}", f"train.max_steps={steps}"]))
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"step": result.state.step}))


def two_ranks(config: Path, workdirs: tuple[Path, Path], steps: int, out_dir: Path) -> None:
    """Train to `steps` in two spawned ranks whose rank we choose (rank r in workdirs[r])."""
    for old in out_dir.glob("rank*.json"):
        old.unlink()
    port, dirs = free_port(), (str(workdirs[0]), str(workdirs[1]))
    ranks = mp.spawn(rank_worker, args=(port, str(config), dirs, steps, str(out_dir)), nprocs=2, join=False)
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    while not ranks.join(timeout=1):
        if time.monotonic() > deadline:
            for process in ranks.processes:
                process.kill()
            pytest.fail(f"two ranks did not finish in {LAUNCH_TIMEOUT_S} s")
    assert [json.loads((out_dir / f"rank{r}.json").read_text())["step"] for r in (0, 1)] == [steps, steps]


def test_only_rank_0_needs_the_experiment_dir_to_resume(
    prepared: tuple[Path, Path], reference: Path, tmp_path: Path
) -> None:
    """Ranks chosen by hand (not by torchrun): rank 1's experiment dir holds only its data.

    Rank 0 trains to step 2 and, restarted, resumes to STEPS; rank 1 writes nothing to its
    dir, and on the restart its dir holds a corrupt last.pt that it must not read.
    """
    config, exp = prepared
    main, other = with_data(exp, tmp_path / "rank0"), with_data(exp, tmp_path / "rank1")
    before = listing(other)
    two_ranks(config, (main, other), 2, tmp_path)
    assert listing(other) == before
    (other / "checkpoints").mkdir()
    (other / "checkpoints" / "last.pt").write_bytes(b"corrupt")
    before = listing(other)
    two_ranks(config, (main, other), STEPS, tmp_path)
    assert listing(other) == before
    assert_same_training(main, reference)
