"""`nmt prepare` deletes only what it made (the audit's reproductions at 27dff17)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nmt.config import load_config
from nmt.data.prepare import prepare
from nmt.errors import DataError
from tests.corpora import toy_config


def test_a_users_data_link_and_its_target_survive_prepare(tmp_path: Path, nmt_cli) -> None:
    """At 27dff17 prepare deleted the directory a user's `data` link pointed at."""
    config = toy_config(tmp_path)
    cfg = load_config(config)
    bigdisk = tmp_path / "bigdisk"
    bigdisk.mkdir()
    (bigdisk / "precious.txt").write_text("kept")
    Path(cfg.workdir).mkdir()
    (Path(cfg.workdir) / "data").symlink_to(bigdisk)
    done = nmt_cli("prepare", str(config))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "that nmt prepare did not make" in done.stderr and "--replace-data-link" in done.stderr
    assert (Path(cfg.workdir) / "data").resolve() == bigdisk and (bigdisk / "precious.txt").read_text() == "kept"
    # the documented flag replaces the link, never its target
    done = nmt_cli("prepare", str(config), "--replace-data-link")
    assert done.returncode == 0, done.stderr
    assert (Path(cfg.workdir) / "data" / "manifest.json").is_file()
    assert (bigdisk / "precious.txt").read_text() == "kept" and sorted(p.name for p in bigdisk.iterdir()) == [
        "precious.txt"
    ]


def test_files_named_like_data_survive_prepare(tmp_path: Path) -> None:
    """At 27dff17 a successful prepare removed every `data.*` / `.data.*` entry of the workdir."""
    cfg = load_config(toy_config(tmp_path))
    workdir = Path(cfg.workdir)
    workdir.mkdir()
    (workdir / "data.notes.txt").write_text("notes")
    (workdir / "data.backup").mkdir()
    (workdir / "data.backup" / "a.txt").write_text("backup")
    (workdir / ".data.old").write_text("old")
    prepare(cfg)
    prepare(cfg, force=True)  # a second build replaces the first dataset: only that is removed
    assert (workdir / "data.notes.txt").read_text() == "notes"
    assert (workdir / "data.backup" / "a.txt").read_text() == "backup"
    assert (workdir / ".data.old").read_text() == "old"
    datasets = [p.name for p in workdir.iterdir() if p.name.startswith("data.") and p.is_dir()]
    assert sorted(datasets) == sorted(["data.backup", (workdir / "data").readlink().name])


def test_a_directory_named_data_that_prepare_did_not_make_is_refused_before_any_work(tmp_path: Path) -> None:
    cfg = load_config(toy_config(tmp_path))
    data = Path(cfg.workdir) / "data"
    data.mkdir(parents=True)
    (data / "mine.txt").write_text("mine")
    with pytest.raises(DataError, match="is a directory that nmt prepare did not make"):
        prepare(cfg)
    assert [p.name for p in data.iterdir()] == ["mine.txt"]
    assert sorted(p.name for p in Path(cfg.workdir).iterdir()) == [".prepare.lock", "data"]


def test_up_to_date_means_what_a_fresh_prepare_would_build(tmp_path: Path) -> None:
    """On a corpus over vocab.max_sentences the SentencePiece sample depends on its seed. At 27dff17 it was
    drawn with train.seed, which the data hash left out: after `--set train.seed=2` prepare said "up to
    date" over a vocabulary a fresh prepare would not build. Now the sample has its own seed, hashed."""
    config = toy_config(tmp_path)
    sample = ["vocab.max_sentences=150"]  # of 400 pairs (SentencePiece needs over 100)
    prepare(load_config(config, sample))
    reseeded = load_config(config, [*sample, "train.seed=2"])
    result = prepare(reseeded)
    fresh = load_config(config, [*sample, "train.seed=2", f"workdir={tmp_path / 'fresh'}"])
    prepare(fresh)
    spm = lambda cfg: (Path(cfg.workdir) / "data" / "spm.model").read_bytes()  # noqa: E731
    assert spm(reseeded) == spm(fresh), f"'up to date' ({result.up_to_date}) over another vocabulary"
    other = load_config(config, [*sample, "vocab.sample_seed=2"])
    assert not prepare(other).up_to_date  # the sample's own seed is in the hash
    assert spm(other) != spm(fresh)
