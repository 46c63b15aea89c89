"""Shared fixtures: pinned threads, NMT_DATA, tiny parallel corpora, CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("NMT_DATA", str((ROOT.parent / "shared" / "data").resolve()))
os.environ["NMT_DATA"] = str(Path(os.environ["NMT_DATA"]).resolve())
# On 2 busy cores, oversubscribed threads make small matmuls 25x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# `make test` runs one pytest-xdist worker per core, so each test has one core: the few tests that run the
# CLI on two threads as users do (the demo, the Multi30k slice) then take one (THREADS), and every other
# subprocess gets one whatever the caller exported (two would spin against the other worker).
XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if XDIST_WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = "1"
THREADS = "1" if XDIST_WORKERS > 1 else "2"
# Tests decode in fp32 on every machine (precision auto would pick bf16 where the CPU has it),
# so exact comparisons do not depend on the CPU; the tests of bf16 ask for it explicitly.
os.environ["NMT_CPU_BF16"] = "0"


def pytest_configure(config: pytest.Config) -> None:
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


# Session fixtures that train or start something (tens of seconds each): `make test` runs the suite on
# every core with pytest-xdist (`--dist loadgroup`), and each worker would build its own copy, so every
# test file that uses one of them goes to the same worker (see xdist_groups).
SHARED_SESSION_FIXTURES = ("multilingual_model", "argos_package", "lt_home", "lt_server")


def xdist_groups(items: list[pytest.Item]) -> dict[str, str]:
    """Test file -> xdist group: one group per file (module fixtures are built once), and the files that
    share an expensive session fixture merged into one group (union-find over files and fixtures)."""
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for item in items:
        path = str(item.path.relative_to(ROOT))
        find(path)
        for name in SHARED_SESSION_FIXTURES:
            if name in getattr(item, "fixturenames", ()):
                parent[find(path)] = find("fixture:" + name)
    return {path: find(path) for path in {str(item.path.relative_to(ROOT)) for item in items}}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    groups = xdist_groups(items)
    for item in items:
        item.add_marker(pytest.mark.xdist_group(groups[str(item.path.relative_to(ROOT))]))
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def multi30k() -> Path:
    path = Path(os.environ["NMT_DATA"]) / "multi30k"
    if not (path / "train.de.gz").is_file():
        pytest.skip(f"Multi30k not found under NMT_DATA={os.environ['NMT_DATA']}")
    return path


def run_nmt(
    *args: str,
    cwd: Path | None = None,
    input: str | bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (`python -m nmt`)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    text = not isinstance(input, bytes)
    return subprocess.run(
        [sys.executable, "-m", "nmt", *args],
        cwd=cwd,
        input=input,
        capture_output=True,
        text=text,
        env=full_env,
        timeout=timeout,
    )


@pytest.fixture
def nmt_cli():
    return run_nmt


# ---------------------------------------------------------------- translate / evaluate
# A real, self-contained checkpoint of a tiny randomly initialised model (no training),
# in the format documented in nmt/decode/load.py.

from dataclasses import dataclass  # noqa: E402  (this section is appended; the file's head is shared)


@dataclass(frozen=True)
class TinyCheckpoint:
    path: Path  # <workdir>/checkpoints/best.pt
    config: Path  # the toy experiment YAML (decode.device: cpu, decode.beam: 3)
    corpus: Path  # the toy corpus directory: {train,valid,test}.{src,tgt}
    max_len: int  # the model's maximum source length (tokens incl. eos)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> TinyCheckpoint:
    import torch

    from nmt import __version__
    from nmt.checkpoint import FORMAT, VERSION
    from nmt.config import config_to_dict, load_config
    from nmt.data.prepare import prepare
    from nmt.data.prepared import load_vocab
    from nmt.experiment import Experiment
    from nmt.model import build_model
    from tests.corpora import toy_config

    tmp = tmp_path_factory.mktemp("tiny_checkpoint")
    config = toy_config(tmp, extra="decode:\n  device: cpu\n  beam: 3\n")
    max_len = 64
    cfg = load_config(config, overrides=[f"model.max_len={max_len}"])
    prepare(cfg)
    exp = Experiment.from_config(cfg)
    vocab = load_vocab(exp.data_dir)
    torch.manual_seed(0)
    model = build_model(cfg.model, src_vocab_size=vocab.src_size, tgt_vocab_size=vocab.tgt_size)
    ckpt = {
        "format": FORMAT,
        "version": VERSION,
        "nmt_version": __version__,
        "config": config_to_dict(cfg),
        "vocab": {"src": vocab.src_model, "tgt": vocab.tgt_model},
        "model": model.state_dict(),  # type: ignore[attr-defined]
        "step": 0,
        "epoch": 0,
        "train_state": None,
    }
    exp.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, exp.best_checkpoint)
    return TinyCheckpoint(exp.best_checkpoint, config, tmp / "corpus", max_len)


# ---------------------------------------------------------------- Argos Translate / LibreTranslate
# The real client and server, from the LibreTranslate test venv that `make lt-venv` builds
# (tests/lt_server.py); each fixture is made once per session.

from collections.abc import Iterator  # noqa: E402

from tests.lt_server import (  # noqa: E402
    ArgosHome,
    ArgosPackage,
    LibreTranslateServer,
    install_package,
    lt_python,
    make_argos_home,
    trained_package,
)


@pytest.fixture(scope="session")
def lt_venv() -> Path:
    """The LibreTranslate test venv's python; skips the test (fails under CI) when it is not built."""
    return lt_python()


@pytest.fixture(scope="session")
def argos_package(tmp_path_factory: pytest.TempPathFactory) -> ArgosPackage:
    """A trained de->en model (number words) and its `nmt export --argos` package."""
    return trained_package(tmp_path_factory.mktemp("argos_package"))


@pytest.fixture(scope="session")
def lt_home(lt_venv: Path, argos_package: ArgosPackage, tmp_path_factory: pytest.TempPathFactory) -> ArgosHome:
    """Argos Translate's directories in a temp dir, with `argos_package` installed by the real client."""
    home = make_argos_home(tmp_path_factory.mktemp("argos_home"))
    install_package(home, argos_package.package)
    return home


@pytest.fixture(scope="session")
def lt_server(lt_home: ArgosHome) -> Iterator[LibreTranslateServer]:
    """The real `libretranslate` on 127.0.0.1 serving `argos_package`, started offline, greedy (ARGOS_BEAM_SIZE=1)."""
    server = LibreTranslateServer(lt_home, env={"ARGOS_BEAM_SIZE": "1"})
    yield server
    server.stop()


# ---------------------------------------------------------------- a trained multilingual model
# One model for three directions of the number-words corpus (en-de, en-fr, de-en), trained once per
# session (~70 s on one core) for the multilingual tests of training, export and serving.


@dataclass(frozen=True)
class MultilingualModel:
    config: Path  # the experiment YAML (test split: corpus/test.{en,de,fr})
    checkpoint: Path  # <workdir>/checkpoints/best.pt
    corpus: Path  # {train,valid,test}.{en,de,fr}, multi-way parallel
    directions: tuple[str, ...]


MULTILINGUAL_DIRECTIONS = ("en-de", "en-fr", "de-en")
# the demo's recipe (configs/demo.yaml), scaled for three directions
MULTILINGUAL_RECIPE = """vocab:
  size: 160
model:
  preset: tiny
  d_model: 128
  n_heads: 4
  ffn_dim: 256
  dropout: 0.0
  max_len: 128
train:
  device: cpu
  precision: fp32
  compile: false
  batch_tokens: 3000
  lr: 5e-3
  schedule: cosine
  warmup_steps: 100
  max_steps: 300
  log_every: 50
  valid_every: 300
  valid_max_lines: 50
decode:
  beam: 4
"""


@pytest.fixture(scope="session")
def multilingual_model(tmp_path_factory: pytest.TempPathFactory) -> MultilingualModel:
    """Prepare and train (in this process) the three-direction number-words model."""
    from nmt.config import load_config
    from nmt.data.prepare import prepare
    from nmt.train.loop import train
    from tests.corpora import multilingual_config

    tmp = tmp_path_factory.mktemp("multilingual_model")
    path = multilingual_config(tmp, list(MULTILINGUAL_DIRECTIONS), sizes=(4000, 100, 100), below=100)
    text = path.read_text()
    path.write_text(text[: text.index("vocab:")] + MULTILINGUAL_RECIPE)
    cfg = load_config(path)
    prepare(cfg)
    train(cfg)
    return MultilingualModel(path, tmp / "exp" / "checkpoints" / "best.pt", tmp / "corpus", MULTILINGUAL_DIRECTIONS)


def random_multilingual_checkpoint(tmp: Path, *, lang_token: str = "target", seed: int = 0) -> Path:
    """A self-contained checkpoint of a randomly initialised multilingual model (en-de, en-fr, de-en over the
    toy number words, tiny preset, max_len 48) whose language token goes where `lang_token` says."""
    from nmt.config import load_config
    from nmt.data.prepare import prepare
    from nmt.data.prepared import load_vocab
    from nmt.experiment import Experiment
    from tests.corpora import multilingual_config

    path = multilingual_config(tmp, list(MULTILINGUAL_DIRECTIONS), extra="decode:\n  device: cpu\n  beam: 3\n")
    cfg = load_config(path, [f"data.lang_token={lang_token}", "model.max_len=48"])
    prepare(cfg)
    vocab = load_vocab(Experiment.from_config(cfg).data_dir)
    return save_random_checkpoint(tmp / "model.pt", cfg, vocab, seed=seed)


def save_random_checkpoint(path: Path, cfg: Any, vocab: Any, *, seed: int = 0) -> Path:
    """A self-contained checkpoint at `path` of a model of `cfg` (an ExperimentConfig) randomly initialised
    from `seed`, over `vocab` (a Vocab): no training."""
    import torch

    from nmt.checkpoint import build_checkpoint, save_checkpoint
    from nmt.model import build_model

    torch.manual_seed(seed)
    net = build_model(cfg.model, src_vocab_size=vocab.src_size, tgt_vocab_size=vocab.tgt_size)
    ckpt = build_checkpoint(
        model_state=net.state_dict(),  # type: ignore[attr-defined]
        cfg=cfg,
        vocab_models=(vocab.src_model, vocab.tgt_model),
        step=7,
        epoch=0,
        train_state=None,
    )
    save_checkpoint(path, ckpt)
    return path
