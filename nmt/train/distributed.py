"""DistributedDataParallel through torchrun's environment; a no-op form for one process.

Every method works in both forms, so the training loop never asks whether it runs
distributed: in one process the reductions return their input with no device work.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

# For tests only: "RANK:SECONDS" adds SECONDS to that rank's training clock, so that ranks
# disagree about `train.max_minutes` (tests/e2e/test_ddp_stop.py).
CLOCK_SKEW_ENV = "NMT_TEST_CLOCK_SKEW"

T = TypeVar("T")


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """This rank's device: cuda:LOCAL_RANK under DDP on GPUs, else `device`."""
        return torch.device("cuda", self.local_rank) if self.enabled and device.type == "cuda" else device

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def share(self, items: list[T]) -> list[T]:
        """This rank's share of `items`: every world_size-th from index `rank` (all of them in one process).

        Over all ranks the shares hold every item exactly once; a rank may get none.
        """
        return items[self.rank :: self.world_size]

    def gather_object(self, obj: T) -> list[T] | None:
        """Every rank's `obj` in rank order on rank 0, None on the others; `[obj]` in one process.

        Pickled through the process group: for small host objects (validation hypotheses).
        """
        if not self.enabled:
            return [obj]
        out: list[T] | None = [None] * self.world_size if self.is_main else None  # type: ignore[list-item]
        dist.gather_object(obj, out, dst=0)
        return out

    def broadcast_object(self, obj: T) -> T:
        """Rank 0's `obj` on every rank (the others' `obj` is ignored); `obj` itself in one process."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def agree_max(self, code: int, device: torch.device) -> int:
        """The largest `code` over all ranks (a stop decision every rank then takes together).

        Under DDP: one 1-element all-reduce and its host sync. In one process: `code` itself,
        with no device work.
        """
        if not self.enabled:
            return code
        tensor = torch.tensor([code], dtype=torch.int32, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return int(tensor.item())  # host sync: once per step, DDP only

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        if not self.enabled:
            return model
        ids = [device.index] if device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def no_sync(self, model: torch.nn.Module, *, last: bool) -> contextlib.AbstractContextManager:
        """Skip DDP's gradient all-reduce on every accumulated batch but the `last` of a step."""
        if not self.enabled or last:
            return contextlib.nullcontext()
        return model.no_sync()  # type: ignore[operator]

    def clock_skew_s(self) -> float:
        """Seconds added to this rank's training clock; 0 unless a test sets CLOCK_SKEW_ENV."""
        rank, _, seconds = os.environ.get(CLOCK_SKEW_ENV, "").partition(":")
        return float(seconds) if seconds and int(rank) == self.rank else 0.0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device_type: str) -> Dist:
    """Join the process group torchrun set up (nccl on GPU, gloo on CPU), or run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Dist(rank=rank, world_size=world, local_rank=local_rank)
