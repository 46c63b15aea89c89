"""Prepared data are checked when opened: damage is a DataError before any training step
(the audit's reproductions at 27dff17: raw ValueError, IndexError mid-training, silent garbage,
AssertionError at the first validation)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from nmt.config import load_config
from nmt.data.prepare import prepare
from nmt.errors import DataError
from nmt.experiment import Experiment
from nmt.train.loop import train
from tests.corpora import FAST, toy_config


@pytest.fixture
def exp_cfg(tmp_path: Path):
    cfg = load_config(toy_config(tmp_path, train=120, valid=10), FAST + ["train.max_steps=2", "train.valid_every=2"])
    prepare(cfg)
    return Experiment.from_config(cfg), cfg


def refused(exp: Experiment, cfg, match: str) -> None:
    """train() ends in a DataError matching `match` before any step: no checkpoint, no metrics."""
    with pytest.raises(DataError, match=match):
        train(cfg)
    assert not exp.last_checkpoint.exists() and not exp.metrics_path.exists()


def test_a_shard_truncated_by_one_byte(exp_cfg) -> None:
    exp, cfg = exp_cfg
    path = exp.data_dir / "train.00000.tgt.bin"
    os.truncate(path, path.stat().st_size - 1)
    refused(exp, cfg, r"train\.00000\.tgt\.bin: \d[\d,]* bytes is not a whole number of 2-byte items")


def test_an_index_truncated_by_three_bytes(exp_cfg) -> None:
    exp, cfg = exp_cfg
    path = exp.data_dir / "train.00000.src.idx"
    os.truncate(path, path.stat().st_size - 3)
    refused(exp, cfg, r"train\.00000\.src\.idx: .* not a whole number of 8-byte items")


def test_offsets_that_decrease(exp_cfg) -> None:
    """Swapping two offsets keeps first, last and size right: at 27dff17 training read garbage silently."""
    exp, cfg = exp_cfg
    path = exp.data_dir / "train.00000.src.idx"
    offsets = np.fromfile(path, dtype=np.int64)
    offsets[[5, 6]] = offsets[[6, 5]]
    offsets.tofile(path)
    refused(exp, cfg, r"train\.00000\.src\.idx: offsets decrease at sentence 5")


def test_offsets_that_do_not_start_at_zero(exp_cfg) -> None:
    exp, cfg = exp_cfg
    path = exp.data_dir / "valid.00000.tgt.idx"
    offsets = np.fromfile(path, dtype=np.int64)
    offsets[0] = 1
    offsets.tofile(path)
    refused(exp, cfg, r"valid\.00000\.tgt\.bin: .* starts at 1, not 0")


def test_a_vocabulary_smaller_than_the_ids(exp_cfg, tmp_path: Path) -> None:
    """The prepared vocabulary replaced by a smaller one: the recorded largest ids exceed it when opened."""
    exp, cfg = exp_cfg
    small = load_config(toy_config(tmp_path / "small", train=120, valid=10), ["vocab.size=45"])
    prepare(small)
    (exp.data_dir / "spm.model").write_bytes((Experiment.from_config(small).data_dir / "spm.model").read_bytes())
    refused(exp, cfg, r"train\.00000\.src\.bin: holds id (4[5-9]|5\d), outside the vocabulary of 45 pieces")


def test_an_id_changed_in_place_is_a_data_error_not_an_index_error(exp_cfg) -> None:
    """At 27dff17: IndexError mid-training. A shard edited in place (its size and records unchanged)
    is caught at the first batch holding the id, before the model sees it."""
    exp, cfg = exp_cfg
    path = exp.data_dir / "train.00000.tgt.bin"
    ids = np.fromfile(path, dtype=np.uint16)
    ids[:] = 61  # in every example: the first batch holds it
    ids.tofile(path)
    refused(exp, cfg, r"split 'train': an example among .* holds tgt id 61, outside the vocabulary of 60 pieces")


def test_a_shard_whose_counts_differ_from_the_manifest(exp_cfg) -> None:
    """Both files consistent with each other, but not what prepare wrote (e.g. a shard from another run)."""
    exp, cfg = exp_cfg
    for side in ("src", "tgt"):
        idx = exp.data_dir / f"train.00000.{side}.idx"
        offsets = np.fromfile(idx, dtype=np.int64)[:-1]  # drop the last sentence, and its ids
        offsets.tofile(idx)
        os.truncate(exp.data_dir / f"train.00000.{side}.bin", int(offsets[-1]) * 2)
    refused(exp, cfg, r"train\.00000\.src\.bin: 119 sentences / [\d,]+ ids, but prepare wrote 120 /")


def test_references_shorter_than_the_split(exp_cfg) -> None:
    """At 27dff17: an AssertionError at the first validation, after training steps."""
    exp, cfg = exp_cfg
    refs = exp.data_dir / "valid.ref.txt"
    refs.write_bytes(b"".join(line + b"\n" for line in refs.read_bytes().split(b"\n")[:-2]))
    refused(exp, cfg, r"valid\.ref\.txt holds 9 references but split 'valid' has 10 prepared examples")


def test_the_manifest_records_what_the_files_hold(exp_cfg) -> None:
    """The records are the files' own figures (read here with numpy, independently of the writer)."""
    exp, _ = exp_cfg
    manifest = json.loads((exp.data_dir / "manifest.json").read_text())
    (record,) = manifest["splits"]["valid"]["shard_records"]
    for side in ("src", "tgt"):
        ids = np.fromfile(exp.data_dir / f"valid.00000.{side}.bin", dtype=np.uint16)
        offsets = np.fromfile(exp.data_dir / f"valid.00000.{side}.idx", dtype=np.int64)
        assert (record[f"{side}_ids"], record[f"max_{side}_id"]) == (len(ids), int(ids.max()))
        assert record["sentences"] == len(offsets) - 1 == 10
