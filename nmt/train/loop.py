"""`nmt train`: the one training loop, readable top to bottom.

`set_up` builds everything once (or resumes): the process group, the checked prepared data,
the model, the optimizer and the run's `Saver`. Then, per optimizer step: forward under
autocast, scaled backward for each of `accum_steps` batches (loss normalised by the step's
total target tokens across all ranks), unscale, clip, scaler step (skipped on non-finite
gradients), lr update, then the log / validate / save / stop checks. Loss and token counters
stay on the device and are read only at log intervals. Every early stop (signal, time
budget, patience) is agreed by all ranks after the same step (`Dist.agree_max`), so no rank
waits alone in a collective.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape

from nmt.checkpoint import load_weights, save_checkpoint
from nmt.config import ExperimentConfig
from nmt.console import info, progress, warn
from nmt.data.batching import check_budget, collate, make_batches, padded_lengths
from nmt.data.directions import Mixture
from nmt.data.prepared import TrainingData, open_for_pretraining, open_for_training, read_manifest
from nmt.device import resolve_device
from nmt.errors import ConfigError, NmtError, TrainingStopped
from nmt.experiment import Experiment
from nmt.metrics import check_tokenizer
from nmt.model import build_model
from nmt.model.layout import Layout, checkpoint_layout
from nmt.precision import Precision, auto_note, bound_onednn_cache, emulated_bf16, resolve_precision
from nmt.tokens import PAD_ID
from nmt.train.compiled import PAD_MULTIPLE, compile_module, compiler_problem, graphs_compiled, resolve_compile
from nmt.train.distributed import Dist, init_distributed
from nmt.train.loss import LogitsWorkspace, projected_nll
from nmt.train.optim import build_optimizer, lr_at, set_lr
from nmt.train.run_log import draw_curves, write_metrics
from nmt.train.saving import Saver, average_checkpoints, numbered_checkpoints, read_init
from nmt.train.signals import StopCode, StopFlag, local_stop
from nmt.train.state import Counters, TrainResult, TrainState
from nmt.train.validate import Validation, update_best, validate


@dataclass
class Run:
    """What the loop and its validations use, built once by `set_up`."""

    cfg: ExperimentConfig
    exp: Experiment
    dist: Dist
    device: torch.device
    precision: Precision
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    data: TrainingData
    saver: Saver
    pretraining: bool = False  # `nmt pretrain`: denoising examples, validated by loss only

    def validate(self, model: torch.nn.Module) -> Validation:
        return validate(
            model, self.data.valid, self.data.vocab, self.cfg, device=self.device, precision=self.precision,
            dist=self.dist, score_bleu=not self.pretraining,
        )  # fmt: skip


def set_up(
    cfg: ExperimentConfig, *, restart: bool, new_data: bool, pretraining: bool = False
) -> tuple[Run, TrainState]:
    """Everything the loop needs, checked before any step; the state resumed from last.pt unless `restart`.
    `pretraining`: `nmt pretrain`'s run (`pretrain`), in <workdir>/pretrain on the same prepared data."""
    exp = Experiment.from_config(cfg)
    if pretraining:
        exp = exp.pretraining()
    for _, tgt_lang in [] if pretraining else cfg.data.pairs:  # validation BLEU needs its tokenizer: say so now
        check_tokenizer(tgt_lang, where="data.directions" if cfg.data.multilingual else "data.tgt_lang")
    device = resolve_device(cfg.train.device)
    dist = init_distributed(device.type)
    device = dist.device(device)  # cuda:LOCAL_RANK under DDP on GPUs
    precision = Precision(resolve_precision(cfg.train.precision, device), device)
    if device.type == "cpu" and precision.name == "bf16":
        bound_onednn_cache()
    if emulated_bf16(precision.name, device) and dist.is_main:
        warn(
            "train.precision bf16: this CPU has no native bf16 (avx512_bf16/AMX): bf16 is emulated and slower than fp32"
        )
    dist.check_same_data(read_manifest(exp.data_dir), exp.data_dir)  # before loading: a node without data fails on all
    dist.check_same_config(cfg)  # all settings but paths: else ranks hang, crash or diverge later
    data = load_datasets(cfg, exp, pretraining=pretraining)
    # fine-tuning: the checkpoint's weights (and an imported model's layout); rank 0 reads, all receive
    init = dist.from_main(lambda: read_init(cfg, data.vocab)) if cfg.train.init_from is not None else None
    layout = checkpoint_layout(init, str(cfg.train.init_from)) if init is not None else Layout()
    torch.manual_seed(cfg.train.seed)
    model = build_model(
        cfg.model, src_vocab_size=data.vocab.src_size, tgt_vocab_size=data.vocab.tgt_size, layout=layout
    )
    model.to(device)
    check_lengths(cfg, data.train, *(v.data for v in data.valid))
    optimizer = build_optimizer(list(model.parameters()), cfg.train, device=device)
    saver = Saver(exp, cfg, model, optimizer, precision, data, layout=layout.to_dict())
    state = TrainState()
    # only rank 0's node needs the experiment dir: it decides, reads and broadcasts the checkpoint
    ckpt = dist.from_main(lambda: None if restart else saver.read_resumable())
    if ckpt is not None:
        state = saver.resume(ckpt, new_data=new_data, announce=dist.is_main)
    else:
        if init is not None:  # weights only: optimizer, schedule and step start fresh
            load_weights(model, init, str(cfg.train.init_from))
            if dist.is_main:
                info(f"fine-tuning {cfg.train.init_from} (trained {int(init.get('step', 0)):,} steps before)")
        if dist.is_main:
            exp.write_config(cfg)
    return Run(cfg, exp, dist, device, precision, model, optimizer, data, saver, pretraining), state


def pretrain(cfg: ExperimentConfig, *, restart: bool = False) -> TrainResult:
    """`nmt pretrain`: the training loop on `data.monolingual`'s text as text-infilling examples
    (`nmt.data.noising`), in <workdir>/pretrain (checkpoints, resume, signals, curves as `nmt train`),
    best.pt by the validation loss on the held-out lines. Its checkpoints are what `train.init_from`
    fine-tunes (the vocabulary holds the mask and, for several languages, the language tokens)."""
    if cfg.train.init_from is not None:
        raise ConfigError(
            f"nmt pretrain starts from random weights, but train.init_from is set ({cfg.train.init_from})",
            hint="pretrain without it; give the pretrained checkpoint to `nmt train` as train.init_from",
        )
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, best_metric="loss"))
    return train(cfg, restart=restart, pretraining=True)


def train(
    cfg: ExperimentConfig,
    *,
    restart: bool = False,
    new_data: bool = False,
    final_validation: bool = True,
    pretraining: bool = False,
) -> TrainResult:
    """Train (or resume) the experiment described by `cfg`.

    `new_data`: a resume may continue on prepared data other than the checkpoint's (same
    vocabulary), starting the current epoch over. `final_validation=False` skips the
    validation + checkpoint after the last step (benchmarks). `pretraining`: see `pretrain`.
    """
    run, state = set_up(cfg, restart=restart, new_data=new_data, pretraining=pretraining)
    dist, device, precision, model, optimizer = run.dist, run.device, run.precision, run.model, run.optimizer
    exp, train_ds = run.exp, run.data.train
    ddp_model = dist.wrap(model, device)
    step_model, pad_multiple, graphs0 = ddp_model, 1, 0  # what the training step calls (compiled or not)
    if resolve_compile(cfg.train.compile, device):
        problem = compiler_problem(device)
        if problem is None:
            step_model, pad_multiple, graphs0 = compile_module(ddp_model), PAD_MULTIPLE, graphs_compiled()
        elif dist.is_main:
            warn(f"train.compile: torch.compile does not work here, training runs uncompiled ({escape(problem)})")
    lengths = padded_lengths(train_ds)
    n_params = sum(p.numel() for p in model.parameters())
    if dist.is_main:
        info(
            f"model: {n_params:,} parameters; device {device}, precision {precision.name}"
            f"{f' ({auto_note(device)})' if cfg.train.precision == 'auto' else ''}, "
            f"{'compiled' if step_model is not ddp_model else 'eager'}, {dist.world_size} process(es)"
        )

    counters = Counters.zeros(device, consecutive_nonfinite=state.consecutive_nonfinite)
    workspace = LogitsWorkspace()  # the training step's logits and their gradient, one buffer for the run
    t_log, t_start, elapsed0 = time.monotonic(), time.monotonic() - dist.clock_skew_s(), state.elapsed_s
    result = TrainResult(state, stopped_by=reached_limit(state, cfg), params=n_params)
    if cfg.train.init_from is not None and state.step == 0 and final_validation:
        result.last_valid = validate_and_save(run, state)  # the starting point: the checkpoint's own scores

    with StopFlag() as flag:
        while result.stopped_by is None:
            # the epoch's examples: all of them, or (several directions) drawn with temperature
            examples = train_ds.epoch_examples(
                seed=cfg.train.seed, epoch=state.epoch, temperature=cfg.data.sampling_temperature
            )
            batches = make_batches(
                lengths[examples],
                batch_tokens=cfg.train.batch_tokens,
                max_sentences=cfg.train.max_sentences,
                seed=cfg.train.seed,
                epoch=state.epoch,
            )
            batches = [examples[b] for b in batches]
            # each rank its own, equally many; an error when there are fewer batches than ranks
            batches = dist.epoch_share(batches, lengths=lengths, batch_tokens=cfg.train.batch_tokens)
            epoch_ds = train_ds.at_epoch(state.epoch)  # pretraining: this epoch's noise
            groups = [batches[i : i + cfg.train.accum_steps] for i in range(0, len(batches), cfg.train.accum_steps)]
            bar = progress(total=len(groups), desc=f"epoch {state.epoch}", unit="step", force=None)
            bar.update(state.groups_done)
            for group in groups[state.groups_done :]:
                step_batches = [collate(epoch_ds, idx, pad_multiple=pad_multiple) for idx in group]
                tokens = sum(b.n_tgt_tokens for b in step_batches)
                # all ranks' target tokens, kept on the device: normalising by it needs no host sync
                total_tokens = dist.all_reduce_sum(torch.tensor(float(tokens), device=device))
                ddp_model.train()
                for i, batch in enumerate(step_batches):
                    batch = batch.to(device)
                    with dist.no_sync(ddp_model, last=i == len(step_batches) - 1):
                        with precision.autocast():
                            # the decoder states of the non-pad target positions only: (N, D), projected
                            # onto the vocabulary and scored in one, in the reused logits workspace
                            states = step_model(
                                batch.src_ids, batch.src_pad, batch.tgt_in, keep=batch.tgt_keep, project=False
                            )
                            loss, nll = projected_nll(
                                states,
                                model.out_proj,
                                batch.tgt_gold,
                                smoothing=cfg.train.label_smoothing,
                                pad_id=PAD_ID,
                                workspace=workspace,
                            )
                        del states
                        precision.scaler.scale(loss * (dist.world_size / total_tokens)).backward()
                    counters.loss += loss.detach()
                    counters.nll += nll.detach()
                counters.tokens += tokens
                set_lr(optimizer, lr_at(state.step + 1, cfg.train, d_model=cfg.model.d_model))
                precision.scaler.unscale_(optimizer)
                gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_norm or math.inf)
                counters.count_step(gnorm)
                precision.scaler.step(optimizer)  # skipped when gradients are not finite
                precision.update()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                state.groups_done += 1
                state.elapsed_s = elapsed0 + time.monotonic() - t_start
                bar.update(1)

                if state.step % cfg.train.log_every == 0:
                    record = log_record(counters, state, dist, optimizer, time.monotonic() - t_log)
                    bar.set_postfix(
                        loss=f"{record['loss']:.3f}",
                        lr=f"{record['lr']:.2e}",
                        tok_s=f"{record['tgt_tokens_per_s']:,.0f}",
                    )
                    write_metrics(exp, record, is_main=dist.is_main)
                    check_finite(state, max_nonfinite=cfg.train.max_nonfinite)
                    counters.reset_interval()
                    t_log = time.monotonic()
                if state.step % cfg.train.valid_every == 0:
                    counters.sync_state(state)
                    result.last_valid = validate_and_save(run, state)
                elif state.step % (cfg.train.save_every or cfg.train.valid_every) == 0:
                    counters.sync_state(state)
                    if dist.is_main:
                        run.saver.save_numbered(state)
                stop = local_stop(
                    flag,
                    elapsed_s=state.elapsed_s,
                    max_minutes=cfg.train.max_minutes,
                    patience_reached=cfg.train.patience is not None and state.bad_valids >= cfg.train.patience,
                )
                stop = StopCode(dist.agree_max(stop, device))  # DDP: one tiny all-reduce per step
                result.stopped_by = stop.reason if stop else reached_limit(state, cfg)
                result.exit_code = stop.exit_code
                if result.stopped_by is not None:
                    break
            bar.close()
            if state.groups_done >= len(groups):  # epoch finished
                state.epoch, state.groups_done = state.epoch + 1, 0
                result.stopped_by = result.stopped_by or reached_limit(state, cfg)
        counters.sync_state(state)
        if result.stopped_by == "signal":
            if dist.is_main:
                run.saver.save_last(state)
        elif state.last_valid_step != state.step and final_validation:
            result.last_valid = validate_and_save(run, state)
        if cfg.train.average_last is not None and result.stopped_by != "signal" and final_validation:
            result.averaged = average_and_validate(run, state)
        if step_model is not ddp_model and dist.is_main:
            result.graphs_compiled = graphs_compiled() - graphs0
            info(f"torch.compile: {result.graphs_compiled} graph(s) compiled (first compile + recompiles)")
        dist.barrier()  # no rank exits (and makes torchrun stop the others) before rank 0 has saved
    dist.close()
    return result


def reached_limit(state: TrainState, cfg: ExperimentConfig) -> str | None:
    """The budget that is spent, "max_steps" or "max_epochs" (the same on every rank), else None."""
    if state.step >= cfg.train.max_steps:
        return "max_steps"
    if cfg.train.max_epochs is not None and state.epoch > cfg.train.max_epochs:
        return "max_epochs"
    return None


def check_finite(state: TrainState, *, max_nonfinite: int) -> None:
    """TrainingStopped after `max_nonfinite` consecutive non-finite steps (as of the last log read)."""
    if state.consecutive_nonfinite >= max_nonfinite:
        raise TrainingStopped(
            f"stopped at step {state.step}: {state.consecutive_nonfinite} consecutive steps "
            f"had non-finite loss or gradients",
            hint="lower train.lr, enable train.clip_norm, or use --set train.precision=fp32",
        )


def load_datasets(cfg: ExperimentConfig, exp: Experiment, *, pretraining: bool = False) -> TrainingData:
    """The prepared vocabulary, splits and references (pretraining: the monolingual text), checked against
    the config and the token budget."""
    opener = open_for_pretraining if pretraining else open_for_training
    data = opener(cfg, exp.data_dir, exp.config_path)
    check_budget(data.train, batch_tokens=cfg.train.batch_tokens)
    return data


def check_lengths(cfg: ExperimentConfig, *datasets: Mixture) -> None:
    for ds in datasets:
        longest = int(padded_lengths(ds).max(initial=0))
        if longest > cfg.model.max_len:
            raise NmtError(
                f"split {ds.split!r} has an example of {longest} tokens (with bos/eos) but model.max_len is "
                f"{cfg.model.max_len}",
                hint="raise model.max_len, or lower data.max_len and re-run `nmt prepare`",
            )


def log_record(
    counters: Counters, state: TrainState, dist: Dist, optimizer: torch.optim.Optimizer, interval_s: float
) -> dict[str, Any]:
    """Read the device counters (host sync: once per log interval) into a metrics record."""
    loss, nll, tokens = counters.read(dist, state)
    n = max(tokens, 1.0)
    return {
        "event": "train",
        "step": state.step,
        "epoch": state.epoch,
        "loss": loss / n,
        "nll": nll / n,
        "ppl": math.exp(min(nll / n, 50.0)),
        "lr": optimizer.param_groups[0]["lr"],
        "tgt_tokens_per_s": tokens / max(interval_s, 1e-9),
        "elapsed_s": round(state.elapsed_s, 1),
        "consecutive_nonfinite": state.consecutive_nonfinite,
        "nonfinite_steps": state.nonfinite_steps,
    }


def validate_and_save(run: Run, state: TrainState) -> dict[str, Any]:
    """Validate (every rank); record the metrics, and on rank 0 save the checkpoints (`Saver.save_numbered`)."""
    cfg, dist = run.cfg, run.dist
    valid = run.validate(run.model)
    each = (valid.directions or {}).items()
    improved = update_best(state, valid.metric(cfg.train.best_metric))
    record = valid.record(state, improved=improved)
    write_metrics(run.exp, record, is_main=dist.is_main)
    draw_curves(run.exp, is_main=dist.is_main)
    if dist.is_main:
        info(
            f"step {state.step:,}: valid loss {valid.loss:.3f}, ppl {valid.ppl:.2f}"
            + (f", BLEU {valid.bleu:.2f}" if valid.bleu is not None else "")
            + (
                f" (mean of {', '.join(f'{d} {v.loss if v.bleu is None else v.bleu:.2f}' for d, v in each)})"
                if valid.directions
                else ""
            )
            + (" [green](best)[/green]" if improved else f" (best {state.best_step:,})")
        )
        run.saver.save_numbered(state, improved=improved)
    return record


def average_and_validate(run: Run, state: TrainState) -> dict[str, Any]:
    """`train.average_last: N`: the element-wise mean of the last N kept step_N.pt into
    checkpoints/averaged.pt (rank 0), validated like the training checkpoints (every rank)
    and recorded in metrics.jsonl as an "averaged" record beside best.pt's score. With fewer
    than two numbered checkpoints there is nothing to average: {} and a note."""
    cfg, exp, dist = run.cfg, run.exp, run.dist
    assert cfg.train.average_last is not None

    def average() -> dict[str, Any]:
        paths = numbered_checkpoints(exp.checkpoint_dir)[-cfg.train.average_last :]  # type: ignore[operator]
        if len(paths) < 2:
            return {"paths": [str(p) for p in paths]}
        averaged = average_checkpoints(paths)
        save_checkpoint(exp.checkpoint_dir / "averaged.pt", averaged)
        return {"paths": [str(p) for p in paths], "model": averaged["model"]}

    done = dist.from_main(average)
    if "model" not in done:
        if dist.is_main:
            info(f"train.average_last: {len(done['paths'])} numbered checkpoint(s) kept, nothing to average")
        return {}
    model = build_model(cfg.model, src_vocab_size=run.data.vocab.src_size, tgt_vocab_size=run.data.vocab.tgt_size)
    model.load_state_dict(done["model"])
    model.to(run.device)
    valid = run.validate(model)
    steps = [int(Path(p).stem.removeprefix("step_")) for p in done["paths"]]
    record = {**valid.record(state, improved=False), "event": "averaged", "averaged_steps": steps}
    del record["best"]
    write_metrics(run.exp, record, is_main=dist.is_main)
    if dist.is_main:
        best = f"best.pt (step {state.best_step:,}): {cfg.train.best_metric} {state.best:.2f}" if state.best else ""
        info(
            f"averaged.pt, the mean of steps {', '.join(f'{s:,}' for s in steps)}: valid loss {valid.loss:.3f}"
            + (f", BLEU {valid.bleu:.2f}" if valid.bleu is not None else "")
            + (f"; {best}" if best else "")
        )
    return record
