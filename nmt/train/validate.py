"""Validation during training: loss, decoding + BLEU, and the best / patience bookkeeping.

BLEU is scored like `nmt evaluate CONFIG --split valid`: the validation sources are
decoded with the config's decode settings and the hypotheses are scored against the
raw reference lines (trailing whitespace removed, as sacreBLEU's CLI reads them), not
against references decoded back from token ids (which would drop what the vocabulary
cannot spell and flatter the score). An empty source gets an empty hypothesis without
running the model, as `translate` does.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from nmt.config import ExperimentConfig
from nmt.data.batching import collate, make_batches, padded_lengths
from nmt.data.binarize import TokenDataset
from nmt.data.vocab import Vocab
from nmt.decode.search import translate_ids
from nmt.metrics import bleu
from nmt.tokens import EOS_ID, PAD_ID
from nmt.train.loss import label_smoothed_nll
from nmt.train.precision import Precision
from nmt.train.state import TrainState


@dataclass(frozen=True)
class Validation:
    """The scores of one validation."""

    loss: float  # label-smoothed loss per target token
    nll: float  # negative log-likelihood per target token
    bleu: float  # corpus BLEU against the raw references
    valid_s: float  # wall time of the validation (seconds)

    @property
    def ppl(self) -> float:
        return math.exp(min(self.nll, 50.0))

    def metric(self, best_metric: str) -> float:
        """Higher is better: BLEU, or the negated loss."""
        return self.bleu if best_metric == "bleu" else -self.loss

    def record(self, state: TrainState, *, improved: bool) -> dict[str, Any]:
        """The metrics.jsonl record of this validation."""
        return {
            "event": "valid",
            "step": state.step,
            "epoch": state.epoch,
            "loss": self.loss,
            "nll": self.nll,
            "ppl": self.ppl,
            "bleu": self.bleu,
            "best": improved,
            "valid_s": self.valid_s,
            "elapsed_s": round(state.elapsed_s, 1),
        }


def validate(
    model: torch.nn.Module,
    ds: TokenDataset,
    refs: list[str],
    vocab: Vocab,
    cfg: ExperimentConfig,
    *,
    device: torch.device,
    precision: Precision,
) -> Validation:
    """Loss and BLEU of `model` on the prepared split `ds`, whose raw target lines are `refs`."""
    t0 = time.monotonic()
    loss, nll = evaluate_loss(model, ds, cfg, device, precision)
    score = decode_bleu(model, ds, refs, vocab, cfg, device=device)
    return Validation(loss, nll, score, time.monotonic() - t0)


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
        batch = collate(ds, idx).to(device)
        with precision.autocast():
            logits = model(batch.src_ids, batch.src_pad, batch.tgt_in)
        loss, nll = label_smoothed_nll(logits, batch.tgt_out, smoothing=cfg.train.label_smoothing, pad_id=PAD_ID)
        total += torch.stack([loss, nll])
        tokens += batch.n_tgt_tokens
    loss_sum, nll_sum = total.tolist()  # host sync: once per validation
    return loss_sum / max(tokens, 1), nll_sum / max(tokens, 1)


def decode_bleu(
    model: torch.nn.Module,
    ds: TokenDataset,
    refs: list[str],
    vocab: Vocab,
    cfg: ExperimentConfig,
    *,
    device: torch.device,
) -> float:
    """Decode every source of `ds` with `cfg.decode` and score against `refs` (one raw line per example)."""
    assert len(refs) == len(ds), f"{len(refs)} references for {len(ds)} prepared {ds.split} examples"
    model.eval()
    sources = (ds[i][0].tolist() for i in range(len(ds)))
    src = [ids + [EOS_ID] if ids else [] for ids in sources]  # [] = empty source: no model call
    hyps = vocab.decode_tgt(translate_ids(model, src, cfg.decode, device=device))
    return bleu([h.rstrip() for h in hyps], [[r.rstrip() for r in refs]], tgt_lang=cfg.data.tgt_lang)


def update_best(state: TrainState, metric: float) -> bool:
    """Record a validation's metric (higher is better) in `state`; True when it is the new best.

    `state.bad_valids` counts validations since the last improvement (for `train.patience`).
    """
    improved = state.best is None or metric > state.best
    if improved:
        state.best, state.best_step, state.bad_valids = metric, state.step, 0
    else:
        state.bad_valids += 1
    state.last_valid_step = state.step
    return improved
