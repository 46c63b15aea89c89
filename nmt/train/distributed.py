"""DistributedDataParallel through torchrun's environment; a no-op form for one process.

Every method works in both forms, so the training loop never asks whether it runs
distributed: in one process the reductions return their input with no device work.
Across nodes only rank 0's machine needs the experiment dir (`from_main`); every node
needs the same prepared data (`check_same_data`) and the same config but for its paths
(`check_same_config`). No collective waits longer than `collective_timeout()`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from nmt.config import ExperimentConfig, diff_configs
from nmt.data.prepared import node_fingerprint
from nmt.errors import ConfigError, DataError, NmtError

# For tests only: "RANK:SECONDS" adds SECONDS to that rank's training clock, so that ranks
# disagree about `train.max_minutes` (tests/e2e/test_ddp_stop.py).
CLOCK_SKEW_ENV = "NMT_TEST_CLOCK_SKEW"

# Seconds a rank waits in a collective (or for the others to join) before it fails, instead
# of gloo's 30 minutes. Long enough for rank 0 to write a big checkpoint to a slow disk while
# the others wait in the next step; an environment variable, not a config field, because it
# is a property of the cluster and must take effect before the ranks can compare configs.
TIMEOUT_ENV = "NMT_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 600

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

        Compares `nmt.data.prepared.node_fingerprint`s of each rank's manifest (None: no prepared data) in one
        all-gather, so every rank raises the same error instead of one waiting in a collective.
        """
        if not self.enabled:
            return
        mine = DataOnRank(node_fingerprint(manifest) if manifest is not None else None, socket.gethostname(), data_dir)
        ranks = self.all_gather_object(mine)
        differing = [f"rank {rank} has {r}" for rank, r in enumerate(ranks) if r.fingerprint != ranks[0].fingerprint]
        if differing:
            self.close()  # every rank leaves the group before exiting (else gloo may abort at exit)
            raise DataError(
                f"the ranks' prepared data differ: {'; '.join(differing)}; rank 0 has {ranks[0]}",
                hint="prepare the same data on every node, with the same config and inputs (`nmt prepare CONFIG`), "
                f"or copy {ranks[0].data_dir} from rank 0's node ({ranks[0].host})",
            )

    def check_same_config(self, cfg: ExperimentConfig) -> None:
        """ConfigError on every rank when the ranks' configs differ in anything but paths; no-op in one process.

        Every setting must match, or the ranks hang in, or crash out of, collectives they
        reach at different steps (max_steps, valid_every, log_every), diverge silently (lr,
        clip_norm, label_smoothing) or shuffle each epoch differently (seed). Paths are
        node-local (`shared_settings`). One all-gather, so no rank waits alone.
        """
        if not self.enabled:
            return
        ranks = self.all_gather_object((shared_settings(cfg), socket.gethostname()))
        settings, hosts = [r[0] for r in ranks], [r[1] for r in ranks]
        keys = sorted({key for other in settings[1:] for key in diff_configs(settings[0], other)})
        if keys:
            self.close()  # every rank leaves the group before exiting (else gloo may abort at exit)
            raise ConfigError(
                f"the ranks' configs differ in {len(keys)} setting{'s' if len(keys) > 1 else ''}: "
                + "; ".join(f"{key}: {_values_by_rank(key, settings, hosts)}" for key in keys),
                hint="start every node with the same config and --set options; only paths (workdir, "
                "data.splits) may differ between nodes",
            )

    def epoch_share(self, batches: list[T], *, lengths: np.ndarray, batch_tokens: int) -> list[T]:
        """This rank's batches of an epoch: every world_size-th from index `rank`, as many on every rank.

        The last `len(batches) % world_size` batches are left out. ConfigError (on every rank:
        they all cut the same batches) when there are fewer batches than ranks, as no rank
        could then take a step.

        Args:
            lengths: (N,) padded length of each training example, for the hint.
        """
        per_rank = len(batches) // self.world_size
        if per_rank == 0:
            self.close()
            # a budget of total / world_size tokens cuts at least world_size batches: each holds at most that many
            total, longest = int(lengths.sum()), int(lengths.max(initial=0))
            budget = total // self.world_size
            raise ConfigError(
                f"an epoch of the training data makes {len(batches)} batch{'es' if len(batches) != 1 else ''} "
                f"(train.batch_tokens={batch_tokens:,}) for {self.world_size} ranks: a rank without a batch "
                "cannot take a step",
                hint=f"lower train.batch_tokens to {budget:,} or less (the epoch holds {total:,} tokens), "
                "or train on fewer processes"
                if budget >= longest
                else f"the training data ({len(lengths):,} examples) are too few for {self.world_size} ranks: "
                "train on fewer processes",
            )
        return batches[self.rank :: self.world_size][:per_rank]

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


def shared_settings(cfg: Any) -> Any:
    """The config as plain data without its paths: what every rank must have alike.

    Paths (the fields marked `PATH` in the schema: `workdir` and each split's files) name
    places on a node's own disk, and nodes may keep their experiment dir and corpus
    anywhere: only rank 0's experiment dir is used, and the prepared data are compared by
    `check_same_data`. The split names stay. Everything else is compared, `name` included
    (a different name means another config file).
    """
    if dataclasses.is_dataclass(cfg):
        fields = dataclasses.fields(cfg)
        return {f.name: shared_settings(getattr(cfg, f.name)) for f in fields if not f.metadata.get("path")}
    if isinstance(cfg, dict):
        return {k: shared_settings(v) for k, v in cfg.items()}
    if isinstance(cfg, tuple | list):
        return [shared_settings(v) for v in cfg]
    return cfg


def _values_by_rank(key: str, settings: list[Any], hosts: list[str]) -> str:
    """'0.01 on rank 0 (hostA), 0.02 on ranks 1, 2 (hostB)': the value of dotted `key` on each rank."""
    groups: dict[str, list[int]] = {}
    for rank, tree in enumerate(settings):
        for part in key.split("."):
            tree = tree.get(part) if isinstance(tree, dict) else None
        groups.setdefault(repr(tree), []).append(rank)
    out = []
    for value, ranks in groups.items():
        shown = ", ".join(map(str, ranks[:4])) + (f", ... ({len(ranks)} ranks)" if len(ranks) > 4 else "")
        names = sorted({hosts[r] for r in ranks})
        on = ", ".join(names[:2]) + (", ..." if len(names) > 2 else "")
        out.append(f"{value} on rank{'s' if len(ranks) > 1 else ''} {shown} ({on})")
    return ", ".join(out)


def collective_timeout() -> timedelta:
    """How long a rank waits in a collective before failing: `NMT_DIST_TIMEOUT_S`, default 600 s."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(
            f"{TIMEOUT_ENV}={raw!r}: not a number of seconds above 0",
            hint=f"unset it for the default ({DEFAULT_TIMEOUT_S} s), or set e.g. {TIMEOUT_ENV}=1800",
        )
    return timedelta(seconds=seconds)


def init_distributed(device_type: str) -> Dist:
    """Join the process group torchrun set up (nccl on GPU, gloo on CPU), or run alone.

    Collectives fail after `collective_timeout()` instead of waiting for a rank that
    never comes.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    timeout = collective_timeout()
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", timeout=timeout)
    return Dist(rank=rank, world_size=world, local_rank=local_rank)
