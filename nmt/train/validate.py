"""Validation during training: loss, decoding + BLEU, and the best / patience bookkeeping.

BLEU is scored like `nmt evaluate CONFIG --split valid`: the validation sources are
decoded with the config's decode settings and the hypotheses are scored against the
raw reference lines (trailing whitespace removed, as sacreBLEU's CLI reads them), not
against references decoded back from token ids (which would drop what the vocabulary
cannot spell and flatter the score). An empty source gets an empty hypothesis without
running the model, as `translate` does.

Under DDP (`Dist` with several ranks) each rank does a share of the work and every rank
returns rank 0's `Validation`, so best / patience decisions agree:
- loss: the length-bucketed validation batches are dealt round-robin (batch r, r+W, ...
  to rank r); the (loss, nll, tokens) sums are all-reduced, so the per-token loss is the
  one-process loss up to float summation order;
- BLEU: the sources are sorted by length and dealt round-robin, so every rank decodes
  about 1/W of the sentences and tokens; rank 0 gathers the hypotheses, puts them back in
  corpus order and scores the whole corpus once (corpus BLEU is not an average of
  per-rank BLEU). The hypotheses are those one process would produce: each sentence's
  search does not depend on the rest of its batch (up to float noise).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nmt.config import ExperimentConfig
from nmt.data.batching import collate, make_batches, padded_lengths
from nmt.data.binarize import TokenDataset
from nmt.data.directions import Mixture, ValidSet
from nmt.data.vocab import Vocab
from nmt.decode.search import decoding_form, translate_ids
from nmt.metrics import bleu
from nmt.precision import Precision
from nmt.tokens import EOS_ID, PAD_ID
from nmt.train.distributed import Dist
from nmt.train.loss import label_smoothed_nll
from nmt.train.state import TrainState


@dataclass(frozen=True)
class Validation:
    """The scores of one validation; with several directions, the means over them and each one's."""

    loss: float  # label-smoothed loss per target token
    nll: float  # negative log-likelihood per target token
    bleu: float | None  # corpus BLEU against the raw references; None when not scored (pretraining)
    valid_s: float  # wall time of the validation (seconds)
    directions: dict[str, Validation] | None = None  # per direction (multilingual)

    @property
    def ppl(self) -> float:
        return math.exp(min(self.nll, 50.0))

    def metric(self, best_metric: str) -> float:
        """Higher is better: BLEU, or the negated loss (multilingual: their means over directions)."""
        if best_metric == "bleu":
            assert self.bleu is not None, "best_metric bleu needs BLEU scored"
            return self.bleu
        return -self.loss

    def record(self, state: TrainState, *, improved: bool) -> dict[str, Any]:
        """The metrics.jsonl record of this validation."""
        record: dict[str, Any] = {
            "event": "valid",
            "step": state.step,
            "epoch": state.epoch,
            "loss": self.loss,
            "nll": self.nll,
            "ppl": self.ppl,
            **({"bleu": self.bleu} if self.bleu is not None else {}),
            "best": improved,
            "valid_s": self.valid_s,
            "elapsed_s": round(state.elapsed_s, 1),
        }
        if self.directions:
            record["directions"] = {
                name: {"loss": v.loss, "nll": v.nll, "ppl": v.ppl, **({"bleu": v.bleu} if v.bleu is not None else {})}
                for name, v in self.directions.items()
            }
        return record


def validate(
    model: torch.nn.Module,
    sets: Sequence[ValidSet],
    vocab: Vocab,
    cfg: ExperimentConfig,
    *,
    device: torch.device,
    precision: Precision,
    dist: Dist | None = None,
    score_bleu: bool = True,
) -> Validation:
    """Loss and BLEU of `model` on each validation set; one set (bilingual) is the Validation itself,
    several (one per direction) give their plain means, which best.pt and patience follow.
    Without `score_bleu` (pretraining: the references are the sources), the loss only.

    The decoding form is built once, from the weights as they are now, for every set. Under DDP
    every rank must call it (it holds collectives); each does its share and all return rank 0's
    result. `dist=None` is one process.
    """
    dist = dist or Dist()
    t0 = time.monotonic()
    form = decoding_form(model, device, cfg.decode.precision) if score_bleu else model
    each: dict[str, Validation] = {}
    for valid in sets:
        t1 = time.monotonic()
        loss, nll = evaluate_loss(model, valid.data, cfg, device, precision, dist=dist)
        score = (decode_bleu(form, valid, vocab, cfg, device=device, dist=dist) or 0.0) if score_bleu else None
        each[valid.name] = Validation(loss, nll, score, time.monotonic() - t1)  # BLEU: rank 0's below
    each = dist.broadcast_object(each)
    if list(each) == [""]:
        return each[""]
    mean = lambda key: sum(getattr(v, key) for v in each.values()) / len(each)  # noqa: E731
    return Validation(
        mean("loss"), mean("nll"), mean("bleu") if score_bleu else None, time.monotonic() - t0, directions=each
    )


@torch.inference_mode()
def evaluate_loss(
    model: torch.nn.Module,
    ds: TokenDataset | Mixture,
    cfg: ExperimentConfig,
    device: torch.device,
    precision: Precision,
    *,
    dist: Dist | None = None,
) -> tuple[float, float]:
    """Per-token label-smoothed loss and NLL on a split (teacher forcing), over all ranks' batches."""
    dist = dist or Dist()
    model.eval()
    total = torch.zeros(2, device=device)
    tokens = 0
    batches = make_batches(
        padded_lengths(ds), batch_tokens=cfg.train.batch_tokens, max_sentences=None, seed=0, epoch=0, shuffle=False
    )
    for idx in dist.share(batches):
        batch = collate(ds, idx).to(device)
        with precision.autocast():
            logits = model(batch.src_ids, batch.src_pad, batch.tgt_in, keep=batch.tgt_keep)
        loss, nll = label_smoothed_nll(logits, batch.tgt_gold, smoothing=cfg.train.label_smoothing, pad_id=PAD_ID)
        total += torch.stack([loss, nll])
        tokens += batch.n_tgt_tokens
    sums = dist.all_reduce_sum(torch.cat([total, total.new_tensor([float(tokens)])]))
    loss_sum, nll_sum, tokens_sum = sums.tolist()  # host sync: once per validation
    return loss_sum / max(tokens_sum, 1.0), nll_sum / max(tokens_sum, 1.0)


def shard_by_length(lengths: Sequence[int], dist: Dist) -> list[int]:
    """This rank's indices into `lengths`: sorted by length and dealt round-robin, so that the
    ranks get similar numbers of sentences and tokens. Over all ranks, every index once."""
    return dist.share(sorted(range(len(lengths)), key=lengths.__getitem__))


def decode_bleu(
    form: torch.nn.Module,
    valid: ValidSet,
    vocab: Vocab,
    cfg: ExperimentConfig,
    *,
    device: torch.device,
    dist: Dist | None = None,
) -> float | None:
    """Decode every source of `valid` with `cfg.decode` (`form`: the caller's `decoding_form`) and
    score against its raw references, with the BLEU tokenizer of its target language.

    Under DDP each rank decodes its `shard_by_length` share; rank 0 gathers and scores the
    hypotheses and returns BLEU, the other ranks None. In one process: BLEU.
    """
    ds, refs = valid.data, valid.refs
    assert len(refs) == len(ds), f"{len(refs)} references for {len(ds)} prepared {ds.split} examples"
    dist = dist or Dist()
    mine = shard_by_length(ds.src_lens.tolist(), dist)
    sources = (ds[i][0].tolist() for i in mine)
    src = [ids + [EOS_ID] if ids else [] for ids in sources]  # [] = empty source: no model call
    start_id = valid.marks.start_id
    shares = dist.gather_object((mine, translate_ids(form, src, cfg.decode, device=device, start_id=start_id)))
    if shares is None:
        return None
    hyp_ids: list[list[int]] = [[] for _ in range(len(ds))]
    for index, ids in shares:
        for i, hyp in zip(index, ids, strict=True):
            hyp_ids[i] = hyp
    hyps = vocab.decode_tgt(hyp_ids)
    return bleu([h.rstrip() for h in hyps], [[r.rstrip() for r in refs]], tgt_lang=valid.tgt_lang)


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
