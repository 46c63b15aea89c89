"""Token ids on disk: flat arrays plus offsets, in shards per split and side, memory-mapped back.

<split>.<k>.<side>.bin   all token ids of shard k (00000, 00001, ...) of the split,
                         concatenated (uint16, or int32 for vocabularies over 65,535
                         pieces), no bos/eos
<split>.<k>.<side>.idx   int64 offsets, len = sentences in the shard + 1; sentence i of the
                         shard is bin[idx[i]:idx[i+1]]

Shards let `nmt prepare` write as it encodes, never holding a split in memory; the
dataset reads them back as one sequence of examples in shard order.

The writer records per shard what the reader checks when it opens the files (`shard_record`:
sentences, ids per side, the largest id per side), kept by prepare in the manifest; the
reader also checks what needs no record (whole ids, offsets starting at 0 and never
decreasing, the last offset at the end of the ids), so a damaged file is a DataError before
any training step, never a traceback or silent garbage.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import IO, Any

import numpy as np

from nmt.errors import DataError


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.int32)


def shard_name(split: str, k: int, side: str, ext: str) -> str:
    return f"{split}.{k:05d}.{side}.{ext}"


def shard_record(sentences: int, ids: dict[str, int], top: dict[str, int]) -> dict[str, int]:
    """What the manifest keeps of one shard, for `TokenDataset` to check when it opens the files:
    sentences, and per side the ids and the largest id (-1: none). Deterministic (no times), so
    the same inputs give the same manifest."""
    record = {"sentences": sentences}
    for side in ("src", "tgt"):
        record |= {f"{side}_ids": ids[side], f"max_{side}_id": top[side]}
    return record


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
        self._max: dict[str, int] = {}
        self.records: list[dict[str, int]] = []  # per shard, once closed (see `shard_record`)

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
                if b > a:
                    self._max[side] = max(self._max[side], int(flat[a:b].max()))
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
            self._ends[side], self._max[side] = 0, -1
        self.shards += 1
        self.in_shard = 0

    def _close_files(self) -> None:
        for fh in self._files.values():
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
        if self._files:
            self.records.append(shard_record(self.in_shard, self._ends, self._max))
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
        records: list[dict[str, Any]] | None = None,
    ) -> None:
        """`records`: what the manifest recorded per shard (`shard_record`); checked when given."""
        sizes = {"src": src_vocab_size, "tgt": tgt_vocab_size}
        self.vocab_sizes = sizes
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
                    raise DataError(f"{bin_path}: shard file missing", hint=_REPREPARE)
                offsets = _map(idx_path, np.dtype(np.int64))
                array = _map(bin_path, token_dtype(sizes[side]))
                if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(array):
                    raise DataError(
                        f"{bin_path}: {len(array):,} ids but {idx_path.name} "
                        + (f"ends at offset {int(offsets[-1]):,}" if len(offsets) else "is empty")
                        + ("" if not len(offsets) or offsets[0] == 0 else f" and starts at {int(offsets[0]):,}, not 0"),
                        hint=_REPREPARE,
                    )
                if records is not None:
                    _check_record(records, k, side, bin_path, array, offsets, sizes[side])
                self._arrays[side].append(array)
                self._offsets[side].append(offsets)
            if len(self._offsets["src"][-1]) != len(self._offsets["tgt"][-1]):
                raise DataError(
                    f"{directory}: shard {k} of split {split!r} has different sentence counts per side",
                    hint="run `nmt prepare CONFIG --force`",
                )
            counts.append(len(self._offsets["src"][-1]) - 1)
        if records is not None and len(records) != len(found):
            raise DataError(
                f"{directory}: split {split!r} has {len(found)} shards but its manifest records {len(records)}",
                hint=_REPREPARE,
            )
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # first example of each shard
        # (N,) tokens per sentence (source without eos, target without bos/eos), all shards
        self.src_lens = _lengths(self._offsets["src"], directory, split, "src")
        self.tgt_lens = _lengths(self._offsets["tgt"], directory, split, "tgt")

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

    def check_ids(self, side: str, ids: np.ndarray, indices: np.ndarray) -> None:
        """DataError when a batch's ids (`ids`, of examples `indices`) hold one outside the vocabulary.

        Opening checks the largest id the manifest recorded against the vocabulary (reading every id
        would cost start-up time); this catches an id changed in place since prepare, at the first
        batch that holds it, before the model sees it."""
        if ids.size and int(ids.max()) >= self.vocab_sizes[side]:
            raise DataError(
                f"split {self.split!r}: an example among #{int(indices.min())}..#{int(indices.max())} holds {side} "
                f"id {int(ids.max())}, outside the vocabulary of {self.vocab_sizes[side]:,} pieces "
                "(a shard file was changed after prepare)",
                hint=_REPREPARE,
            )


_REPREPARE = "the prepared data are damaged: run `nmt prepare CONFIG --force`"


def _map(path: Path, dtype: np.dtype) -> np.ndarray:
    """The file as a read-only memory map (an empty array for an empty file, which mmap refuses);
    DataError when its size is not a whole number of `dtype` items (a truncated file)."""
    size = path.stat().st_size
    if size % dtype.itemsize:
        raise DataError(
            f"{path}: {size:,} bytes is not a whole number of {dtype.itemsize}-byte items (truncated or damaged)",
            hint=_REPREPARE,
        )
    if size == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def _check_record(
    records: list[dict[str, Any]], k: int, side: str, path: Path, array: np.ndarray, offsets: np.ndarray, vocab: int
) -> None:
    """DataError when shard `k`'s files differ from what prepare recorded, or its ids exceed the vocabulary."""
    record = records[k] if k < len(records) else {}
    want = (record.get("sentences"), record.get(f"{side}_ids"))
    if want != (len(offsets) - 1, len(array)):
        raise DataError(
            f"{path}: {len(offsets) - 1:,} sentences / {len(array):,} ids, but prepare wrote {want[0]} / {want[1]}",
            hint=_REPREPARE,
        )
    top = record.get(f"max_{side}_id", -1)
    if top >= vocab:
        raise DataError(f"{path}: holds id {top}, outside the vocabulary of {vocab:,} pieces", hint=_REPREPARE)


def _lengths(offsets: list[np.ndarray], directory: Path, split: str, side: str) -> np.ndarray:
    """Sentence lengths over all shards as int32 (4 bytes per example: 40 MB at 10M sentences);
    DataError where offsets decrease (a damaged .idx)."""
    out = []
    for k, o in enumerate(offsets):
        lens = np.diff(o)
        if len(lens) and lens.min() < 0:
            raise DataError(
                f"{directory / shard_name(split, k, side, 'idx')}: offsets decrease at sentence "
                f"{int(np.argmax(lens < 0))} (damaged)",
                hint=_REPREPARE,
            )
        out.append(lens.astype(np.int32))
    return np.concatenate(out)
