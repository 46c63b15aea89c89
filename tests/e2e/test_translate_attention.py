"""`nmt translate --attention-dir`: one heatmap PNG per line for the first N lines, output unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nmt.decode.translate import translate
from tests.conftest import TinyCheckpoint, run_nmt

pytestmark = pytest.mark.slow  # heatmaps drawn by CLI subprocesses: `make test-fast` skips them

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def input_file(tiny_checkpoint: TinyCheckpoint, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 test lines with line 2 empty."""
    lines = (tiny_checkpoint.corpus / "test.src").read_text().splitlines()[:12]
    lines[1] = ""
    path = tmp_path_factory.mktemp("attention") / "in.txt"
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def _translate(ckpt: Path, src: Path, out: Path, *args: str) -> None:
    result = run_nmt("translate", str(ckpt), "-i", str(src), "-o", str(out), "--max-len-b", "8", *args)
    assert result.returncode == 0, result.stderr


def test_heatmaps_for_the_first_lines_and_unchanged_output(
    tiny_checkpoint: TinyCheckpoint, input_file: Path, tmp_path: Path
) -> None:
    plain, with_maps, three = tmp_path / "plain.txt", tmp_path / "maps.txt", tmp_path / "three.txt"
    _translate(tiny_checkpoint.path, input_file, plain)
    _translate(tiny_checkpoint.path, input_file, with_maps, "--attention-dir", str(tmp_path / "maps"))
    assert with_maps.read_bytes() == plain.read_bytes() and len(plain.read_text().splitlines()) == 12
    # default: the first 10 lines, the empty line 2 skipped
    expected = [f"line_{i:06d}.png" for i in (1, *range(3, 11))]
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == expected
    import matplotlib.image

    for path in (tmp_path / "maps").iterdir():
        data = path.read_bytes()
        assert data[:8] == PNG and len(data) < 200 * 1024
        assert matplotlib.image.imread(path).ndim == 3
    # --attention-lines N, in-process (the same entry point the CLI calls)
    translate(
        tiny_checkpoint.path,
        input=input_file,
        output=three,
        overrides=["decode.max_len_b=8"],
        attention_dir=tmp_path / "three",
        attention_lines=3,
    )
    assert sorted(p.name for p in (tmp_path / "three").iterdir()) == ["line_000001.png", "line_000003.png"]
    assert three.read_bytes() == plain.read_bytes()


def test_attention_errors_come_before_translating(
    tiny_checkpoint: TinyCheckpoint, input_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.txt"
    lonely = run_nmt("translate", str(tiny_checkpoint.path), "-i", str(input_file), "--attention-lines", "3")
    assert lonely.returncode == 2 and "--attention-dir" in lonely.stderr and "Traceback" not in lonely.stderr

    hide = tmp_path / "hide" / "matplotlib"
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    args = ["translate", str(tiny_checkpoint.path), "-i", str(input_file), "-o", str(out), "--attention-dir", "maps"]
    result = run_nmt(*args, cwd=tmp_path, env={"PYTHONPATH": str(hide.parent)})
    assert result.returncode == 2 and "pip install 'nmt[plot]'" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() and not (tmp_path / "maps").exists()


def test_a_model_without_attention_is_a_clear_error(
    tiny_checkpoint: TinyCheckpoint, input_file: Path, tmp_path: Path
) -> None:
    pytest.importorskip("nmt.model.recurrent")
    from nmt.config import config_from_dict, config_to_dict
    from nmt.data.vocab import Vocab
    from nmt.model import build_model

    ckpt = torch.load(tiny_checkpoint.path, weights_only=True)
    raw = ckpt["config"]
    raw["model"].update(arch="rnn", attention="none", input_feeding=None)
    cfg = config_from_dict(raw, where="test")
    vocab = Vocab(ckpt["vocab"]["src"], ckpt["vocab"]["tgt"])
    model = build_model(cfg.model, src_vocab_size=vocab.src_size, tgt_vocab_size=vocab.tgt_size)
    ckpt.update(config=config_to_dict(cfg), model=model.state_dict())  # type: ignore[attr-defined]
    path = tmp_path / "rnn.pt"
    torch.save(ckpt, path)
    out = tmp_path / "out.txt"
    result = run_nmt("translate", str(path), "-i", str(input_file), "-o", str(out), "--attention-dir", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "this model has no attention" in " ".join(result.stderr.split()) and not out.exists()
    _translate(path, input_file, out)  # the same model translates fine without --attention-dir
