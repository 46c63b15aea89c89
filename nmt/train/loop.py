"""`nmt train`: the one training loop, readable top to bottom.

Order of operations per optimizer step: forward under autocast, scaled backward for each
of `accum_steps` batches (loss normalised by the step's total target tokens across all
ranks), unscale, clip, scaler step (skipped on non-finite gradients), lr update, then
the log / validate / save / stop checks. Loss and token counters stay on the device and
are read only at log intervals.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from nmt.checkpoint import build_checkpoint, read_checkpoint, rng_state, save_checkpoint, set_rng_state
from nmt.config import DecodeConfig, ExperimentConfig
from nmt.console import info, progress, table, warn
from nmt.data.batching import Batch, check_budget, collate, make_batches, padded_lengths
from nmt.data.binarize import TokenDataset
from nmt.data.prepare import load_manifest, load_vocab, relevant_config_hash
from nmt.data.vocab import Vocab
from nmt.decode.search import translate_ids
from nmt.device import resolve_device
from nmt.errors import DataError, NmtError, TrainingStopped
from nmt.experiment import Experiment
from nmt.metrics import bleu
from nmt.model import build_model
from nmt.tokens import EOS_ID, PAD_ID
from nmt.train.checkpoints import check_resumable, link_checkpoint, prune_numbered
from nmt.train.distributed import Dist, init_distributed
from nmt.train.loss import label_smoothed_nll
from nmt.train.optim import build_optimizer, lr_at, set_lr
from nmt.train.precision import Precision, resolve_precision
from nmt.train.signals import StopFlag


@dataclass
class TrainState:
    """Everything besides weights/optimizer that a resume needs (saved in train_state)."""

    step: int = 0  # optimizer steps done
    epoch: int = 1  # current epoch (1-based)
    groups_done: int = 0  # optimizer steps done within the current epoch
    elapsed_s: float = 0.0  # training wall time so far, over all resumes
    best: float | None = None  # best validation metric (BLEU or loss)
    best_step: int = 0
    bad_valids: int = 0  # validations since the last improvement
    last_valid_step: int = 0
    nonfinite_steps: int = 0  # optimizer steps skipped for non-finite gradients


@dataclass
class TrainResult:
    state: TrainState
    stopped_by: str  # max_steps | max_epochs | max_minutes | patience | signal
    exit_code: int = 0
    last_valid: dict[str, Any] = field(default_factory=dict)
    params: int = 0


def train(cfg: ExperimentConfig, *, restart: bool = False, final_validation: bool = True) -> TrainResult:
    """Train (or resume) the experiment described by `cfg`.

    `final_validation=False` skips the validation + checkpoint after the last step (benchmarks).
    """
    exp = Experiment.from_config(cfg)
    device = resolve_device(cfg.train.device)
    dist = init_distributed(device.type)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    precision = Precision(resolve_precision(cfg.train.precision, device), device)
    vocab, train_ds, valid_ds = load_datasets(cfg, exp)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, src_vocab_size=vocab.src_size, tgt_vocab_size=vocab.tgt_size).to(device)
    check_lengths(cfg, train_ds, valid_ds)
    optimizer = build_optimizer(list(model.parameters()), cfg.train, device=device)
    state = TrainState()
    if exp.last_checkpoint.is_file() and not restart:
        state = resume(exp, cfg, model, optimizer, precision)
        info(f"resuming from {exp.last_checkpoint} at step {state.step:,} (epoch {state.epoch}); --restart starts over")
    elif dist.is_main:
        exp.write_config(cfg)
    ddp_model = dist.wrap(model, device)
    lengths = padded_lengths(train_ds)
    n_params = sum(p.numel() for p in model.parameters())
    if dist.is_main:
        info(
            f"model: {n_params:,} parameters; device {device}, precision {precision.name}, "
            f"{dist.world_size} process(es)"
        )
    acc = torch.zeros(3, device=device)  # summed loss, summed nll, consecutive non-finite steps
    nonfinite = torch.zeros((), device=device)
    acc_tokens, t_log, t_start, elapsed0 = 0, time.monotonic(), time.monotonic(), state.elapsed_s
    result = TrainResult(state, "max_steps", params=n_params)
    with StopFlag() as stop:
        while result.stopped_by == "max_steps" and state.step < cfg.train.max_steps:
            batches = make_batches(
                lengths,
                batch_tokens=cfg.train.batch_tokens,
                max_sentences=cfg.train.max_sentences,
                seed=cfg.train.seed,
                epoch=state.epoch,
            )
            per_rank = len(batches) // dist.world_size
            batches = batches[dist.rank :: dist.world_size][:per_rank]  # each rank its own, equally many
            groups = [batches[i : i + cfg.train.accum_steps] for i in range(0, per_rank, cfg.train.accum_steps)]
            bar = progress(total=len(groups), desc=f"epoch {state.epoch}", unit="step", force=None)
            bar.update(state.groups_done)
            for group in groups[state.groups_done :]:
                step_batches = [collate(train_ds, idx) for idx in group]
                tokens = sum(b.n_tgt_tokens for b in step_batches)
                # all ranks' target tokens, kept on the device: normalising by it needs no host sync
                total_tokens = dist.all_reduce_sum(torch.tensor(float(tokens), device=device))
                ddp_model.train()
                for i, batch in enumerate(step_batches):
                    batch = batch.to(device)
                    sync = nullcontext() if not dist.enabled or i == len(step_batches) - 1 else ddp_model.no_sync()
                    with sync:
                        with precision.autocast():
                            logits = ddp_model(batch.src_ids, batch.src_pad, batch.tgt_in)
                        loss, nll = label_smoothed_nll(
                            logits, batch.tgt_out, smoothing=cfg.train.label_smoothing, pad_id=PAD_ID
                        )
                        precision.scaler.scale(loss * (dist.world_size / total_tokens)).backward()
                    acc[0] += loss.detach()
                    acc[1] += nll.detach()
                acc_tokens += tokens
                set_lr(optimizer, lr_at(state.step + 1, cfg.train, d_model=cfg.model.d_model or 0))
                precision.scaler.unscale_(optimizer)
                gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_norm or math.inf)
                bad = ~torch.isfinite(gnorm)
                acc[2] = (acc[2] + 1) * bad  # consecutive non-finite steps, on the device
                nonfinite += bad
                precision.scaler.step(optimizer)  # skipped when gradients are not finite
                precision.update()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                state.groups_done += 1
                state.elapsed_s = elapsed0 + time.monotonic() - t_start
                bar.update(1)

                if state.step % cfg.train.log_every == 0:
                    record = log_event(acc, acc_tokens, nonfinite, state, dist, optimizer, time.monotonic() - t_log)
                    bar.set_postfix(
                        loss=f"{record['loss']:.3f}",
                        lr=f"{record['lr']:.2e}",
                        tok_s=f"{record['tgt_tokens_per_s']:,.0f}",
                    )
                    write_metrics(exp, record, dist)
                    if record["consecutive_nonfinite"] >= cfg.train.max_nonfinite:
                        raise TrainingStopped(
                            f"stopped at step {state.step}: {record['consecutive_nonfinite']} consecutive steps "
                            f"had non-finite loss or gradients",
                            hint="lower train.lr, enable train.clip_norm, or use --set train.precision=fp32",
                        )
                    acc.zero_()
                    acc_tokens, t_log = 0, time.monotonic()
                if state.step % cfg.train.valid_every == 0:
                    result.last_valid = validate_and_save(
                        cfg, exp, model, optimizer, precision, vocab, valid_ds, state, dist, device
                    )
                    if cfg.train.patience is not None and state.bad_valids >= cfg.train.patience:
                        result.stopped_by = "patience"
                elif state.step % (cfg.train.save_every or cfg.train.valid_every) == 0 and dist.is_main:
                    save_last(exp, cfg, model, optimizer, precision, vocab, state)
                if stop.requested:
                    result.stopped_by, result.exit_code = "signal", stop.exit_code
                elif cfg.train.max_minutes is not None and state.elapsed_s >= 60 * cfg.train.max_minutes:
                    result.stopped_by = "max_minutes"
                if result.stopped_by != "max_steps" or state.step >= cfg.train.max_steps:
                    break
            bar.close()
            if state.groups_done >= len(groups):  # epoch finished
                state.epoch, state.groups_done = state.epoch + 1, 0
                if cfg.train.max_epochs is not None and state.epoch > cfg.train.max_epochs:
                    result.stopped_by = "max_epochs"
        state.nonfinite_steps += int(nonfinite.item())  # host sync: once, at the end
        if result.stopped_by == "signal":
            if dist.is_main:
                save_last(exp, cfg, model, optimizer, precision, vocab, state)
        elif state.last_valid_step != state.step and final_validation:
            result.last_valid = validate_and_save(
                cfg, exp, model, optimizer, precision, vocab, valid_ds, state, dist, device
            )
    dist.close()
    return result


def load_datasets(cfg: ExperimentConfig, exp: Experiment) -> tuple[Vocab, TokenDataset, TokenDataset]:
    """The prepared vocabulary and splits, checked against the config."""
    manifest = load_manifest(exp)
    if manifest is None:
        raise DataError(
            f"{exp.data_dir}: no prepared data",
            hint=f"run `nmt prepare {exp.root / 'config.yaml'}` (or `nmt prepare CONFIG`) first",
        )
    if manifest.get("config_hash") != relevant_config_hash(cfg):
        raise DataError(
            f"{exp.data_dir} was prepared with different data/vocab settings than this config",
            hint="run `nmt prepare CONFIG` again (it rebuilds when the settings differ)",
        )
    vocab = load_vocab(exp)
    train_ds = TokenDataset(exp.data_dir, "train", vocab_size=vocab.src_size)
    valid_ds = TokenDataset(exp.data_dir, "valid", vocab_size=vocab.src_size)
    check_budget(train_ds, batch_tokens=cfg.train.batch_tokens)
    return vocab, train_ds, valid_ds


def check_lengths(cfg: ExperimentConfig, *datasets: TokenDataset) -> None:
    for ds in datasets:
        longest = int(padded_lengths(ds).max(initial=0))
        if longest > cfg.model.max_len:
            raise NmtError(
                f"split {ds.split!r} has an example of {longest} tokens (with bos/eos) but model.max_len is "
                f"{cfg.model.max_len}",
                hint="raise model.max_len, or lower data.max_len and re-run `nmt prepare`",
            )


def resume(
    exp: Experiment,
    cfg: ExperimentConfig,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    precision: Precision,
) -> TrainState:
    ckpt = read_checkpoint(exp.last_checkpoint)
    check_resumable(ckpt, cfg, exp.last_checkpoint)
    model.load_state_dict(ckpt["model"])
    ts = ckpt["train_state"]
    optimizer.load_state_dict(ts["optimizer"])
    precision.scaler.load_state_dict(ts["scaler"])
    set_rng_state(ts["rng"])
    return TrainState(**ts["loop"])


def train_state(optimizer: torch.optim.Optimizer, precision: Precision, state: TrainState) -> dict[str, Any]:
    return {
        "optimizer": optimizer.state_dict(),
        "scaler": precision.scaler.state_dict(),
        "rng": rng_state(),
        "loop": asdict(state),
    }


def save_last(
    exp: Experiment,
    cfg: ExperimentConfig,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    precision: Precision,
    vocab: Vocab,
    state: TrainState,
    *,
    path: Path | None = None,
) -> None:
    """Write a resumable checkpoint to `path` (default: checkpoints/last.pt)."""
    checkpoint = build_checkpoint(
        model_state=model.state_dict(),
        cfg=cfg,
        vocab_models=(vocab.src_model, vocab.tgt_model),
        step=state.step,
        epoch=state.epoch,
        train_state=train_state(optimizer, precision, state),
    )
    save_checkpoint(path or exp.last_checkpoint, checkpoint)


def log_event(
    acc: torch.Tensor,
    tokens: int,
    nonfinite: torch.Tensor,
    state: TrainState,
    dist: Dist,
    optimizer: torch.optim.Optimizer,
    interval_s: float,
) -> dict[str, Any]:
    """Read the device counters (host sync: once per log interval) into a metrics record."""
    totals = torch.cat([acc[:2], torch.tensor([float(tokens)], device=acc.device)])
    totals = dist.all_reduce_sum(totals).tolist()  # host sync
    n = max(totals[2], 1.0)
    return {
        "event": "train",
        "step": state.step,
        "epoch": state.epoch,
        "loss": totals[0] / n,
        "nll": totals[1] / n,
        "ppl": math.exp(min(totals[1] / n, 50.0)),
        "lr": optimizer.param_groups[0]["lr"],
        "tgt_tokens_per_s": totals[2] / max(interval_s, 1e-9),
        "elapsed_s": round(state.elapsed_s, 1),
        "consecutive_nonfinite": int(acc[2].item()),
        "nonfinite_steps": state.nonfinite_steps + int(nonfinite.item()),
    }


_TENSORBOARD: dict[str, Any] = {}


def write_metrics(exp: Experiment, record: dict[str, Any], dist: Dist) -> None:
    """Append one JSON line to metrics.jsonl; TensorBoard scalars too when tensorboard is installed."""
    if not dist.is_main:
        return
    with open(exp.metrics_path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    key = str(exp.root)
    if key not in _TENSORBOARD:
        try:
            from torch.utils.tensorboard import SummaryWriter  # optional: needs the tensorboard package

            _TENSORBOARD[key] = SummaryWriter(str(exp.root / "tensorboard"))
        except ImportError:
            _TENSORBOARD[key] = None
    writer = _TENSORBOARD[key]
    if writer is not None:
        for name, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and name != "step":
                writer.add_scalar(f"{record['event']}/{name}", value, record["step"])
        writer.flush()


@torch.inference_mode()
def evaluate_loss(
    model: torch.nn.Module, ds: TokenDataset, cfg: ExperimentConfig, device: torch.device, precision: Precision
) -> tuple[float, float]:
    """Per-token label-smoothed loss and NLL on a split (teacher forcing)."""
    model.eval()
    total = torch.zeros(2, device=device)
    tokens = 0
    for idx in make_batches(
        padded_lengths(ds), batch_tokens=cfg.train.batch_tokens, max_sentences=None, seed=0, epoch=0, shuffle=False
    ):
        batch: Batch = collate(ds, idx).to(device)
        with precision.autocast():
            logits = model(batch.src_ids, batch.src_pad, batch.tgt_in)
        loss, nll = label_smoothed_nll(logits, batch.tgt_out, smoothing=cfg.train.label_smoothing, pad_id=PAD_ID)
        total += torch.stack([loss, nll])
        tokens += batch.n_tgt_tokens
    loss_sum, nll_sum = total.tolist()  # host sync: once per validation
    return loss_sum / max(tokens, 1), nll_sum / max(tokens, 1)


def validate_and_save(
    cfg: ExperimentConfig,
    exp: Experiment,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    precision: Precision,
    vocab: Vocab,
    valid_ds: TokenDataset,
    state: TrainState,
    dist: Dist,
    device: torch.device,
) -> dict[str, Any]:
    """Validation loss and BLEU; step_N.pt, last.pt, best.pt; early-stopping bookkeeping."""
    t0 = time.monotonic()
    loss, nll = evaluate_loss(model, valid_ds, cfg, device, precision)
    src = [valid_ds[i][0].tolist() + [EOS_ID] for i in range(len(valid_ds))]
    refs = vocab.decode_tgt([valid_ds[i][1].tolist() for i in range(len(valid_ds))])
    decode_cfg: DecodeConfig = cfg.decode
    hyps = vocab.decode_tgt(translate_ids(model, src, decode_cfg, device=device))
    score = bleu(hyps, [refs])
    metric = score if cfg.train.best_metric == "bleu" else -loss
    improved = state.best is None or metric > state.best
    if improved:
        state.best, state.best_step, state.bad_valids = metric, state.step, 0
    else:
        state.bad_valids += 1
    state.last_valid_step = state.step
    record = {
        "event": "valid",
        "step": state.step,
        "epoch": state.epoch,
        "loss": loss,
        "nll": nll,
        "ppl": math.exp(min(nll, 50.0)),
        "bleu": score,
        "best": improved,
        "valid_s": time.monotonic() - t0,
        "elapsed_s": round(state.elapsed_s, 1),
    }
    write_metrics(exp, record, dist)
    if dist.is_main:
        info(
            f"step {state.step:,}: valid loss {loss:.3f}, ppl {record['ppl']:.2f}, BLEU {score:.2f}"
            + (" [green](best)[/green]" if improved else f" (best {state.best_step:,})")
        )
        path = exp.checkpoint_dir / f"step_{state.step}.pt"
        save_last(exp, cfg, model, optimizer, precision, vocab, state, path=path)
        link_checkpoint(path, exp.last_checkpoint)
        if improved:
            link_checkpoint(path, exp.best_checkpoint)
        prune_numbered(exp.checkpoint_dir, keep=cfg.train.keep_last)
    return record


def summarize(result: TrainResult) -> None:
    """The end-of-training table."""
    s, v = result.state, result.last_valid
    rows = [
        ("stopped by", result.stopped_by),
        ("steps", s.step),
        ("epochs (current)", s.epoch),
        ("training time (min)", s.elapsed_s / 60),
        ("parameters", result.params),
        ("best step", s.best_step),
        ("skipped non-finite steps", s.nonfinite_steps),
    ]
    if v:
        rows += [("last valid loss", v["loss"]), ("last valid BLEU", v["bleu"])]
    table("training summary", ["", "value"], rows)
    if result.stopped_by == "signal":
        warn("interrupted: a checkpoint was written; run the same `nmt train CONFIG` to resume")
