"""Label-smoothed cross-entropy, summed over non-pad target tokens, without a full fp32 copy.

The target distribution is q = (1 - eps) * onehot(y) + eps / V (uniform over the vocabulary),
so the loss per token is -(1 - eps) log p(y) - (eps / V) sum_v log p(v), which needs no
log-probabilities at all: with lse = logsumexp(z),

    nll    = lse - z_y
    smooth = lse - mean_v z_v
    loss   = (1 - eps) * nll + eps * smooth

and its gradient with respect to the logits z is softmax(z) - q (zero on pad rows).

`label_smoothed_nll` computes both, and the gradient, in the forward pass, over chunks of
rows: each chunk is cast to fp32 on its own, so the (tokens x vocab) fp32 array exists only
one chunk at a time, and the gradient is stored in the logits' dtype (bf16 under autocast)
instead of autograd keeping fp32 log-probabilities for the backward. The backward is then
one multiplication by the incoming scalar, done in fp32 chunk by chunk (rounded to bf16, the
scale would be off by up to 0.4%). (A plain log_softmax + nll_loss holds the whole fp32
log-probability array for the backward and computes a softmax twice.)
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

CHUNK_ELEMENTS = 2**22  # logits per fp32 chunk (16 MiB): rows per chunk = this // vocab


def _chunk_rows(vocab: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(vocab, 1))


def _chunk_stats(z: Tensor, target: Tensor, keep: Tensor, smoothing: float) -> tuple[Tensor, Tensor, Tensor]:
    """For fp32 rows `z` (n, V): summed loss, summed nll, and log-softmax's lse (n,)."""
    lse = torch.logsumexp(z, dim=-1)
    z_y = z.gather(1, target.clamp(min=0).unsqueeze(1)).squeeze(1)
    nll = (lse - z_y) * keep
    smooth = (lse - z.mean(dim=-1)) * keep
    return ((1.0 - smoothing) * nll + smoothing * smooth).sum(), nll.sum(), lse


class _SmoothedNLL(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx, logits: Tensor, target: Tensor, smoothing: float, pad_id: int, in_place: bool
    ) -> tuple[Tensor, Tensor]:
        vocab = logits.size(-1)
        flat, tgt = logits.reshape(-1, vocab), target.reshape(-1)
        keep_all = tgt.ne(pad_id)
        loss = flat.new_zeros((), dtype=torch.float32)
        nll = flat.new_zeros((), dtype=torch.float32)
        grad = None
        if ctx.needs_input_grad[0]:  # in place: the gradient overwrites the logits chunk by chunk
            grad = flat.detach() if in_place and flat.data_ptr() == logits.data_ptr() else torch.empty_like(flat)
        rows = _chunk_rows(vocab)
        for start in range(0, flat.size(0), rows):
            z = flat[start : start + rows].to(torch.float32, copy=True)  # a copy even when fp32: reused below
            t, keep = tgt[start : start + rows], keep_all[start : start + rows].float()
            chunk_loss, chunk_nll, lse = _chunk_stats(z, t, keep, smoothing)
            loss += chunk_loss
            nll += chunk_nll
            if grad is not None:  # softmax(z) - q, zero on pad rows; z is reused as the buffer
                g = z.sub_(lse.unsqueeze(1)).exp_().sub_(smoothing / vocab)
                g.scatter_add_(1, t.clamp(min=0).unsqueeze(1), torch.full_like(lse, smoothing - 1.0).unsqueeze(1))
                grad[start : start + rows] = g.mul_(keep.unsqueeze(1))
        ctx.shape = logits.shape
        ctx.save_for_backward(grad if grad is not None else flat.new_empty(0))
        ctx.mark_non_differentiable(nll)
        return loss, nll

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: Tensor, _grad_nll: Tensor) -> tuple[Tensor, None, None, None, None]:  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return _scale_(grad, grad_loss).view(ctx.shape), None, None, None, None


def _scale_(grad: Tensor, scale: Tensor) -> Tensor:
    """`grad` (n, V) times the scalar `scale`, in place, the product taken in fp32 (or fp64).

    The scale (world_size / tokens from the training loop) rounded to bf16 would be off by up
    to 0.4%, the same on every element: a bias that no averaging removes. Half-precision rows
    are multiplied one fp32 chunk at a time, so the fp32 copy stays one chunk in size.
    """
    if grad.dtype in (torch.float32, torch.float64):
        return grad.mul_(scale.to(grad.dtype))
    scale = scale.to(torch.float32)
    rows = _chunk_rows(grad.size(-1))
    for start in range(0, grad.size(0), rows):
        chunk = grad[start : start + rows]
        chunk.copy_(chunk.to(torch.float32).mul_(scale))
    return grad


def label_smoothed_nll(
    logits: Tensor, target: Tensor, *, smoothing: float, pad_id: int, in_place: bool = False
) -> tuple[Tensor, Tensor]:
    """Summed smoothed loss and summed NLL over non-pad positions (float32 scalars).

    Args:
        logits: (B, T, V) decoder outputs, any float dtype.
        target: (B, T) gold ids, `pad_id` where padded.
        in_place: store the gradient in `logits`' own memory (the training step: the logits
            are not used after the loss, and the output projection's backward does not need
            them), saving a (tokens x vocab) buffer; `logits` then holds the gradient.

    The gradient reaches `logits` through the loss only (the NLL is a by-product). The backward
    may be run once (the stored gradient is scaled in place).
    """
    if torch.is_grad_enabled() and logits.requires_grad:
        return _SmoothedNLL.apply(logits, target, float(smoothing), int(pad_id), in_place)
    vocab = logits.size(-1)
    flat, tgt = logits.reshape(-1, vocab), target.reshape(-1)
    loss = flat.new_zeros((), dtype=torch.float32)
    nll = flat.new_zeros((), dtype=torch.float32)
    rows = _chunk_rows(vocab)
    for start in range(0, flat.size(0), rows):
        t = tgt[start : start + rows]
        chunk_loss, chunk_nll, _ = _chunk_stats(flat[start : start + rows].float(), t, t.ne(pad_id).float(), smoothing)
        loss += chunk_loss
        nll += chunk_nll
    return loss, nll
