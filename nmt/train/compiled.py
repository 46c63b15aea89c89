"""`train.compile`: torch.compile of the training forward (and backward) where it pays.

- auto: on for CUDA; off on CPU, where it was measured not to pay (BENCHMARKS.md: the
  compiled small model trains no faster on 2 cores and compiling takes minutes of the budget).
- true: compile on any device; false: never.

Only the training step is compiled (`torch.compile` of the module the loop calls); the
model object itself stays uncompiled, so checkpoints never carry the wrapper's `_orig_mod.`
key prefixes, and validation/decoding run eagerly (their shapes change every step).
Batches are padded to a multiple of `PAD_MULTIPLE` tokens so few shapes occur, and dynamo
marks a dimension dynamic after it has seen it change once, so recompiles stay bounded; the
number of graphs compiled is reported at the end (`graphs_compiled`).

A compiler that cannot work (no C++ compiler for inductor on CPU, no Triton on GPU) is found
before training by compiling a tiny function forward and backward; then training runs eagerly
after a one-line warning instead of failing at its first step with a traceback.
"""

from __future__ import annotations

import torch

PAD_MULTIPLE = 8  # padded lengths when compiled: a multiple of 8 (also what tensor cores want)
RECOMPILE_LIMIT = 16  # graphs per code object before dynamo falls back to eager for new shapes


def resolve_compile(setting: bool | str, device: torch.device) -> bool:
    """The effective `train.compile`: 'auto' -> True on CUDA only."""
    if setting == "auto":
        return device.type == "cuda"
    return bool(setting)


def compiler_problem(device: torch.device) -> str | None:
    """None when torch.compile works here (a tiny function compiled, run forward and backward), else
    the reason in one line."""
    try:
        import torch._dynamo

        fn = torch.compile(lambda x: (x.sin() * 2.0).sum(), dynamic=False)
        x = torch.randn(8, device=device, requires_grad=True)
        fn(x).backward()
        torch._dynamo.reset()
    except Exception as exc:  # any failure of the compiler stack: reported, training goes on eagerly
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        return " ".join(lines[:2])[:160]  # e.g. "InductorError: InvalidCxxCompiler: No working C++ compiler ..."
    return None


def compile_module(module: torch.nn.Module) -> torch.nn.Module:
    """torch.compile `module` (parameters shared: the original keeps training and saving as before)."""
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, RECOMPILE_LIMIT)
    return torch.compile(module)  # type: ignore[return-value]


def graphs_compiled() -> int:
    """Graphs dynamo has compiled in this process (first compile + recompiles)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
