"""`nmt export` through the real CLI, then `nmt translate DIR` and `nmt evaluate DIR` on the export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import TinyCheckpoint, run_nmt

pytestmark = pytest.mark.slow  # CTranslate2 exports through CLI subprocesses: `make test-fast` skips them

FAST = ["--beam", "2", "--max-len-a", "0", "--max-len-b", "4"]


def test_export_translate_evaluate(tiny_checkpoint: TinyCheckpoint, tmp_path: Path) -> None:
    out = tmp_path / "tiny-int8"
    result = run_nmt("export", str(tiny_checkpoint.path), "-o", str(out), "--quantization", "int8")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "nmt.json").read_text())
    assert manifest["quantization"] == "int8" and (out / "model.bin").is_file() and (out / "spm.model").is_file()

    # the directory stands alone, like a checkpoint: translate it from elsewhere
    moved = tmp_path / "elsewhere" / "model"
    moved.parent.mkdir()
    out.rename(moved)
    result = run_nmt("translate", "model", *FAST, "--nbest", "2", cwd=moved.parent, input="alpha bravo\n\ncharlie\n")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split("\n")) == 3 * 2 + 1 and result.stdout.split("\n")[2:4] == ["", ""]

    src, ref = tmp_path / "test.src", tmp_path / "test.ref"
    src.write_text("alpha bravo\ncharlie\n")
    ref.write_text("BRAVO ALPHA\nCHARLIE\n")
    result = run_nmt("evaluate", str(moved), "--src", str(src), "--ref", str(ref), *FAST, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["lines"] == 2 and set(report["scores"]) == {"bleu", "chrf", "chrf++", "ter"}
    assert len(Path(report["hyp"]).read_text().splitlines()) == 2


def test_export_errors(tiny_checkpoint: TinyCheckpoint, tmp_path: Path) -> None:
    out = tmp_path / "out"
    bad = run_nmt("export", str(tiny_checkpoint.path), "-o", str(out), "--quantization", "int7")
    assert bad.returncode == 2 and "did you mean int8" in bad.stderr and not out.exists()
    assert run_nmt("export", str(tiny_checkpoint.path), "-o", str(out)).returncode == 0
    again = run_nmt("export", str(tiny_checkpoint.path), "-o", str(out))
    assert again.returncode == 2 and "--force" in again.stderr
    assert run_nmt("export", str(tiny_checkpoint.path), "-o", str(out), "--force").returncode == 0
    gnmt = run_nmt("translate", str(out), "--length-penalty", "gnmt", input="alpha\n")
    assert gnmt.returncode == 2 and "gnmt" in gnmt.stderr and "Traceback" not in gnmt.stderr


def test_without_ctranslate2_commands_say_how_to_install_it(tiny_checkpoint: TinyCheckpoint, tmp_path: Path) -> None:
    """The extra is installed here, so hide it from the process (an import of it then fails)."""
    import subprocess
    import sys

    out = tmp_path / "ct2"
    assert run_nmt("export", str(tiny_checkpoint.path), "-o", str(out)).returncode == 0
    hide = "import sys; sys.modules['ctranslate2'] = None; from nmt.cli import main; sys.argv[0] = 'nmt'; main()"
    for args in (["export", str(tiny_checkpoint.path), "-o", str(tmp_path / "x")], ["translate", str(out)]):
        done = subprocess.run([sys.executable, "-c", hide, *args], input="alpha\n", capture_output=True, text=True)
        assert done.returncode == 2, done.stderr
        assert "nmt[ct2]" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x").exists()
