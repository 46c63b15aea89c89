"""`train.compile`: compiled and eager training agree; checkpoints are plain; a broken compiler falls back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nmt.checkpoint import plain_state_dict, read_checkpoint
from nmt.config import load_config
from nmt.data.prepare import prepare
from nmt.decode.load import load_model
from nmt.train.compiled import resolve_compile
from nmt.train.loop import train
from tests.corpora import FAST, toy_config

pytestmark = pytest.mark.slow  # inductor compiles C++ kernels: `make test-fast` skips them

STEPS = 3
EXACT = FAST + [
    "model.dropout=0.0",  # inductor draws dropout masks from its own generator: compare without dropout
    "model.attention_dropout=0.0",
    "model.activation_dropout=0.0",
    "train.precision=fp32",
    f"train.max_steps={STEPS}",
    "train.log_every=1",
    f"train.valid_every={STEPS}",
]


def test_resolve_compile() -> None:
    assert resolve_compile("auto", torch.device("cuda")) is True
    assert resolve_compile("auto", torch.device("cpu")) is False
    assert resolve_compile(True, torch.device("cpu")) is True
    assert resolve_compile(False, torch.device("cuda")) is False


def test_plain_state_dict_strips_wrapper_prefixes() -> None:
    state = {"_orig_mod.module.a.weight": 1, "_orig_mod.module.b": 2}
    assert plain_state_dict(state) == {"a.weight": 1, "b": 2}
    assert plain_state_dict({"a": 1, "_orig_mod.b": 2}) == {"a": 1, "_orig_mod.b": 2}  # not a wrapper's: kept


def losses(workdir: Path) -> list[float]:
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["event"] == "train"]


@pytest.mark.slow  # inductor compiles C++ kernels: about a minute on 2 cores with a cold cache
def test_compiled_and_eager_training_give_the_same_loss(tmp_path: Path) -> None:
    cfg_path = toy_config(tmp_path)
    runs = {}
    for flag in ("false", "true"):
        cfg = load_config(cfg_path, EXACT + [f"workdir={tmp_path / flag}", f"train.compile={flag}"])
        prepare(cfg)
        runs[flag] = (cfg, train(cfg))
    eager, compiled = losses(tmp_path / "false"), losses(tmp_path / "true")
    assert len(eager) == len(compiled) == STEPS
    torch.testing.assert_close(torch.tensor(compiled), torch.tensor(eager), rtol=2e-4, atol=0)
    assert runs["false"][1].graphs_compiled is None
    assert 1 <= runs["true"][1].graphs_compiled <= 8  # padded lengths + dynamic dims: recompiles stay few
    ckpt = read_checkpoint(tmp_path / "true" / "checkpoints" / "last.pt")
    assert not [k for k in ckpt["model"] if k.startswith(("_orig_mod.", "module."))]
    load_model(tmp_path / "true" / "checkpoints" / "last.pt")  # strict load into a plain model


def test_compile_without_a_working_compiler_warns_and_trains_eagerly(tmp_path: Path) -> None:
    """inductor on CPU needs a C++ compiler: with none, one warning line, then eager training."""
    cfg = toy_config(tmp_path)
    env = dict(os.environ, CXX=str(tmp_path / "no-such-c++"), TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"))
    nmt = [sys.executable, "-m", "nmt"]
    subprocess.run([*nmt, "prepare", str(cfg)], check=True, capture_output=True, env=env)
    run = subprocess.run(
        [*nmt, "train", str(cfg), *[a for s in FAST for a in ("--set", s)], "--set", "train.max_steps=4",
         "--set", "train.compile=true"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "Traceback" not in out
    warning = [line for line in out.splitlines() if "train.compile" in line]
    assert len(warning) == 1 and "uncompiled" in warning[0], out
    assert ", eager," in out
