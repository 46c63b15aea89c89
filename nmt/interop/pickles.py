"""Reading other toolkits' pickled checkpoints without running their code.

A fairseq checkpoint is a `torch.save` pickle that holds, besides tensors, an `argparse.Namespace`
(`args`) or an omegaconf `DictConfig` (`cfg`), and often numpy scalars. `torch.load(weights_only=True)`
refuses the omegaconf classes (and cannot even name them when omegaconf is not installed);
`weights_only=False` would run whatever a hostile file's reduce calls. `load_untrusted` loads with
`RestrictedUnpickler` instead: a global is resolved only if it is on `ALLOWED` (what torch's own
weights-only loader admits: tensor and storage rebuilders, OrderedDict, numpy scalars and dtypes;
plus `argparse.Namespace`), or stands in for an omegaconf or fairseq class (`Inert`: records its
arguments and state, runs nothing; `plain` turns omegaconf containers into dicts and lists). Any
other global (`os.system`, `builtins.eval`, `subprocess.Popen`, ...) is an `UnsafePickle` error raised
while unpickling, before anything it names could be called. fairseq and omegaconf are never imported.
"""

from __future__ import annotations

import argparse
import codecs
import collections
import pickle
import types
from pathlib import Path
from typing import Any

import torch

from nmt.errors import CheckpointError

ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("argparse", "Namespace"): argparse.Namespace,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("_codecs", "encode"): codecs.encode,  # how protocol-2 pickles carry bytes (numpy scalars); torch admits it too
}
STAND_IN_MODULES = ("omegaconf", "fairseq", "typing")  # classes recorded, never imported


def _numpy_globals() -> dict[tuple[str, str], Any]:
    import numpy as np

    out: dict[tuple[str, str], Any] = {("numpy", "dtype"): np.dtype, ("numpy", "ndarray"): np.ndarray}
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray  # type: ignore[attr-defined]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(module, "scalar")] = multiarray.scalar
        out[(module, "_reconstruct")] = multiarray._reconstruct
    for name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType"):
        if hasattr(np.dtypes, name):
            out[("numpy.dtypes", name)] = getattr(np.dtypes, name)
    return out


class UnsafePickle(pickle.UnpicklingError):
    """A pickle names a global outside the allowlist."""


class Inert:
    """A stand-in for an omegaconf or fairseq object: its class name, constructor arguments and state."""

    qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<stand-in for {self.qualname}>"


def _stand_in(module: str, name: str) -> type:
    return types.new_class(name, (Inert,), {}, lambda ns: ns.update(qualname=f"{module}.{name}"))


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` whose `find_class` admits only `ALLOWED`, torch storages and stand-ins."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = {**ALLOWED, **_numpy_globals()}
        if (module, name) in allowed:
            return allowed[module, name]
        if module == "torch" and name.endswith("Storage"):
            return getattr(torch, name)
        if module.split(".")[0] in STAND_IN_MODULES:
            return _stand_in(module, name)
        raise UnsafePickle(f"refused to load global {module}.{name}: not something a model checkpoint holds")


class _RestrictedPickleModule:
    """What `torch.load(pickle_module=...)` needs: an `Unpickler` and a `load`."""

    Unpickler = RestrictedUnpickler
    UnpicklingError = pickle.UnpicklingError

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return RestrictedUnpickler(file, **kwargs).load()


def load_untrusted(path: str | Path) -> Any:
    """A pickled checkpoint, loaded without running anything it names (see the module docstring);
    CheckpointError for a refused global or an unreadable file."""
    try:
        return torch.load(path, map_location="cpu", pickle_module=_RestrictedPickleModule, weights_only=False)
    except UnsafePickle as exc:
        raise CheckpointError(
            f"{path}: {exc}; nothing in it was run", hint="only import checkpoints from sources you trust"
        ) from None
    except (pickle.UnpicklingError, EOFError, RuntimeError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({first})", hint="the file may be truncated"
        ) from None


def plain(value: Any) -> Any:
    """omegaconf stand-ins turned into plain dicts and lists (their `_content`), recursively; a
    Namespace into a dict; anything else as it is."""
    if isinstance(value, Inert):
        state = value.state if isinstance(value.state, dict) else {}
        content = state.get("_content", value.state)
        if isinstance(content, Inert):
            return plain(content)
        if "_val" in state:  # an omegaconf value node
            return plain(state["_val"])
        return plain(content)
    if isinstance(value, argparse.Namespace):
        return {k: plain(v) for k, v in vars(value).items()}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value
