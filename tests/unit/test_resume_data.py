"""A resume cannot mix vocabularies or silently change data (the audit's reproductions at 27dff17)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nmt.checkpoint import read_checkpoint
from nmt.config import load_config
from nmt.data.prepare import prepare
from nmt.data.prepared import load_vocab
from nmt.errors import CheckpointError
from nmt.experiment import Experiment
from nmt.train.loop import train
from tests.corpora import FAST, reverse_pairs, toy_config, write_split

STEPS = ["train.valid_every=2"]


def trained(tmp_path: Path) -> tuple[Path, Experiment]:
    config = toy_config(tmp_path, train=120, valid=10)
    cfg = load_config(config, FAST + STEPS + ["train.max_steps=2"])
    prepare(cfg)
    train(cfg)
    return config, Experiment.from_config(cfg)


def test_resume_onto_a_new_vocabulary_is_refused(tmp_path: Path) -> None:
    """At 27dff17 the old weights resumed onto the new vocabulary without a word."""
    config, exp = trained(tmp_path)
    old_vocab = load_vocab(exp.data_dir)
    pairs = [(s.upper(), t.upper()) for s, t in reverse_pairs(120, seed=7)]  # another corpus: other pieces
    write_split(tmp_path / "corpus", "train", pairs)
    more = load_config(config, FAST + STEPS + ["train.max_steps=4"])
    assert not prepare(more).up_to_date
    assert load_vocab(exp.data_dir).src_model != old_vocab.src_model
    with pytest.raises(CheckpointError, match=r"trained with vocabulary \w{12} but the prepared data .* \w{12}"):
        train(more)
    with pytest.raises(CheckpointError, match="--restart"):
        train(more, new_data=True)  # the data flag never allows another vocabulary
    assert read_checkpoint(exp.last_checkpoint)["step"] == 2  # nothing was trained or written
    assert train(more, restart=True).state.step == 4


def test_resume_onto_other_data_needs_new_data(tmp_path: Path) -> None:
    """Same vocabulary (only the validation split changed), other data: refused unless --new-data."""
    config, exp = trained(tmp_path)
    old_vocab = load_vocab(exp.data_dir).src_model
    write_split(tmp_path / "corpus", "valid", reverse_pairs(12, seed=9))
    more = load_config(config, FAST + STEPS + ["train.max_steps=4"])
    assert not prepare(more).up_to_date and load_vocab(exp.data_dir).src_model == old_vocab
    with pytest.raises(CheckpointError, match="other prepared data .* under the same vocabulary") as err:
        train(more)
    assert "--new-data" in (err.value.hint or "")
    result = train(more, new_data=True)
    assert result.state.step == 4
    # the new checkpoint records the new data: resuming again needs no flag
    assert train(load_config(config, FAST + STEPS + ["train.max_steps=6"])).state.step == 6
