"""Training on the toy task, in-process: overfitting, bitwise resume, atomic checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nmt.checkpoint import read_checkpoint, save_checkpoint
from nmt.config import load_config
from nmt.data.prepare import prepare
from nmt.data.prepared import MANIFEST
from nmt.decode.load import load_model
from nmt.errors import CheckpointError, ConfigError, DataError, NmtError, TrainingStopped
from nmt.experiment import Experiment
from nmt.train.loop import TrainResult, train
from nmt.train.saving import average_checkpoints
from tests.corpora import FAST, reverse_pairs, toy_config, write_split


def prepared(tmp_path: Path, overrides: list[str]):
    cfg = load_config(toy_config(tmp_path, train=120, valid=10), FAST + overrides)
    prepare(cfg)
    return cfg


def test_tiny_model_overfits_a_handful_of_pairs(tmp_path: Path) -> None:
    write_split(tmp_path / "few", "train", reverse_pairs(8, seed=5))
    cfg = load_config(
        toy_config(tmp_path, train=120, valid=10),
        FAST
        + [
            "train.max_steps=150",
            "train.valid_every=150",
            "train.log_every=50",
            "model.dropout=0",
            "train.label_smoothing=0",
            "train.lr=1e-2",
            "train.warmup_steps=10",
            "vocab.size=60",
            f"data.splits.train={tmp_path / 'few' / 'train'}",
        ],
    )
    prepare(cfg)
    train(cfg)
    records = [json.loads(line) for line in Experiment.from_config(cfg).metrics_path.read_text().splitlines()]
    losses = [r["loss"] for r in records if r["event"] == "train"]
    assert losses[-1] < 0.05, losses


RNN = ["model.arch=rnn", "model.cell=lstm", "model.attention=luong_general", "model.enc_layers=2"]


@pytest.mark.parametrize("arch", [[], RNN], ids=["transformer", "rnn"])
def test_resume_gives_bitwise_identical_parameters(tmp_path: Path, arch: list[str]) -> None:
    common = [
        "train.log_every=5",
        "train.valid_every=100",
        "train.accum_steps=2",
        "train.precision=fp32",
        "model.dropout=0.1",
        *arch,
    ]
    straight = prepared(tmp_path / "a", common + ["train.max_steps=16"])
    train(straight)
    half = prepared(tmp_path / "b", common + ["train.max_steps=8"])
    train(half)
    resumed = load_config(tmp_path / "b" / "toy.yaml", FAST + common + ["train.max_steps=16"])
    result = train(resumed)
    assert result.state.step == 16
    a = read_checkpoint(Experiment.from_config(straight).last_checkpoint)["model"]
    b = read_checkpoint(Experiment.from_config(resumed).last_checkpoint)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_with_incompatible_config_names_keys(tmp_path: Path) -> None:
    cfg = prepared(tmp_path, ["train.max_steps=2", "train.valid_every=2"])
    train(cfg)
    changed = load_config(tmp_path / "toy.yaml", FAST + ["train.max_steps=4", "train.lr=1e-4", "train.valid_every=2"])
    with pytest.raises(CheckpointError, match="differs from the checkpoint's in train.lr"):
        train(changed)
    assert train(changed, restart=True).state.step == 4


def test_other_architecture_cannot_resume_or_average(tmp_path: Path) -> None:
    cfg = prepared(tmp_path / "t", ["train.max_steps=2", "train.valid_every=2"])
    train(cfg)
    as_rnn = load_config(tmp_path / "t" / "toy.yaml", FAST + ["train.max_steps=4", "train.valid_every=2", *RNN])
    with pytest.raises(CheckpointError, match=r"differs from the checkpoint's in .*model\.arch"):
        train(as_rnn)
    other = prepared(tmp_path / "r", ["train.max_steps=2", "train.valid_every=2", *RNN])
    train(other)
    paths = [Experiment.from_config(c).last_checkpoint for c in (cfg, other)]
    with pytest.raises(CheckpointError, match=r"cannot average .* they differ in .*model\.arch"):
        average_checkpoints(paths)


def test_interrupted_checkpoint_write_keeps_previous(tmp_path: Path) -> None:
    cfg = prepared(tmp_path, ["train.max_steps=2", "train.valid_every=2"])
    train(cfg)
    last = Experiment.from_config(cfg).last_checkpoint
    before = last.read_bytes()

    class Boom(dict):
        def __reduce_ex__(self, protocol):  # torch.save pickles this mid-write, then fails
            raise KeyboardInterrupt

    ckpt = read_checkpoint(last)
    ckpt["zzz"] = Boom()
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(last, ckpt)
    assert last.read_bytes() == before
    assert load_model(last).step == 2
    assert [p.name for p in last.parent.iterdir() if p.name.startswith(".")] == []


def test_bad_training_inputs(tmp_path: Path) -> None:
    cfg = load_config(toy_config(tmp_path), FAST)
    with pytest.raises(DataError, match="no prepared data"):
        train(cfg)
    prepare(cfg)
    with pytest.raises(ConfigError, match=r"train.batch_tokens \(8\) is smaller than the longest train example"):
        train(load_config(toy_config(tmp_path), FAST + ["train.batch_tokens=8"]))
    with pytest.raises(DataError, match="prepared with different data/vocab settings"):
        train(load_config(toy_config(tmp_path), FAST + ["vocab.size=50"]))
    manifest = Experiment.from_config(cfg).data_dir / MANIFEST
    current = manifest.read_text()
    manifest.write_text(current.replace('"version": 3', '"version": 2'))  # data prepared by an older nmt
    with pytest.raises(DataError, match=r"prepared by another version of nmt \(data format 2, this one reads 3\)"):
        train(cfg)
    manifest.write_text(current)
    if not torch.cuda.is_available():
        with pytest.raises(NmtError, match="CUDA is not available"):
            train(load_config(toy_config(tmp_path), FAST + ["train.device=cuda"]))


# lr 1e30: the first update makes the weights overflow, so every later step is non-finite
EXPLODE = [
    "train.lr=1e30",
    "train.warmup_steps=0",
    "train.schedule=constant",
    "train.precision=fp32",
    "train.log_every=1",
    "train.max_nonfinite=5",
]


def test_forever_nonfinite_run_stops_although_logged_every_step(tmp_path: Path) -> None:
    cfg = prepared(tmp_path, EXPLODE + ["train.max_nonfinite=3", "train.max_steps=30", "train.valid_every=100"])
    with pytest.raises(TrainingStopped, match="stopped at step 4: 3 consecutive steps"):
        train(cfg)


def test_nonfinite_run_is_counted_across_log_intervals_and_resumes(tmp_path: Path) -> None:
    cfg = prepared(tmp_path, EXPLODE + ["train.max_steps=4", "train.valid_every=4"])
    result = train(cfg)  # steps 2-4 non-finite: 3 in a row, fewer than 5
    assert result.stopped_by == "max_steps"
    loop = read_checkpoint(Experiment.from_config(cfg).last_checkpoint)["train_state"]["loop"]
    assert loop["consecutive_nonfinite"] == 3 and loop["nonfinite_steps"] == 3
    resumed = load_config(tmp_path / "toy.yaml", FAST + EXPLODE + ["train.max_steps=50", "train.valid_every=4"])
    # the resumed run continues the count (3 + 2), although log_every=1 < max_nonfinite
    with pytest.raises(TrainingStopped, match="stopped at step 6: 5 consecutive steps"):
        train(resumed)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (["train.lr=0", "train.patience=2", "train.valid_every=2", "train.max_steps=50"], "patience"),
        (["train.max_epochs=1", "train.max_steps=1000", "train.valid_every=1000"], "max_epochs"),
        (["train.max_steps=3", "train.valid_every=1000"], "max_steps"),
    ],
)
def test_stop_reasons(tmp_path: Path, overrides: list[str], reason: str) -> None:
    result = train(prepared(tmp_path, overrides))
    assert result.stopped_by == reason and result.exit_code == 0
    if reason == "patience":  # validations at 2 (best), 4 and 6 (no better: patience spent)
        assert result.state.step == 6 and result.state.bad_valids == 2
    if reason == "max_epochs":
        assert result.state.epoch == 2 and result.state.groups_done == 0
    assert TrainResult(result.state).stopped_by is None  # None means "still running"


def test_train_precision_auto_follows_the_injected_capability() -> None:
    from nmt.errors import NmtError
    from nmt.precision import auto_note, emulated_bf16, resolve_precision

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cpu, native_bf16=True) == "bf16"
    assert resolve_precision("auto", cpu, native_bf16=False) == "fp32"
    assert resolve_precision("auto", cuda, cuda_bf16=True) == "bf16"
    assert resolve_precision("auto", cuda, cuda_bf16=False) == "fp16"
    assert resolve_precision("fp32", cpu, native_bf16=True) == "fp32"  # asked for: honoured
    assert resolve_precision("bf16", cpu, native_bf16=False) == "bf16"  # honoured, with a warning (e2e)
    with pytest.raises(NmtError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", cpu)
    assert auto_note(cpu, native_bf16=True) == "auto: this CPU has native bf16"
    assert auto_note(cpu, native_bf16=False) == "auto: this CPU has no native bf16"
    assert emulated_bf16("bf16", cpu, native_bf16=False) and not emulated_bf16("bf16", cpu, native_bf16=True)
    assert not emulated_bf16("fp32", cpu, native_bf16=False) and not emulated_bf16("bf16", cuda, native_bf16=False)


def test_average_last_is_the_mean_of_the_last_kept_checkpoints_and_is_validated(tmp_path: Path) -> None:
    """train.average_last: averaged.pt holds the element-wise mean of the last N step_N.pt (computed here from
    their state dicts), and its validation is recorded beside the training ones."""
    cfg = prepared(tmp_path, ["train.max_steps=8", "train.valid_every=2", "train.keep_last=3", "train.average_last=3"])
    result = train(cfg)
    exp = Experiment.from_config(cfg)
    kept = sorted(exp.checkpoint_dir.glob("step_*.pt"), key=lambda p: int(p.stem[5:]))
    assert [p.name for p in kept] == ["step_4.pt", "step_6.pt", "step_8.pt"]
    states = [read_checkpoint(p)["model"] for p in kept]
    averaged = read_checkpoint(exp.checkpoint_dir / "averaged.pt")
    assert averaged["train_state"] is None
    for key, value in averaged["model"].items():
        expected = sum(s[key].double() for s in states) / 3
        torch.testing.assert_close(value.double(), expected, rtol=0, atol=1e-6)
        assert not torch.equal(states[0][key], states[2][key]) or key.endswith("bias")  # the weights moved
    records = [json.loads(line) for line in exp.metrics_path.read_text().splitlines()]
    (record,) = [r for r in records if r["event"] == "averaged"]
    assert record["averaged_steps"] == [4, 6, 8] and record == result.averaged and "bleu" in record
    with pytest.raises(ConfigError, match=r"train\.average_last \(4\) is more than train\.keep_last \(3\)") as err:
        load_config(exp.config_path, ["train.keep_last=3", "train.average_last=4"])
    assert str(exp.config_path) in str(err.value) or str(exp.config_path) in str(err.value.hint)


def test_save_every_writes_numbered_checkpoints_between_validations_for_averaging(tmp_path: Path) -> None:
    """train.save_every below train.valid_every: step_N.pt every save_every steps (validations only every
    valid_every), last.pt names the newest, best.pt a validated one, and average_last averages them all."""
    sets = ["train.max_steps=8", "train.valid_every=4", "train.save_every=2"]
    sets += ["train.keep_last=3", "train.average_last=3"]
    cfg = prepared(tmp_path, sets)
    result = train(cfg)
    exp = Experiment.from_config(cfg)
    kept = sorted(exp.checkpoint_dir.glob("step_*.pt"), key=lambda p: int(p.stem[5:]))
    assert [p.name for p in kept] == ["step_4.pt", "step_6.pt", "step_8.pt"]
    assert (exp.checkpoint_dir / "last.pt").samefile(kept[-1])
    records = [json.loads(line) for line in exp.metrics_path.read_text().splitlines()]
    assert [r["step"] for r in records if r["event"] == "valid"] == [4, 8]
    assert read_checkpoint(exp.checkpoint_dir / "best.pt")["step"] in (4, 8)
    states = [read_checkpoint(p)["model"] for p in kept]
    averaged = read_checkpoint(exp.checkpoint_dir / "averaged.pt")["model"]
    for key, value in averaged.items():
        torch.testing.assert_close(value.double(), sum(s[key].double() for s in states) / 3, rtol=0, atol=1e-6)
    assert result.averaged["averaged_steps"] == [4, 6, 8]
