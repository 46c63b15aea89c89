"""Training curves: nmt.plots.training_curves from metrics.jsonl records, and run_log.draw_curves during training."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from nmt import plots
from nmt.experiment import Experiment
from nmt.train import run_log

PNG = b"\x89PNG\r\n\x1a\n"


def _train(step: int, loss: float, *, lr: float = 1e-3, tok_s: float = 1000.0) -> dict[str, Any]:
    return {"event": "train", "step": step, "epoch": 1, "loss": loss, "lr": lr, "tgt_tokens_per_s": tok_s}


def _valid(step: int, loss: float, bleu: float) -> dict[str, Any]:
    return {"event": "valid", "step": step, "epoch": 1, "loss": loss, "bleu": bleu, "best": False}


def _records(steps: int = 200) -> list[dict[str, Any]]:
    out = [_train(s, 5.0 / (1 + s / 50), lr=1e-3 * min(1.0, s / 50), tok_s=900.0 + s) for s in range(10, steps + 1, 10)]
    out += [_valid(s, 4.0 / (1 + s / 50), bleu=s / 10) for s in range(50, steps + 1, 50)]
    return out


def _read_png(path: Path) -> Any:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG
    return matplotlib.image.imread(path)


def _panels(records: list[dict[str, Any]]) -> dict[str, Any]:
    fig = plots._curves_figure(records, title="t")
    return dict(zip(["loss", "bleu", "lr", "speed"], fig.axes, strict=True))


def _xy(line: Any) -> tuple[list[float], list[float]]:
    return [float(x) for x in line.get_xdata()], [float(y) for y in line.get_ydata()]


def _texts(ax: Any) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_curves_png_is_written_readable_and_not_blank(tmp_path: Path) -> None:
    path = tmp_path / "exp" / "curves.png"
    plots.training_curves(path, _records())
    pixels = _read_png(path)
    assert pixels.shape[0] >= 500 and pixels.shape[1] >= 800 and pixels.var() > 0
    assert len(path.read_bytes()) < 300 * 1024
    assert [p.name for p in path.parent.iterdir()] == ["curves.png"]  # no temp file left behind


def test_panels_draw_the_records_against_steps() -> None:
    ax = _panels(_records(100))
    train, valid = ax["loss"].lines
    assert (train.get_label(), valid.get_label()) == ("train", "valid")
    assert _xy(train) == ([10.0 * i for i in range(1, 11)], [5.0 / (1 + s / 50) for s in range(10, 101, 10)])
    assert _xy(valid) == ([50.0, 100.0], [2.0, 4.0 / 3.0])
    assert _xy(ax["bleu"].lines[0]) == ([50.0, 100.0], [5.0, 10.0])
    assert _xy(ax["lr"].lines[0])[1][-1] == 1e-3 and _xy(ax["speed"].lines[0])[1][0] == 910.0
    assert ax["loss"].get_legend() is not None
    assert ax["lr"].get_xlabel() == ax["speed"].get_xlabel() == "step"
    assert all(a.get_title() and a.get_ylabel() for a in ax.values()) and not any(_texts(a) for a in ax.values())


def test_no_validation_yet_and_a_single_point_still_draw(tmp_path: Path) -> None:
    records = [_train(100, 3.5)]
    ax = _panels(records)
    assert [_xy(line) for line in ax["loss"].lines] == [([100.0], [3.5])]
    assert ax["loss"].lines[0].get_marker() == "o"  # one point with no line still shows
    assert not ax["bleu"].lines and _texts(ax["bleu"]) == ["no validation yet"]
    plots.training_curves(tmp_path / "one.png", records)
    assert _read_png(tmp_path / "one.png").var() > 0
    plots.training_curves(tmp_path / "none.png", [])  # before the first log line
    assert _read_png(tmp_path / "none.png").var() > 0


def test_resumed_runs_keep_the_last_record_per_step_and_non_finite_points_are_skipped(tmp_path: Path) -> None:
    records = [
        _train(10, 4.0),
        _train(20, 3.0),
        _train(30, 2.0),  # written before the interruption; the resume from step 20 logs 30 again
        _valid(30, 2.5, 1.0),
        _train(30, 2.2),
        _valid(30, 2.6, 2.0),
        _train(40, math.nan),
        _train(50, math.inf),
        _train(60, 1.5),
        {"event": "train", "step": None, "loss": 9.0},  # malformed: no usable step
        {"event": "train", "step": 70},  # no loss at all
    ]
    ax = _panels(records)
    assert _xy(ax["loss"].lines[0]) == ([10.0, 20.0, 30.0, 60.0], [4.0, 3.0, 2.2, 1.5])
    assert _xy(ax["loss"].lines[1]) == ([30.0], [2.6])
    assert _xy(ax["bleu"].lines[0]) == ([30.0], [2.0])
    plots.training_curves(tmp_path / "c.png", records)
    assert _read_png(tmp_path / "c.png").var() > 0


@pytest.fixture
def exp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Experiment:
    monkeypatch.setattr(run_log, "_CURVES_WARNED", set())  # each test starts as a fresh process
    exp = Experiment(tmp_path / "exp")
    exp.root.mkdir()
    lines = [json.dumps(r) for r in _records(100) + [_train(110, math.nan)]]  # NaN is written as `NaN`
    exp.metrics_path.write_text("\n".join(lines) + '\n{"event": "train", "st\n', encoding="utf-8")  # cut short
    return exp


def test_draw_curves_reads_metrics_jsonl_and_writes_curves_png(exp: Experiment, capsys) -> None:
    assert exp.curves_path == exp.root / "curves.png"
    run_log.draw_curves(exp, is_main=True)
    assert _read_png(exp.curves_path).var() > 0
    assert capsys.readouterr().err == ""


def test_only_the_main_process_draws(exp: Experiment, capsys) -> None:
    run_log.draw_curves(exp, is_main=False)
    assert not exp.curves_path.exists() and capsys.readouterr().err == ""


def test_without_matplotlib_draw_curves_warns_once_and_writes_nothing(
    exp: Experiment, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)  # `import matplotlib...` now raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    run_log.draw_curves(exp, is_main=True)
    run_log.draw_curves(exp, is_main=True)
    err = capsys.readouterr().err
    assert err.count("warning:") == 1, err
    assert "matplotlib is not installed" in err and "curves.png" in err and "pip install 'nmt[plot]'" in err
    assert not exp.curves_path.exists()


def test_a_drawing_error_warns_once_and_does_not_stop_training(
    exp: Experiment, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(path: Path, records: Any, **kwargs: Any) -> None:
        raise OSError("disk [full]")

    monkeypatch.setattr(plots, "training_curves", broken)
    run_log.draw_curves(exp, is_main=True)
    run_log.draw_curves(exp, is_main=True)
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "OSError: disk [full]" in err, err
    assert not exp.curves_path.exists()
