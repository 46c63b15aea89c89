"""scripts/bench_prepare.py: the synthetic corpus generator and the process-tree memory sampler."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def _bench_prepare():
    spec = importlib.util.spec_from_file_location("bench_prepare", ROOT / "scripts" / "bench_prepare.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_prepare"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


bp = _bench_prepare()
# sentence i is "s<i> x<i>" on the source side and "t<i>" on the target side, so a target line
# can be predicted from its source line
SRC = [f"s{i} x{i}".encode() for i in range(50)]
TGT = [f"t{i}".encode() for i in range(50)]


def _lines(n: int, *, seed: int, chunk_pairs: int = bp.CHUNK_PAIRS) -> tuple[list[str], list[str], list, list]:
    chunks = list(bp.corpus_chunks(SRC, TGT, n, seed=seed, chunk_pairs=chunk_pairs))
    src = b"".join(c[0] for c in chunks).decode()
    tgt = b"".join(c[1] for c in chunks).decode()
    assert src.endswith("\n") and tgt.endswith("\n")
    return src.split("\n")[:-1], tgt.split("\n")[:-1], [c[2] for c in chunks], [c[3] for c in chunks]


def test_lines_are_parallel_recombinations_with_counted_words() -> None:
    src, tgt, src_words, tgt_words = _lines(1000, seed=3, chunk_pairs=300)
    assert len(src) == len(tgt) == 1000
    assert [len(w) for w in src_words] == [300, 300, 300, 100]
    assert np.concatenate(src_words).tolist() == [len(s.split()) for s in src]
    assert np.concatenate(tgt_words).tolist() == [len(t.split()) for t in tgt]
    for s, t in zip(src, tgt, strict=True):
        if s and t:  # same picks on both sides
            assert t.split() == [f"t{w[1:]}" for w in s.split()[::2]]
            assert s.split()[1::2] == [f"x{w[1:]}" for w in s.split()[::2]]
        else:
            assert s or t, "never both sides empty"


def test_reproducible_per_seed() -> None:
    assert _lines(500, seed=1)[:2] == _lines(500, seed=1)[:2]
    assert _lines(500, seed=1)[0] != _lines(500, seed=2)[0]


def test_length_distribution_follows_the_recipe() -> None:
    n = 200_000
    _, _, _, tgt_words = _lines(n, seed=1)
    parts = np.concatenate(tgt_words)  # one target word per sentence: words = parts
    q = 1 - bp.P_PART
    normal = parts[(parts > 0) & (parts <= bp.MAX_PARTS)]
    # E[min(K, c)] = sum_{j<c} P(K > j) = (1 - q^c) / p for K ~ Geometric(p) on {1, 2, ...}
    assert abs(normal.mean() - (1 - q**bp.MAX_PARTS) / bp.P_PART) < 0.02
    assert abs((parts == 1).mean() - bp.P_PART) < 0.005
    long_ = (parts >= bp.LONG_PARTS[0]).mean()
    assert 0.5 * bp.P_LONG < long_ < 1.5 * bp.P_LONG
    assert parts.max() <= bp.LONG_PARTS[1]
    assert 0.7 * bp.P_EMPTY / 2 < (parts == 0).mean() < 1.3 * bp.P_EMPTY / 2  # half the empty pairs: target side


def test_length_stats_match_numpy() -> None:
    lengths = np.random.default_rng(0).integers(0, 90, 1001) ** 2 // 50
    stats = bp._length_stats(np.bincount(lengths))
    assert stats["mean"] == round(lengths.mean(), 2) and stats["max"] == lengths.max()
    for q in (50, 95, 99):
        assert stats[f"p{q}"] == np.percentile(lengths, q, method="inverted_cdf")


def test_measure_sees_the_whole_process_tree(tmp_path: Path) -> None:
    mib = 64  # each of parent and child touches this much
    code = (
        f"import subprocess, sys, time; a = bytearray({mib} << 20); "
        f"subprocess.run([sys.executable, '-c', 'import time; b = bytearray({mib} << 20); time.sleep(0.5)'])"
    )
    m = bp.measure([sys.executable, "-c", code], env=dict(os.environ), cwd=tmp_path, log=tmp_path / "x")
    assert m.peaks.max_procs == 2 and m.peaks.samples >= 5
    assert m.peaks.rss_tree >= 2 * mib * 1024
    assert mib * 1024 <= m.peaks.rss_single < 2 * mib * 1024
    assert m.peaks.pss_tree is None or m.peaks.pss_tree >= 2 * mib * 1024
    assert m.ru_maxrss_kib >= m.peaks.rss_single * 0.9
