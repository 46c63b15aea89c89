"""Every bad input of `nmt prepare`, through the real CLI: message, exit code, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_nmt
from tests.corpora import toy_config, write_split


def check_error(result, *fragments: str, code: int = 2) -> None:
    out = result.stderr + result.stdout
    assert result.returncode == code, out
    assert "Traceback" not in out, out
    flat = " ".join(out.split())
    for fragment in fragments:
        assert fragment in flat, out


def test_help_lists_subcommands() -> None:
    result = run_nmt("--help")
    assert result.returncode == 0
    for command in ("prepare", "train", "evaluate", "translate", "average"):
        assert command in result.stdout
    assert run_nmt("--version").returncode == 0


def test_missing_file(tmp_path: Path) -> None:
    cfg = toy_config(tmp_path)
    (tmp_path / "corpus" / "valid.tgt").unlink()
    check_error(run_nmt("prepare", str(cfg)), "neither", "valid.tgt nor", "valid.tgt.gz exists")


def test_missing_config() -> None:
    check_error(run_nmt("prepare", "no/such.yaml"), "config file no/such.yaml does not exist")


def test_mismatched_line_counts(tmp_path: Path) -> None:
    cfg = toy_config(tmp_path)
    (tmp_path / "corpus" / "train.tgt").write_text("ONE\nTWO\n")
    check_error(run_nmt("prepare", str(cfg)), "train.src has 400 lines but", "train.tgt has 2")


def test_invalid_utf8_error_and_replace(tmp_path: Path) -> None:
    cfg = toy_config(tmp_path)
    path = tmp_path / "corpus" / "train.src"
    lines = path.read_bytes().split(b"\n")
    lines[6] = b"alpha \xff bravo"
    path.write_bytes(b"\n".join(lines))
    check_error(run_nmt("prepare", str(cfg)), "train.src line 7: invalid UTF-8 (byte 0xff, col 7)")
    result = run_nmt("prepare", str(cfg), "--set", "data.on_invalid_utf8=replace")
    assert result.returncode == 0, result.stderr
    assert "1 lines had invalid UTF-8" in " ".join(result.stderr.split())


def test_empty_training_set_after_filtering(tmp_path: Path) -> None:
    cfg = toy_config(tmp_path)
    check_error(
        run_nmt("prepare", str(cfg), "--set", "data.max_len=1"),
        "split 'train': every pair was dropped by cleaning",
        "'too_long': 400",
    )
    write_split(tmp_path / "corpus", "train", [("", "")] * 3)
    check_error(run_nmt("prepare", str(cfg)), "contain no non-empty pairs")


def test_yaml_syntax_error(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("train:\n  lr: [1\n")
    check_error(run_nmt("prepare", str(cfg)), "YAML syntax error", "line 3, column 1")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("train.bach_tokens=1", "train.bach_tokens: unknown key; did you mean train.batch_tokens?"),
        ("vocab.size=lots", "vocab.size: expected an integer, got 'lots'"),
    ],
)
def test_bad_config_keys(tmp_path: Path, setting: str, message: str) -> None:
    check_error(run_nmt("prepare", str(toy_config(tmp_path)), "--set", setting), message)


def test_vocab_too_large_says_what_is_possible(tmp_path: Path) -> None:
    check_error(
        run_nmt("prepare", str(toy_config(tmp_path)), "--set", "vocab.size=5000"),
        "vocab.size 5000 is larger than SentencePiece can learn",
        "at most",
    )


def test_prepare_prints_table_and_noop(tmp_path: Path) -> None:
    cfg = toy_config(tmp_path, train=100)
    first = run_nmt("prepare", str(cfg))
    assert first.returncode == 0, first.stderr
    assert "train" in first.stderr and "too long" in first.stderr
    second = run_nmt("prepare", str(cfg))
    assert second.returncode == 0 and "up to date" in second.stderr


def test_workdir_that_cannot_be_written(tmp_path: Path) -> None:
    import os

    if os.geteuid() == 0:  # root writes anywhere: a path under a regular file cannot be created by anyone
        blocker = tmp_path / "file"
        blocker.write_text("")
        workdir = blocker / "exp"
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        workdir = locked / "exp"
    cfg = toy_config(tmp_path)
    result = run_nmt("prepare", str(cfg), "--set", f"workdir={workdir}")
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert "workdir" in result.stderr
