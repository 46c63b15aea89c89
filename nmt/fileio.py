"""File I/O shared by every stage: atomic writes (files, whole directories), a lock, and strict
reading of plain/.gz text."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import gzip
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from nmt.errors import DataError

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same directory, fsync, rename."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Text form of `atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file next to `path`; on success fsync and rename it over `path`.

    On any exception (including KeyboardInterrupt) the temp file is removed and `path`
    keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file normal permissions
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)  # make the rename itself durable


def open_binary(path: str | Path) -> IO[bytes]:
    """Open a plain or gzipped file for reading bytes, or raise DataError if missing."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: file not found", hint="check the path in the config (relative to the current directory)"
        )
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


@dataclass
class DecodeStats:
    """What `read_lines` repaired."""

    invalid_utf8_lines: int = 0


def decode_line(raw: bytes, *, path: str | Path, lineno: int, replace: bool, stats: DecodeStats) -> str:
    """Decode one line as UTF-8; raise DataError naming file/line/column, or replace and count."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if replace:
            stats.invalid_utf8_lines += 1
            return raw.decode("utf-8", errors="replace")
        raise DataError(
            f"{path} line {lineno}: invalid UTF-8 (byte 0x{raw[exc.start]:02x}, col {exc.start + 1})",
            hint="re-encode the file as UTF-8, or set data.on_invalid_utf8: replace to replace and count such bytes",
        ) from None


def read_raw_lines(path: str | Path) -> Iterator[bytes]:
    """Yield the lines of a plain or .gz file as bytes without line endings (\n, \r\n)."""
    try:
        with open_binary(path) as fh:
            for raw in fh:
                yield raw.rstrip(b"\n").rstrip(b"\r")
    except (OSError, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise DataError(f"{path}: file not found") from None
        raise DataError(f"{path}: cannot read ({exc})", hint="is it a complete, uncorrupted file?") from None


def read_lines(path: str | Path, *, replace_invalid: bool = False, stats: DecodeStats | None = None) -> Iterator[str]:
    """Yield the lines of a plain or .gz text file without line endings."""
    stats = stats if stats is not None else DecodeStats()
    for lineno, raw in enumerate(read_raw_lines(path), start=1):
        yield decode_line(raw, path=path, lineno=lineno, replace=replace_invalid, stats=stats)


@dataclass
class TextScan:
    """What one pass over a text file found."""

    path: Path
    lines: int = 0  # a last line without newline counts
    invalid_lines: int = 0  # lines holding invalid UTF-8
    first_invalid: str | None = None  # "PATH line L: invalid UTF-8 (byte 0xXX, col C)" of the first one


def scan_text(path: str | Path) -> TextScan:
    """Count the lines of a plain or .gz file and find invalid UTF-8, line-exact, reading 1 MiB
    blocks (memory independent of the size).

    Valid blocks (nearly all) are checked by one C-level decode; a block that fails is
    re-checked line by line, so the count and the first line number are exact.
    """
    scan, carry = TextScan(Path(path)), b""
    try:
        with open_binary(path) as fh:
            while block := fh.read(1 << 20):
                data = carry + block
                cut = data.rfind(b"\n") + 1
                carry = data[cut:]
                _scan_lines(data[:cut], scan)
            _scan_lines(carry, scan)  # the last line, without newline
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read ({exc})", hint="is it a complete, uncorrupted file?") from None
    return scan


def _scan_lines(data: bytes, scan: TextScan) -> None:
    """Add whole lines (`data` ends at a line end, or is the file's unterminated last line)."""
    if not data:
        return
    lines = data.count(b"\n") + (not data.endswith(b"\n"))
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        for i, raw in enumerate(data.split(b"\n")[:lines]):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                scan.invalid_lines += 1
                if scan.first_invalid is None:
                    try:
                        decode_line(raw, path=scan.path, lineno=scan.lines + i + 1, replace=False, stats=DecodeStats())
                    except DataError as exc:
                        scan.first_invalid = exc.message
    scan.lines += lines


def count_lines(path: str | Path) -> int:
    """Number of lines in a plain or .gz file (a final line without newline counts)."""
    return scan_text(path).lines


@contextlib.contextmanager
def atomic_directory(
    target: Path,
    *,
    behind_link: bool = False,
    owned_dir: Callable[[Path], bool] = lambda _: False,
    replace_link: bool = False,
) -> Iterator[Path]:
    """Write a whole directory atomically: yield an empty staging directory beside `target`; when
    the block ends normally every file under it is fsynced and it takes `target`'s place in one
    rename, so `target` is always the old directory or the new one, never a part of either. On
    an exception (or a kill) the staging directory is removed (by the next `remove_unlinked`).

    `behind_link`: `target` is a symbolic link swapped to the new directory (`swap_in`, with its
    `owned_dir` and `replace_link`); else `target` is a directory replaced whole (`replace_directory`).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(target)
    try:
        yield staging
        fsync_tree(staging)
        if behind_link:
            swap_in(staging, target, owned_dir=owned_dir, replace_link=replace_link)
        else:
            replace_directory(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when it was swapped in


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under `root` (and `root`)."""
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
        elif path.is_dir():
            fsync_dir(path)
    fsync_dir(root)


def replace_directory(new: Path, target: Path) -> None:
    """Rename the complete directory `new` to `target`; a directory already there is moved aside
    first and removed after. `target` holds the old directory or the new one in full, except
    for the microseconds between the two renames; a failed rename puts the old one back."""
    old = None
    if target.is_dir() and any(target.iterdir()):
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.replace(target, old / target.name)
    elif target.is_dir():
        target.rmdir()
    try:
        os.replace(new, target)
    except BaseException:
        if old is not None:
            os.replace(old / target.name, target)
            old.rmdir()
        raise
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def staging_dir(link: Path) -> Path:
    """A new, empty staging directory beside `link` for `swap_in` (`.<name>.<8 random>.tmp`)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{link.name}.", suffix=".tmp", dir=link.parent))
    staging.chmod(0o777 & ~_UMASK)
    return staging


def _made_here(link: Path) -> re.Pattern[str]:
    """The names `staging_dir` and `swap_in` create beside `link`, and nothing else: datasets
    `<name>.<12 hex>`, staging `.<name>.<8 of mkdtemp>.tmp`, link temporaries `.<name>.link.<8 hex>.tmp|.old`."""
    name = re.escape(link.name)
    return re.compile(rf"{name}\.[0-9a-f]{{12}}|\.{name}\.[a-z0-9_]{{8}}\.tmp|\.{name}\.link\.[0-9a-f]{{8}}\.(tmp|old)")


def foreign_link(link: Path, *, owned_dir: Callable[[Path], bool]) -> str | None:
    """None when `swap_in` may replace `link`: absent, a link it made (to a sibling `<name>.<12 hex>`),
    or a real directory that `owned_dir` recognises (made by the caller before links were used);
    else what `link` is, for an error message."""
    if link.is_symlink():
        target = os.readlink(link)
        if re.fullmatch(rf"{re.escape(link.name)}\.[0-9a-f]{{12}}", target):
            return None
        return f"a symbolic link to {target}"
    if not link.exists():
        return None
    if link.is_dir():
        return None if owned_dir(link) else "a directory"
    return "a file"


def swap_in(
    staging: Path, link: Path, *, owned_dir: Callable[[Path], bool] = lambda _: False, replace_link: bool = False
) -> None:
    """Make `link` (a symbolic link) point at the complete directory `staging`, atomically.

    `staging` is renamed to `<link>.<random id>` beside the link, then a new link is renamed
    over the old one: at every instant `link` resolves to the old directory or the new one.
    The old directory is removed last, and only when swap_in made it (see `foreign_link`):
    a link someone else made is a DataError, or with `replace_link` is replaced while its
    target is left as it is; a directory or file someone else made is never replaced. A
    `link` that is still a real directory of the caller's (`owned_dir`: data prepared before
    links were used) is exchanged with the new link in one `renameat2(RENAME_EXCHANGE)`
    where the kernel and filesystem offer it, else by two renames.
    """
    foreign = foreign_link(link, owned_dir=owned_dir)
    if foreign is not None and not (replace_link and link.is_symlink()):
        raise foreign_link_error(link, foreign)
    final = link.with_name(f"{link.name}.{uuid.uuid4().hex[:12]}")
    staging.rename(final)
    tmp_link = link.with_name(f".{link.name}.link.{uuid.uuid4().hex[:8]}.tmp")
    tmp_link.symlink_to(final.name)
    old: Path | None = None
    if link.is_symlink():
        old = None if foreign else link.parent / os.readlink(link)
        os.replace(tmp_link, link)
    elif link.is_dir():
        if not _exchange(tmp_link, link):
            link.rename(tmp_link.with_suffix(".old"))
            tmp_link.rename(link)
            tmp_link = tmp_link.with_suffix(".old")
        old = tmp_link  # now the old directory
    else:
        os.replace(tmp_link, link)
    fsync_dir(link.parent)
    if old is not None and old.resolve() != final.resolve():
        shutil.rmtree(old, ignore_errors=True)


def foreign_link_error(link: Path, what: str) -> DataError:
    """The one-paragraph error for a `link` that swap_in did not make (see `foreign_link`)."""
    if what.startswith("a symbolic link"):
        hint = (
            "nmt leaves it and its target as they are; to keep the data on another disk, put the workdir "
            "there (or make the workdir itself a link), or pass --replace-data-link to replace this link "
            "(its target is never touched)"
        )
    else:
        hint = f"nmt never replaces what it did not make: move or remove {link} yourself, or choose another workdir"
    return DataError(f"{link} is {what} that nmt prepare did not make; it was left as it is", hint=hint)


def remove_unlinked(link: Path) -> None:
    """Remove what an interrupted `swap_in` or build left beside `link`: entries whose names only
    `staging_dir` and `swap_in` create (see `_made_here`) that `link` does not point at. Nothing
    else beside the link is touched (`data.notes.txt`, `data.backup/` stay)."""
    target = (link.parent / os.readlink(link)).resolve() if link.is_symlink() else None
    made_here = _made_here(link)
    for path in link.parent.iterdir():
        if not made_here.fullmatch(path.name) or path.resolve() == target:
            continue
        if path.is_symlink() or path.is_file():
            path.unlink(missing_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def exclusive_lock(path: Path, *, what: str) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path`; DataError at once when another process holds it."""
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError(
                f"{path}: another {what} is running", hint="wait for it to finish (or stop it) and run again"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _exchange(a: Path, b: Path) -> bool:
    """Swap the names `a` and `b` atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def fsync_dir(directory: Path) -> None:
    """Make the entries of `directory` (a rename into it) durable; best effort where unsupported."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
