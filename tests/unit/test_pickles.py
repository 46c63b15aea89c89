"""Restricted unpickling of foreign checkpoints (nmt.interop.pickles): what a fairseq checkpoint holds loads,
a pickle whose reduce would run code is refused before it runs."""

from __future__ import annotations

import argparse
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from nmt.errors import CheckpointError
from nmt.interop.pickles import load_untrusted, plain


class Boom:
    def __reduce__(self):  # noqa: ANN204
        return (os.system, ("touch pwned",))


def test_a_reduce_that_would_run_code_is_refused_and_nothing_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "args": Boom()}, path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=r"refused to load global posix\.system"):
        load_untrusted(path)
    assert not (tmp_path / "pwned").exists()
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(Boom()))  # a plain pickle, not a torch zip: torch.load's legacy path
    with pytest.raises(CheckpointError, match="refused"):
        load_untrusted(raw)
    assert not (tmp_path / "pwned").exists()


def test_what_a_fairseq_checkpoint_holds_loads(tmp_path: Path) -> None:
    """Tensors, an argparse.Namespace, numpy scalars and omegaconf-like objects (stand-ins: a class from a
    module that is not installed here) load; `plain` turns the containers into dicts."""
    import sys
    import types

    fake = types.ModuleType("omegaconf.dictconfig")

    class DictConfig:  # pickled by reference to omegaconf.dictconfig.DictConfig, as omegaconf's own
        def __init__(self, content: dict) -> None:
            self._content = content

        def __getstate__(self) -> dict:
            return {"_content": self._content, "_metadata": None, "_parent": None}

    DictConfig.__module__, DictConfig.__qualname__ = "omegaconf.dictconfig", "DictConfig"
    fake.DictConfig = DictConfig
    sys.modules["omegaconf"] = types.ModuleType("omegaconf")
    sys.modules["omegaconf.dictconfig"] = fake
    try:
        path = tmp_path / "fairseq.pt"
        torch.save(
            {
                "args": argparse.Namespace(arch="transformer", encoder_layers=1),
                "cfg": DictConfig({"model": DictConfig({"arch": "transformer", "dropout": 0.1})}),
                "model": {"encoder.embed_tokens.weight": torch.arange(6.0).view(3, 2)},
                "extra_state": {"val_loss": np.float64(3.5), "epoch": np.int64(2)},
            },
            path,
        )
    finally:
        del sys.modules["omegaconf"], sys.modules["omegaconf.dictconfig"]
    ckpt = load_untrusted(path)
    assert torch.equal(ckpt["model"]["encoder.embed_tokens.weight"], torch.arange(6.0).view(3, 2))
    assert vars(ckpt["args"]) == {"arch": "transformer", "encoder_layers": 1}
    assert plain(ckpt["cfg"]) == {"model": {"arch": "transformer", "dropout": 0.1}}
    assert float(ckpt["extra_state"]["val_loss"]) == 3.5


def test_a_truncated_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    buf = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(100)}}, buf)
    (tmp_path / "cut.pt").write_bytes(buf.getvalue()[:200])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_untrusted(tmp_path / "cut.pt")
