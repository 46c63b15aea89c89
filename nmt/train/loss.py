"""Label-smoothed cross-entropy, summed over non-pad target tokens."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def label_smoothed_nll(logits: Tensor, target: Tensor, *, smoothing: float, pad_id: int) -> tuple[Tensor, Tensor]:
    """Summed smoothed loss and summed NLL over non-pad positions (float32).

    The target distribution is q = (1 - eps) * onehot(y) + eps / V (uniform over the
    vocabulary), so the loss per token is -(1 - eps) log p(y) - (eps / V) sum_v log p(v).

    Args:
        logits: (B, T, V) decoder outputs.
        target: (B, T) gold ids, `pad_id` where padded.
    """
    vocab = logits.size(-1)
    logp = F.log_softmax(logits.float(), dim=-1).view(-1, vocab)
    target = target.reshape(-1)
    nll = F.nll_loss(logp, target, ignore_index=pad_id, reduction="sum")
    smooth = -(logp.sum(dim=-1) * target.ne(pad_id)).sum() / vocab
    return (1.0 - smoothing) * nll + smoothing * smooth, nll
