"""Token ids on disk: one flat array plus offsets per split and side, memory-mapped back.

<split>.<side>.bin   all token ids of the split, concatenated (uint16, or int32 for
                     vocabularies over 65,535 pieces), no bos/eos
<split>.<side>.idx   int64 offsets, len = sentences + 1; sentence i is bin[idx[i]:idx[i+1]]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nmt.errors import DataError
from nmt.fileio import atomic_open


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.int32)


def write_side(directory: Path, split: str, side: str, seqs: list[list[int]], *, vocab_size: int) -> None:
    """Write one side of one split (atomically, each file)."""
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter((t for s in seqs for t in s), dtype=token_dtype(vocab_size), count=int(offsets[-1]))
    with atomic_open(directory / f"{split}.{side}.bin") as fh:
        fh.write(flat.tobytes())
    with atomic_open(directory / f"{split}.{side}.idx") as fh:
        fh.write(offsets.tobytes())


class TokenDataset:
    """A prepared split: (src ids, tgt ids) by index; lengths without reading tokens.

    Each side is read with its own vocabulary's dtype (separate vocabularies may sit on
    both sides of 65,535 pieces).
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
        self._arrays = {}
        self._offsets = {}
        for side in ("src", "tgt"):
            bin_path, idx_path = directory / f"{split}.{side}.bin", directory / f"{split}.{side}.idx"
            if not bin_path.is_file() or not idx_path.is_file():
                raise DataError(f"{bin_path}: prepared split {split!r} not found", hint="run `nmt prepare CONFIG`")
            offsets = np.fromfile(idx_path, dtype=np.int64)
            dtype = token_dtype(sizes[side])
            if bin_path.stat().st_size == 0:
                array = np.zeros(0, dtype=dtype)
            else:
                array = np.memmap(bin_path, dtype=dtype, mode="r")
            if len(offsets) == 0 or offsets[-1] != len(array):
                raise DataError(
                    f"{bin_path}: size does not match {idx_path.name}", hint="run `nmt prepare CONFIG --force`"
                )
            self._arrays[side], self._offsets[side] = array, offsets
        if len(self._offsets["src"]) != len(self._offsets["tgt"]):
            raise DataError(
                f"{directory}: split {split!r} has different sentence counts per side",
                hint="run `nmt prepare CONFIG --force`",
            )
        self.src_lens = np.diff(self._offsets["src"])  # (N,) tokens per source sentence, no eos
        self.tgt_lens = np.diff(self._offsets["tgt"])  # (N,) tokens per target sentence, no bos/eos

    def __len__(self) -> int:
        return len(self.src_lens)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        s, t = self._offsets["src"], self._offsets["tgt"]
        return (
            np.asarray(self._arrays["src"][s[i] : s[i + 1]], dtype=np.int64),
            np.asarray(self._arrays["tgt"][t[i] : t[i + 1]], dtype=np.int64),
        )
