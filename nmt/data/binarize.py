"""Token ids on disk: flat arrays plus offsets, in shards per split and side, memory-mapped back.

<split>.<k>.<side>.bin   all token ids of shard k (00000, 00001, ...) of the split,
                         concatenated (uint16, or int32 for vocabularies over 65,535
                         pieces), no bos/eos
<split>.<k>.<side>.idx   int64 offsets, len = sentences in the shard + 1; sentence i of the
                         shard is bin[idx[i]:idx[i+1]]

Shards let `nmt prepare` write as it encodes, never holding a split in memory; the
dataset reads them back as one sequence of examples in shard order.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import IO

import numpy as np

from nmt.errors import DataError


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.int32)


def shard_name(split: str, k: int, side: str, ext: str) -> str:
    return f"{split}.{k:05d}.{side}.{ext}"


class ShardWriter:
    """Appends encoded sentences of one split to its shard files, `shard_size` sentences each.

    Files are written in place: the caller writes into a staging directory that is swapped
    in whole, so no file here needs to be atomic on its own. `close` fsyncs every file.
    """

    def __init__(self, directory: Path, split: str, *, shard_size: int, src_vocab_size: int, tgt_vocab_size: int):
        self.directory, self.split, self.shard_size = Path(directory), split, shard_size
        self.dtypes = {"src": token_dtype(src_vocab_size), "tgt": token_dtype(tgt_vocab_size)}
        self.shards = 0  # shards started
        self.in_shard = 0  # sentences in the current shard
        self._files: dict[str, IO[bytes]] = {}
        self._ends: dict[str, int] = {}

    def add(self, src: tuple[np.ndarray, np.ndarray], tgt: tuple[np.ndarray, np.ndarray]) -> None:
        """Append sentences given per side as (flat ids, lengths)."""
        sides = {"src": src, "tgt": tgt}
        n, done = len(src[1]), 0
        starts = {side: np.concatenate([[0], np.cumsum(lens)]) for side, (_, lens) in sides.items()}
        while done < n:
            if not self._files or self.in_shard == self.shard_size:
                self._next_shard()
            take = min(n - done, self.shard_size - self.in_shard)
            for side, (flat, lens) in sides.items():
                a, b = starts[side][done], starts[side][done + take]
                self._files[f"{side}.bin"].write(np.ascontiguousarray(flat[a:b], dtype=self.dtypes[side]).tobytes())
                offsets = self._ends[side] + np.cumsum(lens[done : done + take], dtype=np.int64)
                self._files[f"{side}.idx"].write(offsets.tobytes())
                self._ends[side] = int(offsets[-1])  # take >= 1: the shard has room
            self.in_shard += take
            done += take

    def close(self) -> int:
        """Finish the last shard (an empty split gets one empty shard); returns the shard count."""
        if not self._files:
            self._next_shard()
        self._close_files()
        return self.shards

    def _next_shard(self) -> None:
        self._close_files()
        for side in ("src", "tgt"):
            for ext in ("bin", "idx"):
                path = self.directory / shard_name(self.split, self.shards, side, ext)
                self._files[f"{side}.{ext}"] = open(path, "wb")  # noqa: SIM115 (closed by _close_files)
            self._files[f"{side}.idx"].write(np.zeros(1, dtype=np.int64).tobytes())
            self._ends[side] = 0
        self.shards += 1
        self.in_shard = 0

    def _close_files(self) -> None:
        for fh in self._files.values():
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
        self._files = {}


def write_split(
    directory: Path,
    split: str,
    src: list[list[int]],
    tgt: list[list[int]],
    *,
    src_vocab_size: int,
    tgt_vocab_size: int,
    shard_size: int | None = None,
) -> None:
    """Write a whole split given as lists of id lists (for tests and tools; prepare streams instead)."""
    writer = ShardWriter(
        directory,
        split,
        shard_size=shard_size or max(1, len(src)),
        src_vocab_size=src_vocab_size,
        tgt_vocab_size=tgt_vocab_size,
    )
    packed = [
        (np.array([t for s in seqs for t in s], dtype=np.int64), np.array([len(s) for s in seqs], dtype=np.int64))
        for seqs in (src, tgt)
    ]
    writer.add(packed[0], packed[1])
    writer.close()


_SHARD = re.compile(r"\.(\d{5})\.src\.idx$")


class TokenDataset:
    """A prepared split: (src ids, tgt ids) by index over all its shards; lengths without reading tokens.

    Token files are memory-mapped (pages are read when a batch needs them); each side is
    read with its own vocabulary's dtype (separate vocabularies may sit on both sides of
    65,535 pieces).
    """

    def __init__(
        self,
        directory: str | Path,
        split: str,
        *,
        src_vocab_size: int,
        tgt_vocab_size: int,
    ) -> None:
        sizes = {"src": src_vocab_size, "tgt": tgt_vocab_size}
        directory = Path(directory)
        self.split = split
        found = sorted(int(m.group(1)) for p in directory.glob(f"{split}.*.src.idx") if (m := _SHARD.search(p.name)))
        if not found:
            raise DataError(f"{directory}: prepared split {split!r} not found", hint="run `nmt prepare CONFIG`")
        if found != list(range(len(found))):
            raise DataError(
                f"{directory}: split {split!r} has shards {found[:5]}..., not 0..{len(found) - 1}",
                hint="run `nmt prepare CONFIG --force`",
            )
        self._arrays: dict[str, list[np.ndarray]] = {"src": [], "tgt": []}
        self._offsets: dict[str, list[np.ndarray]] = {"src": [], "tgt": []}
        counts = []
        for k in found:
            for side in ("src", "tgt"):
                bin_path = directory / shard_name(split, k, side, "bin")
                idx_path = directory / shard_name(split, k, side, "idx")
                if not bin_path.is_file() or not idx_path.is_file():
                    raise DataError(f"{bin_path}: shard file missing", hint="run `nmt prepare CONFIG --force`")
                offsets = _map(idx_path, np.dtype(np.int64))
                array = _map(bin_path, token_dtype(sizes[side]))
                if len(offsets) == 0 or offsets[-1] != len(array):
                    raise DataError(
                        f"{bin_path}: size does not match {idx_path.name}", hint="run `nmt prepare CONFIG --force`"
                    )
                self._arrays[side].append(array)
                self._offsets[side].append(offsets)
            if len(self._offsets["src"][-1]) != len(self._offsets["tgt"][-1]):
                raise DataError(
                    f"{directory}: shard {k} of split {split!r} has different sentence counts per side",
                    hint="run `nmt prepare CONFIG --force`",
                )
            counts.append(len(self._offsets["src"][-1]) - 1)
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # first example of each shard
        # (N,) tokens per sentence (source without eos, target without bos/eos), all shards
        self.src_lens = _lengths(self._offsets["src"])
        self.tgt_lens = _lengths(self._offsets["tgt"])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        j = i - int(self._starts[k])
        out = []
        for side in ("src", "tgt"):
            offsets = self._offsets[side][k]
            out.append(np.asarray(self._arrays[side][k][offsets[j] : offsets[j + 1]], dtype=np.int64))
        return out[0], out[1]


def _map(path: Path, dtype: np.dtype) -> np.ndarray:
    """The file as a read-only memory map (an empty array for an empty file, which mmap refuses)."""
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def _lengths(offsets: list[np.ndarray]) -> np.ndarray:
    """Sentence lengths over all shards as int32 (4 bytes per example: 40 MB at 10M sentences)."""
    return np.concatenate([np.diff(o).astype(np.int32) for o in offsets])
