"""`fileio.swap_in`: a directory behind a link replaced atomically, from every state a run can leave."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nmt import fileio
from nmt.fileio import remove_unlinked, swap_in


def dataset(root: Path, name: str, content: str) -> Path:
    d = root / name
    d.mkdir()
    (d / "manifest.json").write_text(content)
    return d


def seen(link: Path) -> str:
    return (link / "manifest.json").read_text()


@pytest.mark.parametrize("exchange", [True, False])
def test_a_real_directory_from_before_links_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    """Data prepared before `data` became a link: exchanged in one renameat2 call, or (where the
    kernel or filesystem lacks it) moved aside and replaced by two renames."""
    if not exchange:
        monkeypatch.setattr(fileio, "_exchange", lambda a, b: False)
    link = dataset(tmp_path, "data", "old")
    swap_in(dataset(tmp_path, ".data.s0.tmp", "new"), link)
    assert link.is_symlink() and seen(link) == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", os.readlink(link)]


def test_link_replaced_and_old_directory_removed(tmp_path: Path) -> None:
    link = tmp_path / "data"
    swap_in(dataset(tmp_path, ".data.s1.tmp", "first"), link)
    first = os.readlink(link)
    swap_in(dataset(tmp_path, ".data.s2.tmp", "second"), link)
    assert seen(link) == "second" and os.readlink(link) != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", os.readlink(link)]


@pytest.mark.parametrize("fail_at", range(4))
def test_interrupted_at_each_step_the_link_shows_old_or_new_and_the_next_run_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    """An interrupt before each file-system call of swap_in (rename, symlink, replace, remove)."""
    link = tmp_path / "data"
    swap_in(dataset(tmp_path, ".data.s1.tmp", "old"), link)
    calls = {"n": 0}

    def interrupting(real):
        def call(*args, **kwargs):
            if calls["n"] == fail_at:
                calls["n"] += 1
                raise KeyboardInterrupt
            calls["n"] += 1
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(Path, "rename", interrupting(Path.rename))
    monkeypatch.setattr(Path, "symlink_to", interrupting(Path.symlink_to))
    monkeypatch.setattr(os, "replace", interrupting(os.replace))
    monkeypatch.setattr(fileio.shutil, "rmtree", interrupting(fileio.shutil.rmtree))
    with pytest.raises(KeyboardInterrupt):
        swap_in(dataset(tmp_path, ".data.s2.tmp", "new"), link)
    monkeypatch.undo()
    assert seen(link) in ("old", "new")
    remove_unlinked(link)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", os.readlink(link)]
