"""`fileio.swap_in`: a directory behind a link replaced atomically, from every state a run can leave."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nmt import fileio
from nmt.errors import DataError
from nmt.fileio import remove_unlinked, staging_dir, swap_in


def dataset(root: Path, name: str, content: str) -> Path:
    d = root / name
    d.mkdir()
    (d / "manifest.json").write_text(content)
    return d


def staged(link: Path, content: str) -> Path:
    """A complete dataset in a staging directory named as prepare names it."""
    d = staging_dir(link)
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
    swap_in(staged(link, "new"), link, owned_dir=lambda d: (d / "manifest.json").read_text() == "old")
    assert link.is_symlink() and seen(link) == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", os.readlink(link)]


def test_link_replaced_and_old_directory_removed(tmp_path: Path) -> None:
    link = tmp_path / "data"
    swap_in(staged(link, "first"), link)
    first = os.readlink(link)
    swap_in(staged(link, "second"), link)
    assert seen(link) == "second" and os.readlink(link) != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", os.readlink(link)]


@pytest.mark.parametrize("fail_at", range(4))
def test_interrupted_at_each_step_the_link_shows_old_or_new_and_the_next_run_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    """An interrupt before each file-system call of swap_in (rename, symlink, replace, remove)."""
    link = tmp_path / "data"
    swap_in(staged(link, "old"), link)
    new = staged(link, "new")
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
        swap_in(new, link)
    monkeypatch.undo()
    assert seen(link) in ("old", "new")
    remove_unlinked(link)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", os.readlink(link)]


def users_entries(root: Path) -> dict[str, str]:
    """What a user keeps beside `data`: names that start like prepare's but are not its."""
    (root / "data.notes.txt").write_text("notes")
    dataset(root, "data.backup", "backup")
    dataset(root, ".data.keep", "keep")
    dataset(root, "data.0123456789abc", "13 hex digits")
    (root / ".data.link.tmp").write_text("x")
    return {
        "data.notes.txt": "notes",
        "data.backup/manifest.json": "backup",
        ".data.keep/manifest.json": "keep",
        "data.0123456789abc/manifest.json": "13 hex digits",
        ".data.link.tmp": "x",
    }


def test_cleanup_removes_only_what_prepare_makes(tmp_path: Path) -> None:
    """At 27dff17 every `data.*` and `.data.*` entry was removed (data.notes.txt, data.backup/)."""
    link = tmp_path / "data"
    kept = users_entries(tmp_path)
    swap_in(staged(link, "first"), link)
    leftover = staged(link, "killed run")  # a staging dir and an unused dataset of a killed run
    swap_in(staged(link, "unused"), link)
    stale = dataset(tmp_path, "data.0123456789ab", "stale dataset")
    remove_unlinked(link)
    assert not leftover.exists() and not stale.exists()
    assert seen(link) == "unused"
    assert {name: (tmp_path / name).read_text() for name in kept} == kept


def test_a_users_link_and_its_target_are_left_alone(tmp_path: Path) -> None:
    """At 27dff17 swap_in removed the directory a user's `data` link pointed at (data on a bigger disk)."""
    elsewhere = dataset(tmp_path, "bigdisk", "the user's data")
    (tmp_path / "exp").mkdir()
    link = tmp_path / "exp" / "data"
    link.symlink_to(elsewhere)
    staging = staged(link, "new")
    with pytest.raises(DataError, match="symbolic link to .*bigdisk.* that nmt prepare did not make"):
        swap_in(staging, link)
    assert os.readlink(link) == str(elsewhere) and seen(link) == "the user's data"
    remove_unlinked(link)  # the next run cleans up the staging directory only
    assert not staging.exists() and seen(elsewhere) == "the user's data"
    # asked to replace the link: the link is replaced, its target never touched
    swap_in(staged(link, "new"), link, replace_link=True)
    assert seen(link) == "new" and seen(elsewhere) == "the user's data"


@pytest.mark.parametrize("kind", ["directory", "file"])
def test_a_directory_or_file_prepare_did_not_make_is_never_replaced(tmp_path: Path, kind: str) -> None:
    link = tmp_path / "data"
    if kind == "directory":
        dataset(tmp_path, "data", "someone else's")
    else:
        link.write_text("someone else's")
    for replace_link in (False, True):
        with pytest.raises(DataError, match=f"is a {kind} that nmt prepare did not make"):
            swap_in(staged(link, "new"), link, replace_link=replace_link)
    assert (seen(link) if kind == "directory" else link.read_text()) == "someone else's"
