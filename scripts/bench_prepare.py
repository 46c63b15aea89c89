"""`nmt prepare` at scale: wall time, pairs/s and peak memory of the whole process tree.

    python scripts/bench_prepare.py --pairs 1000000 [--pairs 10M ...] [--workdir DIR]
        [--nmt-python PATH] [--nmt-src DIR] [--fairseq] [--keep-corpus] [--keep-data] [--json OUT]

For each --pairs N:
1. A synthetic parallel corpus of N pairs, reused when WORKDIR/corpus-N-s1/corpus.json says it
   was made by the same recipe, seed and Multi30k files (see `corpus_chunks` for the recipe),
   plus Multi30k's 1,014 validation pairs as the valid split.
2. A config with configs/multi30k_de_en.yaml's data and vocab sections (joint 8k BPE de->en),
   its splits pointing at that corpus, and its workdir WORKDIR/exp-N.
3. `NMT_PYTHON -m nmt prepare CFG --force` (plus `--json` when its --help offers it), run from
   --nmt-src (default: this checkout), which also goes first on PYTHONPATH: point it at a
   `git worktree` of an older commit to measure "before". Wall time (process start included),
   CPU time, and memory sampled every 50 ms from /proc over the process and all its
   descendants: the peak of the summed RSS, the peak of the summed PSS (forked workers share
   pages, which RSS counts again in every process), the peak RSS of any single process, and
   ru_maxrss from wait4 (the kernel's exact per-process high-water mark, which 50 ms sampling
   can miss; the same figure as getrusage(RUSAGE_CHILDREN), but for this run alone). When the
   --json output has a "timings" dict, SentencePiece training's share of the wall time is shown.
4. --fairseq: the peers' pipeline on the same pairs, in their venv ($VENV of
   ../shared/peers/00_env.sh): (a) SentencePiece encoding of train and valid to piece strings
   with the spm.model nmt just trained, 100k lines per `encode` call on OMP_NUM_THREADS
   threads, and (b) `fairseq-preprocess --joined-dictionary --workers OMP_NUM_THREADS`. It does
   no SentencePiece training and no cleaning, so compare it with nmt's wall time minus its
   spm_train phase as well as with the total.
--pairs takes 1000000, 1_000_000, 1e6, 1M or 500k. Multi30k comes from $NMT_DATA/multi30k
(default ../shared/data beside this checkout); WORKDIR defaults to data/bench_prepare (ignored by
git). The experiment and fairseq outputs are deleted after each N; the corpus too, unless it was
reused or --keep-corpus is given (10M pairs are ~3 GB of text). stdout/stderr of every command
stay in WORKDIR/logs. A table goes to stdout, and --json OUT appends one JSON line per
measurement (tool nmt, and fairseq with its two stages inside) with the machine, the date and
the git commit of the nmt checkout. Subprocesses get OMP_NUM_THREADS=2 unless it is set.
pairs/s counts training pairs only (the 1,014 valid pairs are left out).
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
SEED = 1
RECIPE = 1  # bump when corpus_chunks changes: stamps of older corpora stop matching
P_PART = 0.46  # parts per pair ~ Geometric(P_PART): mean 2.17 x ~11.5 Multi30k words = ~25 words
MAX_PARTS = 12  # cap of the geometric draw (~140 words, still kept by the cleaner)
P_LONG, LONG_PARTS = 0.0005, (25, 40)  # very long pairs (~300-460 words): dropped as too long
P_EMPTY = 0.001  # pairs with one side empty: dropped as empty
CHUNK_PAIRS = 1 << 18  # pairs drawn and written per chunk (part of the recipe: it fixes the draws)
ENCODE_LINES = 100_000  # lines per SentencePiece encode call in the fairseq baseline
MIB = 1024  # KiB per MiB
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)  # logs: no 80-column wrap


def corpus_chunks(
    src: Sequence[bytes],
    tgt: Sequence[bytes],
    n_pairs: int,
    *,
    seed: int,
    chunk_pairs: int = CHUNK_PAIRS,
    max_parts: int = MAX_PARTS,
) -> Iterator[tuple[bytes, bytes, np.ndarray, np.ndarray]]:
    """Synthetic parallel text recombined from aligned sentences, in chunks of newline-ended lines.

    The recipe: pair i joins k_i aligned sentences picked uniformly with replacement, the same
    picks on both sides (so the corpus stays parallel), with a space between them. k_i is
    min(Geometric(P_PART), MAX_PARTS) on {1, 2, ...}, so 46% of lines are one sentence and the
    rest a long tail, aiming at WMT-like training text (a mean of ~25 words). On Multi30k
    (11.1 de / 11.9 en words per sentence), 1M pairs measured: de mean 24.3 words, median 18,
    p95 62, p99 93; en mean 26.0, median 20, p95 66, p99 99. A fraction P_LONG of pairs instead
    joins 25-40 sentences (~300-550 words, beyond the cleaner's 250 tokens), and a fraction
    P_EMPTY has one side (chosen at random) empty; `nmt prepare` should drop both. Draws come from
    numpy's default_rng(seed) chunk by chunk, so the same (sentences, n_pairs, seed, chunk_pairs)
    always give the same bytes. `max_parts=1` gives Multi30k-length lines (one sentence a pair,
    ~12 words) for comparisons with figures measured on such text.

    Yields:
        (src text, tgt text, src words per line, tgt words per line) for up to `chunk_pairs` pairs.
    """
    rng = np.random.default_rng(seed)
    n = len(src)
    assert n == len(tgt) and n > 0
    # index n is the empty sentinel: it contributes nothing, or just the newline when last
    sides = []
    for sents in (src, tgt):
        mid = np.array([s + b" " for s in sents] + [b""], dtype=object)
        end = np.array([s + b"\n" for s in sents] + [b"\n"], dtype=object)
        words = np.array([len(s.split()) for s in sents] + [0], dtype=np.int64)
        sides.append((mid, end, words))
    for start in range(0, n_pairs, chunk_pairs):
        m = min(chunk_pairs, n_pairs - start)
        parts = np.minimum(rng.geometric(P_PART, m), max_parts)
        kind = rng.random(m)
        long_ = kind < P_LONG
        parts[long_] = rng.integers(LONG_PARTS[0], LONG_PARTS[1] + 1, int(long_.sum()))
        empty = (kind >= P_LONG) & (kind < P_LONG + P_EMPTY)
        empty_src = rng.random(m) < 0.5
        picks = rng.integers(0, n, int(parts.sum()))
        firsts = np.cumsum(parts) - parts
        last = np.zeros(len(picks), dtype=bool)
        last[firsts + parts - 1] = True
        pair_of = np.repeat(np.arange(m), parts)
        out = []
        for (mid, end, words), blank in zip(sides, (empty & empty_src, empty & ~empty_src), strict=True):
            idx = np.where(blank[pair_of], n, picks)
            pieces = mid[idx]
            pieces[last] = end[idx[last]]
            out += [b"".join(pieces.tolist()), np.add.reduceat(words[idx], firsts)]
        yield out[0], out[2], out[1], out[3]


def _read_gz_lines(path: Path) -> list[bytes]:
    with gzip.open(path, "rb") as fh:
        lines = fh.read().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line.strip() for line in lines]


def _length_stats(hist: np.ndarray) -> dict[str, float]:
    """Mean, median, p95, p99 and max of line lengths (words) given as a histogram."""
    cum = np.cumsum(hist)
    pct = {f"p{q}": int(np.searchsorted(cum, cum[-1] * q / 100)) for q in (50, 95, 99)}
    mean = float((np.arange(len(hist)) * hist).sum() / cum[-1])
    return {"mean": round(mean, 2), **pct, "max": int(np.flatnonzero(hist)[-1])}


def ensure_corpus(n_pairs: int, workdir: Path, data_dir: Path, max_parts: int = MAX_PARTS) -> tuple[Path, dict, bool]:
    """The corpus directory for n_pairs, its stamp, and whether it was generated now."""
    sources = {
        f"{split}.{lang}": data_dir / f"{split}.{lang}.gz" for split in ("train", "val") for lang in ("de", "en")
    }
    want = {
        "recipe": RECIPE,
        "n_pairs": n_pairs,
        "seed": SEED,
        "max_parts": max_parts,
        "sources": {k: hashlib.sha256(p.read_bytes()).hexdigest()[:16] for k, p in sources.items()},
    }
    out = workdir / (f"corpus-{n_pairs}-s{SEED}" + (f"-k{max_parts}" if max_parts != MAX_PARTS else ""))
    stamp_path = out / "corpus.json"
    if stamp_path.is_file():
        stamp = json.loads(stamp_path.read_text())
        sizes = stamp.get("bytes", {})
        if {k: stamp.get(k) for k in want} == want and all(
            (out / name).is_file() and (out / name).stat().st_size == size for name, size in sizes.items()
        ):
            return out, stamp, False
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    src, tgt = _read_gz_lines(sources["train.de"]), _read_gz_lines(sources["train.en"])
    hists = [np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)]
    with open(out / "train.de.tmp", "wb") as fs, open(out / "train.en.tmp", "wb") as ft:
        for src_text, tgt_text, src_words, tgt_words in corpus_chunks(
            src, tgt, n_pairs, seed=SEED, max_parts=max_parts
        ):
            fs.write(src_text)
            ft.write(tgt_text)
            for i, words in enumerate((src_words, tgt_words)):
                counts = np.bincount(words)
                hists[i] = np.pad(hists[i], (0, max(0, len(counts) - len(hists[i]))))
                hists[i][: len(counts)] += counts
    for lang in ("de", "en"):
        os.replace(out / f"train.{lang}.tmp", out / f"train.{lang}")
        (out / f"valid.{lang}").write_bytes(gzip.decompress(sources[f"val.{lang}"].read_bytes()))
    names = ("train.de", "train.en", "valid.de", "valid.en")
    stamp = {
        **want,
        "generate_s": round(time.perf_counter() - t0, 2),
        "bytes": {name: (out / name).stat().st_size for name in names},
        "words_de": _length_stats(hists[0]),
        "words_en": _length_stats(hists[1]),
    }
    stamp_path.write_text(json.dumps(stamp, indent=2) + "\n")
    return out, stamp, True


def write_config(corpus: Path, exp_dir: Path, path: Path) -> None:
    """configs/multi30k_de_en.yaml's data and vocab sections, splits pointing at the corpus."""
    recipe = yaml.safe_load((ROOT / "configs" / "multi30k_de_en.yaml").read_text())
    data = {**recipe["data"], "splits": {"train": str(corpus / "train"), "valid": str(corpus / "valid")}}
    cfg = {
        "name": f"bench_prepare_{exp_dir.name.removeprefix('exp-')}",
        "workdir": str(exp_dir),
        "data": data,
        "vocab": recipe["vocab"],
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


@dataclass
class Peaks:
    """Memory high-water marks of a process tree, KiB (pss None where smaps_rollup is unreadable)."""

    rss_tree: int = 0
    pss_tree: int | None = 0
    rss_single: int = 0
    max_procs: int = 0
    samples: int = 0


class TreeSampler:
    """Samples RSS and PSS of a process and all its descendants from /proc every `interval_s`."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self.pid, self.interval_s, self.peaks = pid, interval_s, Peaks()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval_s):
                return

    def sample(self) -> None:
        procs: dict[int, tuple[int, int]] = {}  # pid -> (ppid, rss KiB)
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open(f"/proc/{name}/stat", "rb") as fh:
                        fields = fh.read().rsplit(b")", 1)[1].split()
                except OSError:  # exited meanwhile
                    continue
                procs[int(name)] = (int(fields[1]), int(fields[21]) * PAGE_KIB)
        children = defaultdict(list)
        for pid, (ppid, _) in procs.items():
            children[ppid].append(pid)
        tree, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            if pid in procs:
                tree.append(pid)
                todo += children[pid]
        if not tree:
            return
        rss = [procs[pid][1] for pid in tree]
        p = self.peaks
        p.samples += 1
        p.rss_tree, p.rss_single = max(p.rss_tree, sum(rss)), max(p.rss_single, max(rss))
        p.max_procs = max(p.max_procs, len(tree))
        if p.pss_tree is not None:
            pss = [_pss_kib(pid) for pid in tree]
            p.pss_tree = None if None in pss else max(p.pss_tree, sum(x or 0 for x in pss))


def _pss_kib(pid: int) -> int | None:
    """Proportional set size of a process, 0 when it has exited or has no memory (a zombie)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return 0
    except OSError:  # not ours to read: no PSS figure for this run
        return None
    return 0


@dataclass
class Measured:
    wall_s: float
    cpu_s: float  # user + system, the process and the descendants it waited for
    ru_maxrss_kib: int
    peaks: Peaks
    stdout: str
    returncode: int = 0


def measure(cmd: list[str], *, env: dict[str, str], cwd: Path, log: Path, fatal: bool = True) -> Measured:
    """Run `cmd` to completion under a TreeSampler; on failure exit (`fatal`) or warn with the log's tail."""
    shown = ["<script>" if "\n" in arg else arg for arg in cmd]
    console.print("+ " + " ".join(shown), style="dim", markup=False)
    log.parent.mkdir(parents=True, exist_ok=True)
    out, err = log.with_suffix(".out"), log.with_suffix(".err")
    with open(out, "wb") as fo, open(err, "wb") as fe:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=fo, stderr=fe)
        with TreeSampler(proc.pid) as sampler:
            # wait4, not Popen.wait: its rusage is this child's alone (ru_maxrss: max over the tree it reaped)
            _, status, usage = os.wait4(proc.pid, 0)
        wall_s = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        rc = proc.returncode
        why = f"exit code {rc}" if rc > 0 else f"signal {-rc}" + (" (SIGKILL: out of memory?)" if rc == -9 else "")
        message = f"failed with {why}: {' '.join(shown)}"
        tail = err.read_text(errors="replace")[-3000:]
        if fatal:
            sys.exit(f"{message}\n{tail}")
        console.print(f"{message}\n{tail}", style="red", markup=False)
    cpu_s = usage.ru_utime + usage.ru_stime
    stdout = out.read_text(errors="replace")
    return Measured(wall_s, cpu_s, usage.ru_maxrss, sampler.peaks, stdout, proc.returncode)


PROBE = "import json, nmt, sentencepiece; print(json.dumps([nmt.__version__, nmt.__file__, sentencepiece.__version__]))"
FAIRSEQ_PROBE = """
import json
from importlib.metadata import PackageNotFoundError, version
def v(name):
    try:
        return version(name)
    except PackageNotFoundError:
        return None
print(json.dumps({name: v(name) for name in ("fairseq", "fairseq-fixed", "sentencepiece", "torch")}))
"""
ENCODE = """
import itertools, sys
import sentencepiece as spm
sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
threads, chunk = int(sys.argv[2]), int(sys.argv[3])
for src, dst in zip(sys.argv[4::2], sys.argv[5::2]):
    with open(src, encoding="utf-8", newline="\\n") as fi, open(dst, "w", encoding="utf-8") as fo:
        while lines := [line.strip() for line in itertools.islice(fi, chunk)]:
            pieces = sp.encode(lines, out_type=str, num_threads=threads)
            fo.write("".join(" ".join(p) + "\\n" for p in pieces))
"""


def git_commit(src: Path) -> str | None:
    """HEAD of the checkout at `src`, with "+dirty" when tracked files differ from it."""
    try:
        head = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
        )
    except OSError:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if head.returncode == 0 else None


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    mem_kib = int(
        next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in line)
    )
    return {
        "cpu": model,
        "avx512_bf16": "avx512_bf16" in cpuinfo,
        "nproc": len(os.sched_getaffinity(0)),
        "mem_gib": round(mem_kib / MIB**2, 1),
    }


def run_nmt(n_pairs: int, corpus: Path, args: argparse.Namespace, env: dict[str, str]) -> tuple[dict, Path]:
    """`nmt prepare --force` on the corpus; the record and the experiment dir."""
    src = (args.nmt_src or ROOT).resolve()
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))}
    probe = subprocess.run([args.nmt_python, "-c", PROBE], env=env, cwd=src, capture_output=True, text=True)
    if probe.returncode != 0:
        sys.exit(f"{args.nmt_python} cannot import nmt from {src}:\n{probe.stderr[-2000:]}")
    version, nmt_file, spm_version = json.loads(probe.stdout)
    if not Path(nmt_file).resolve().is_relative_to(src):
        sys.exit(f"{args.nmt_python} imports nmt from {nmt_file}, not from {src}")
    help_text = subprocess.run(
        [args.nmt_python, "-m", "nmt", "prepare", "--help"], env=env, cwd=src, capture_output=True, text=True
    ).stdout
    exp_dir = args.workdir / f"exp-{n_pairs}"
    cfg = args.workdir / f"prepare-{n_pairs}.yaml"
    write_config(corpus, exp_dir, cfg)
    cmd = [args.nmt_python, "-m", "nmt", "prepare", str(cfg), "--force"] + (["--json"] if "--json" in help_text else [])
    m = measure(cmd, env=env, cwd=src, log=args.workdir / "logs" / f"{n_pairs}-nmt", fatal=False)
    try:
        report = json.loads(m.stdout) if "--json" in cmd and m.returncode == 0 else None
    except ValueError:
        console.print(f"warning: `nmt prepare --json` printed no JSON document (see {args.workdir / 'logs'})")
        report = None
    timings = report.get("timings") if isinstance(report, dict) else None
    record = _record(n_pairs, "nmt", m, timings)
    spm_s = (timings or {}).get("spm_train")
    record |= {
        "returncode": m.returncode,
        "spm_train_share": round(spm_s / m.wall_s, 3) if isinstance(spm_s, int | float) else None,
        "nmt": {"version": version, "src": str(src), "commit": git_commit(src), "sentencepiece": spm_version},
        "config": yaml.safe_load(cfg.read_text()),
        "prepare_json": report,
    }
    return record, exp_dir


def run_fairseq(n_pairs: int, corpus: Path, exp_dir: Path, args: argparse.Namespace, env: dict[str, str]) -> dict:
    """The peers' baseline: (a) SentencePiece encoding with nmt's model, (b) fairseq-preprocess."""
    models = [exp_dir / "data" / "spm.model"] + sorted((exp_dir / "data").resolve().rglob("spm.model"))
    model = next((p for p in models if p.is_file()), None)
    if model is None:
        sys.exit(f"no spm.model under {exp_dir / 'data'}: the nmt run has to come first")
    out = args.workdir / f"fairseq-{n_pairs}"
    shutil.rmtree(out, ignore_errors=True)
    (out / "spm").mkdir(parents=True)
    threads = env["OMP_NUM_THREADS"]
    files = [
        str(p)
        for s in ("train", "valid")
        for lang in ("de", "en")
        for p in (corpus / f"{s}.{lang}", out / "spm" / f"{s}.{lang}")
    ]
    logs = args.workdir / "logs"
    encode = measure(
        [args.fairseq_python, "-c", ENCODE, str(model), threads, str(ENCODE_LINES), *files],
        env=env,
        cwd=out,
        log=logs / f"{n_pairs}-fairseq-encode",
    )
    preprocess_cmd = [str(Path(args.fairseq_python).parent / "fairseq-preprocess")]
    preprocess_cmd += ["--source-lang", "de", "--target-lang", "en", "--joined-dictionary", "--workers", threads]
    preprocess_cmd += ["--trainpref", str(out / "spm" / "train"), "--validpref", str(out / "spm" / "valid")]
    preprocess = measure(
        preprocess_cmd + ["--destdir", str(out / "bin")], env=env, cwd=out, log=logs / f"{n_pairs}-fairseq-preprocess"
    )
    shutil.rmtree(out, ignore_errors=True)
    stages = {
        "spm_encode": _record(n_pairs, "fairseq spm_encode", encode),
        "preprocess": _record(n_pairs, "fairseq preprocess", preprocess),
    }
    a, b = encode.peaks, preprocess.peaks
    peaks = Peaks(  # the stages run one after the other: the pipeline's peak is the larger one
        rss_tree=max(a.rss_tree, b.rss_tree),
        pss_tree=None if None in (a.pss_tree, b.pss_tree) else max(a.pss_tree, b.pss_tree),
        rss_single=max(a.rss_single, b.rss_single),
        max_procs=max(a.max_procs, b.max_procs),
        samples=a.samples + b.samples,
    )
    total = Measured(
        encode.wall_s + preprocess.wall_s,
        encode.cpu_s + preprocess.cpu_s,
        max(encode.ru_maxrss_kib, preprocess.ru_maxrss_kib),
        peaks,
        "",
    )
    timings = {"spm_encode": round(encode.wall_s, 2), "preprocess": round(preprocess.wall_s, 2)}
    probe = subprocess.run([args.fairseq_python, "-c", FAIRSEQ_PROBE], capture_output=True, text=True)
    versions = json.loads(probe.stdout) if probe.returncode == 0 else None
    return _record(n_pairs, "fairseq", total, timings) | {"stages": stages, "fairseq": versions}


def _record(n_pairs: int, tool: str, m: Measured, timings: dict | None = None) -> dict:
    mib = lambda kib: None if kib is None else round(kib / MIB, 1)  # noqa: E731
    return {
        "n_pairs": n_pairs,
        "tool": tool,
        "wall_s": round(m.wall_s, 2),
        "pairs_per_s": round(n_pairs / m.wall_s),
        "cpu_s": round(m.cpu_s, 2),
        "peak_rss_tree_mib": mib(m.peaks.rss_tree),
        "peak_pss_tree_mib": mib(m.peaks.pss_tree),
        "peak_rss_single_mib": mib(m.peaks.rss_single),
        "ru_maxrss_mib": mib(m.ru_maxrss_kib),
        "max_procs": m.peaks.max_procs,
        "samples": m.peaks.samples,
        "timings": timings,
    }


def _count(text: str) -> int:
    """1000000, 1_000_000, 1e6, 1M or 500k."""
    scale = {"k": 10**3, "m": 10**6}.get(text[-1].lower(), 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=_count, action="append", required=True, help="training pairs (repeatable)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "data" / "bench_prepare")
    parser.add_argument("--nmt-python", default=sys.executable, help="the Python that runs nmt (default: this one)")
    parser.add_argument("--nmt-src", type=Path, help="checkout put first on PYTHONPATH (default: this one)")
    parser.add_argument("--fairseq", action="store_true", help="also time the peers' spm encode + fairseq-preprocess")
    parser.add_argument("--keep-corpus", action="store_true", help="keep generated corpora for later runs")
    parser.add_argument(
        "--max-parts",
        type=int,
        default=MAX_PARTS,
        help=f"most Multi30k sentences joined into one line (default {MAX_PARTS}: WMT-like lengths; 1: Multi30k's)",
    )
    parser.add_argument(
        "--keep-data", action="store_true", help="keep the prepared experiment (WORKDIR/exp-N), e.g. to time training"
    )
    parser.add_argument("--json", type=Path, help="append one JSON line per measurement")
    args = parser.parse_args()
    args.workdir = args.workdir.resolve()
    data_dir = Path(os.environ.get("NMT_DATA", ROOT.parent / "shared" / "data")).resolve() / "multi30k"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    if args.fairseq:
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        venv = Path(os.environ.get("VENV", Path(os.environ.get("WORK", cache / "nmt-peers")) / "venv-fairseq"))
        args.fairseq_python = str(venv / "bin" / "python")
        if not (venv / "bin" / "fairseq-preprocess").is_file():
            sys.exit(f"no fairseq venv at {venv}: run ../shared/peers/01_setup.sh or set VENV")
    context = {"machine": machine(), "date": datetime.datetime.now().isoformat(timespec="seconds")}
    records = []
    for n_pairs in args.pairs:  # a failed nmt run (e.g. out of memory) is recorded, and the next size runs
        records += bench_one(n_pairs, args, env, data_dir, context)
    print_table(records)
    if any(r.get("returncode") for r in records):
        sys.exit(1)


def bench_one(n_pairs: int, args: argparse.Namespace, env: dict[str, str], data_dir: Path, context: dict) -> list[dict]:
    """Corpus, nmt and (with --fairseq) the peers' pipeline for one size; each record is appended to --json."""
    corpus, stamp, generated = ensure_corpus(n_pairs, args.workdir, data_dir, args.max_parts)
    mb = sum(stamp["bytes"].values()) / 1e6
    how = f"generated in {stamp['generate_s']} s" if generated else "reused"
    words = "; ".join(
        f"{k[-2:]} " + " ".join(f"{q} {v}" for q, v in stamp[k].items()) for k in ("words_de", "words_en")
    )
    console.print(f"corpus {corpus}: {n_pairs:,} pairs + 1,014 valid, {mb:,.1f} MB ({how}); words per line: {words}")
    context = context | {
        "corpus": {k: stamp.get(k) for k in ("seed", "recipe", "max_parts", "generate_s", "words_de", "words_en")}
        | {"mb": round(mb, 1)}
    }
    record, exp_dir = run_nmt(n_pairs, corpus, args, env)
    context["commit"] = record["nmt"]["commit"]  # for fairseq: the nmt whose spm.model it used
    records = [_emit(record | context, args.json)]
    if args.fairseq and record["returncode"] == 0:
        records.append(_emit(run_fairseq(n_pairs, corpus, exp_dir, args, env) | context, args.json))
    if not args.keep_data:
        shutil.rmtree(exp_dir, ignore_errors=True)
    if generated and not args.keep_corpus:
        shutil.rmtree(corpus)
    return records


def _emit(record: dict, path: Path | None) -> dict:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
    return record


def print_table(records: list[dict]) -> None:
    table = Table(title="nmt prepare vs fairseq", title_justify="left")
    columns = [
        "pairs",
        "tool",
        "wall s",
        "pairs/s",
        "CPU s",
        "RSS tree",
        "PSS tree",
        "RSS 1 proc",
        "ru_maxrss",
        "procs",
    ]
    for i, col in enumerate(columns + ["spm train"]):
        table.add_column(col, justify="left" if i == 1 else "right")
    for r in records:
        for row in [r, *r.get("stages", {}).values()]:
            share = row.get("spm_train_share")
            spm = f"{row['timings']['spm_train']:.1f} s ({share:.0%})" if share is not None else ""
            tool = row["tool"] + (f" FAILED ({row['returncode']})" if row.get("returncode") else "")
            values = [row["n_pairs"], tool, row["wall_s"], row["pairs_per_s"], row["cpu_s"]]
            values += [
                row[k] for k in ("peak_rss_tree_mib", "peak_pss_tree_mib", "peak_rss_single_mib", "ru_maxrss_mib")
            ]
            table.add_row(*[_fmt(v) for v in values + [row["max_procs"]]], spm)
    console.print(table)
    console.print("[dim]memory in MiB; RSS/PSS tree: peak of the sum over the process and its descendants[/dim]")
    for r in records:
        if r.get("timings") and r["tool"] == "nmt":
            console.print(
                f"nmt phases at {r['n_pairs']:,} pairs: " + ", ".join(f"{k} {v} s" for k, v in r["timings"].items())
            )


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


if __name__ == "__main__":
    main()
