"""`nmt prepare` on bad input at scale and under failure: line-exact errors in multi-million-line
files, a killed run, a full disk. Files are generated here (cheaply), never committed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nmt.config import load_config
from nmt.data.binarize import TokenDataset
from nmt.data.prepare import prepare
from nmt.data.prepared import read_manifest
from nmt.experiment import Experiment
from tests.conftest import run_nmt
from tests.corpora import reverse_pairs, write_split

pytestmark = pytest.mark.slow  # subprocess prepares, killed and resumed: `make test-fast` skips them

LINES = 3_000_000


def config(tmp_path: Path, train: Path, valid: Path, workdir: Path, extra: str = "") -> Path:
    cfg = tmp_path / f"{train.parent.name}.yaml"
    cfg.write_text(f"""name: scale
workdir: {workdir}
data:
  src_lang: src
  tgt_lang: tgt
  splits:
    train: {train}
    valid: {valid}
{extra}vocab:
  size: 60
""")
    return cfg


def big_files(tmp_path: Path, *, bad_line: int | None = None, tgt_short: bool = False) -> Path:
    """3,000,000-line train files (12 MB a side) written in one go; optionally an invalid byte on one line."""
    d = tmp_path / "big"
    d.mkdir(exist_ok=True)
    line = b"alpha bravo\n"
    src = bytearray(line * LINES)
    if bad_line is not None:
        at = (bad_line - 1) * len(line) + 6  # the 'b' of bravo, column 7
        src[at] = 0xFF
    (d / "train.src").write_bytes(src)
    (d / "train.tgt").write_bytes(line.upper() * (LINES - tgt_short))
    write_split(d, "valid", reverse_pairs(5, seed=2))
    return d


def test_invalid_utf8_on_line_three_million_names_file_line_and_byte(tmp_path: Path) -> None:
    d = big_files(tmp_path, bad_line=LINES)
    cfg = config(tmp_path, d / "train", d / "valid", tmp_path / "exp")
    t0 = time.monotonic()
    result = run_nmt("prepare", str(cfg))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert f"{d / 'train.src'} line 3000000: invalid UTF-8 (byte 0xff, col 7)" in message, message
    assert time.monotonic() - t0 < 30  # found by the scan, before any SentencePiece work


def test_target_one_line_short_gives_both_counts(tmp_path: Path) -> None:
    d = big_files(tmp_path, tgt_short=True)
    cfg = config(tmp_path, d / "train", d / "valid", tmp_path / "exp")
    result = run_nmt("prepare", str(cfg))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert f"{d / 'train.src'} has 3,000,000 lines but {d / 'train.tgt'} has 2,999,999" in message, message


def corpus(tmp_path: Path, name: str, n: int, seed: int) -> tuple[Path, Path]:
    d = tmp_path / name
    write_split(d, "train", reverse_pairs(n, seed=seed, max_len=12))
    write_split(d, "valid", reverse_pairs(20, seed=seed + 100))
    return d / "train", d / "valid"


def snapshot(workdir: Path) -> dict[str, object]:
    """What a reader of <workdir>/data sees: the manifest's inputs and every training example."""
    exp = Experiment(workdir)
    manifest = read_manifest(exp.data_dir)
    assert manifest is not None, "no readable manifest"
    ds = TokenDataset(exp.data_dir, "train", src_vocab_size=60, tgt_vocab_size=60)
    assert len(ds) == manifest["splits"]["train"]["sentences"]
    return {
        "inputs": manifest["inputs"]["train"]["src_sha256"],
        "examples": [(s.tolist(), t.tolist()) for s, t in (ds[i] for i in range(0, len(ds), 97))],
    }


def test_killed_prepare_leaves_the_previous_data_usable_at_every_moment(tmp_path: Path) -> None:
    """SIGKILL at moments spread over a whole run (scan, SentencePiece, encoding shards, swap):
    <workdir>/data is always the old dataset or, once swapped, the complete new one."""
    workdir = tmp_path / "exp"
    old_cfg = config(tmp_path, *corpus(tmp_path, "old", 2_000, seed=1), workdir)
    new_cfg = config(tmp_path, *corpus(tmp_path, "new", 150_000, seed=2), workdir, extra="  shard_size: 20000\n")
    prepare(load_config(old_cfg))
    old = snapshot(workdir)
    cmd = [sys.executable, "-m", "nmt", "prepare", str(new_cfg)]
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True)  # the full run, to time it
    whole = time.monotonic() - t0
    new = snapshot(workdir)
    assert new["inputs"] != old["inputs"]
    prepare(load_config(old_cfg))  # back to the old data
    assert snapshot(workdir) == old
    seen, mid_build = set(), 0
    for k in range(1, 9):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(whole * k / 9)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        mid_build += any(p.name.startswith(".data.") for p in workdir.iterdir())  # staging left: killed while encoding
        now = snapshot(workdir)
        assert now in (old, new), f"kill {k}: a dataset that is neither the old nor the new one"
        seen.add("new" if now == new else "old")
        if now == new:
            prepare(load_config(old_cfg))
    # The moments above are fractions of one timed run; beside a busy core (xdist's other worker) a later
    # run can be slower and every kill land before encoding. So one more kill, at the moment the staging
    # directory has appeared, whatever the machine's speed.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not any(p.name.startswith(".data.") for p in workdir.iterdir()):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    mid_build += any(p.name.startswith(".data.") for p in workdir.iterdir())
    now = snapshot(workdir)
    assert now in (old, new), "kill at staging: a dataset that is neither the old nor the new one"
    seen.add("new" if now == new else "old")
    assert "old" in seen and mid_build >= 1
    prepare(load_config(new_cfg))  # a later run completes and cleans up what the kills left
    assert snapshot(workdir) == new
    leftovers = [p.name for p in workdir.iterdir() if p.name.startswith((".data", "data."))]
    assert leftovers == [os.readlink(workdir / "data")]


def disk_full_script(old_cfg: Path, new_cfg: Path, workdir: Path) -> str:
    """Prepare the old data, then the new one; on the error, check from inside (a tmpfs lives only
    as long as its namespace) that the old data are still what a reader sees."""
    return f"""
import sys
from pathlib import Path
from nmt.config import load_config
from nmt.data.prepare import prepare
from nmt.errors import NmtError
from tests.e2e.test_prepare_scale import snapshot
prepare(load_config({str(old_cfg)!r}))
before = snapshot(Path({str(workdir)!r}))
try:
    prepare(load_config({str(new_cfg)!r}))
except NmtError as exc:
    print("ERROR:", exc.message)
    print("INTACT:", snapshot(Path({str(workdir)!r})) == before)
    print("LEFT:", sorted(p.name for p in Path({str(workdir)!r}).iterdir() if p.name.startswith(".data")))
    sys.exit(3)
"""


@pytest.mark.parametrize("limit", ["tmpfs", "file_size"])
def test_full_disk_ends_with_a_clear_error_and_the_previous_data_intact(tmp_path: Path, limit: str) -> None:
    """The experiment dir on a 1 MB tmpfs (in a user+mount namespace: no root needed; where the
    kernel forbids those, the file-size limit below stands in), or a 256 KB file-size limit
    (RLIMIT_FSIZE): the old, small dataset fits; the new one does not."""
    workdir = tmp_path / "exp"
    old_cfg = config(tmp_path, *corpus(tmp_path, "old", 500, seed=1), workdir)
    new_cfg = config(tmp_path, *corpus(tmp_path, "new", 200_000, seed=2), workdir)
    script = disk_full_script(old_cfg, new_cfg, workdir)
    workdir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    mount = f"mount -t tmpfs -o size=1m tmpfs {workdir}"
    probe = ["unshare", "-rm", "sh", "-c", f"{mount} && true"]
    tmpfs = limit == "tmpfs" and shutil.which("unshare") is not None
    tmpfs = tmpfs and subprocess.run(probe, capture_output=True).returncode == 0
    if tmpfs:
        cmd = ["unshare", "-rm", "sh", "-c", f'{mount} && exec "$0" -c "$1"', sys.executable, script]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    else:
        import resource

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (256_000, 256_000))

        cmd = [sys.executable, "-c", script]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, preexec_fn=limit)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    message = proc.stdout.split("ERROR:", 1)[1].split("\n")[0]
    assert ("No space left on device" if tmpfs else "File too large") in message, message
    assert "the previous prepared data are untouched" in message
    assert "INTACT: True" in proc.stdout
    assert "LEFT: []" in proc.stdout  # the staging directory was removed
