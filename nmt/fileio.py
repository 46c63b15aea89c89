"""File I/O shared by every stage: atomic writes and strict reading of plain/.gz text."""

from __future__ import annotations

import contextlib
import gzip
import os
import tempfile
from collections.abc import Iterator
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
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        os.fsync(dir_fd)
        os.close(dir_fd)


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


def read_lines(path: str | Path, *, replace_invalid: bool = False, stats: DecodeStats | None = None) -> Iterator[str]:
    """Yield the lines of a plain or .gz text file without line endings."""
    stats = stats if stats is not None else DecodeStats()
    try:
        with open_binary(path) as fh:
            for lineno, raw in enumerate(fh, start=1):
                raw = raw.rstrip(b"\n").rstrip(b"\r")
                yield decode_line(raw, path=path, lineno=lineno, replace=replace_invalid, stats=stats)
    except (OSError, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise DataError(f"{path}: file not found") from None
        raise DataError(f"{path}: cannot read ({exc})", hint="is it a complete, uncorrupted file?") from None


def count_lines(path: str | Path) -> int:
    """Number of lines in a plain or .gz file (a final line without newline counts)."""
    n = 0
    last = b"\n"
    with open_binary(path) as fh:
        while chunk := fh.read(1 << 20):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")
