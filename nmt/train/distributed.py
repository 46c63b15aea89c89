"""DistributedDataParallel through torchrun's environment; a no-op form for one process.

Every method works in both forms, so the training loop never asks whether it runs
distributed: in one process the reductions return their input with no device work.
Across nodes only rank 0's machine needs the experiment dir (`from_main`); every node
needs the same prepared data (`check_same_data`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from nmt.errors import DataError, NmtError

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

    def all_gather_object(self, obj: T) -> list[T]:
        """Every rank's `obj` in rank order, on every rank; `[obj]` in one process."""
        if not self.enabled:
            return [obj]
        out: list[T] = [None] * self.world_size  # type: ignore[list-item]
        dist.all_gather_object(out, obj)
        return out

    def from_main(self, read: Callable[[], T]) -> T:
        """`read()` run on rank 0 alone and sent to every rank; `read()` itself in one process.

        For what only rank 0's node has (the experiment dir: the checkpoint to resume). The
        result travels through `torch.save` (plain pickle cannot carry uint32 tensors, such as
        numpy's RNG state) and arrives with `torch.load(weights_only=True)`, its tensors on the
        CPU: tensors, numbers, strings, bytes, lists, dicts, as in a checkpoint. An NmtError
        raised by `read` is raised on every rank, so none waits alone in a collective.
        """
        if not self.enabled:
            return read()
        result, payload, error = None, None, None
        if self.is_main:
            try:
                result = read()
                buffer = io.BytesIO()
                torch.save(result, buffer)
                payload = buffer.getvalue()
            except NmtError as exc:
                error = exc
        payload, error = self.broadcast_object((payload, error))
        if error is not None:
            self.close()  # every rank leaves the group before exiting (else gloo may abort at exit)
            raise error
        if self.is_main:
            return result  # type: ignore[return-value]
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)

    def check_same_data(self, manifest: dict[str, Any] | None, data_dir: Path) -> None:
        """DataError on every rank when any rank's prepared data differ from rank 0's; no-op in one process.

        Compares `data_fingerprint`s of each rank's manifest (None: no prepared data) in one
        all-gather, so every rank raises the same error instead of one waiting in a collective.
        """
        if not self.enabled:
            return
        mine = DataOnRank(data_fingerprint(manifest) if manifest is not None else None, socket.gethostname(), data_dir)
        ranks = self.all_gather_object(mine)
        differing = [f"rank {rank} has {r}" for rank, r in enumerate(ranks) if r.fingerprint != ranks[0].fingerprint]
        if differing:
            self.close()  # every rank leaves the group before exiting (else gloo may abort at exit)
            raise DataError(
                f"the ranks' prepared data differ: {'; '.join(differing)}; rank 0 has {ranks[0]}",
                hint="prepare the same data on every node, with the same config and inputs (`nmt prepare CONFIG`), "
                f"or copy {ranks[0].data_dir} from rank 0's node ({ranks[0].host})",
            )

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


@dataclass(frozen=True)
class DataOnRank:
    """What a rank says about its prepared data, for `Dist.check_same_data`."""

    fingerprint: str | None  # None: no prepared data
    host: str
    data_dir: Path

    def __str__(self) -> str:
        what = f"fingerprint {self.fingerprint[:12]}" if self.fingerprint else "no prepared data"
        return f"{what} ({self.data_dir} on {self.host})"


def data_fingerprint(manifest: dict[str, Any]) -> str:
    """sha256 of a prepared-data manifest without the input file paths (`inputs.<split>.src/.tgt`).

    Nodes may keep the corpus at different paths; everything else (input sha256s, config
    hash, vocab sizes and model hash, counts, whatever fields the manifest gains) must match.
    """
    inputs = {
        name: {k: v for k, v in spec.items() if k not in ("src", "tgt")} if isinstance(spec, dict) else spec
        for name, spec in (manifest.get("inputs") or {}).items()
    }
    blob = json.dumps({**manifest, "inputs": inputs}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


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
