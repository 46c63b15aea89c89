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


# ---------------------------------------------------------------- projection and loss in one


class LogitsWorkspace:
    """The (rows x vocab) buffer `projected_nll` computes the logits, then their gradient, in: built
    once by the training loop and passed to every call, so that no step allocates it anew. A fresh
    buffer of that size (450 MB for 1,900 target tokens and a 58k vocabulary) is paid for in page
    faults on the CPU each time it is first written (BENCHMARKS.md: fine-tuning an OPUS-MT-shaped model).

    One buffer serves one loss at a time: a call's backward must run before the next call
    (gradient accumulation does this); a backward that finds the buffer reused raises.
    """

    def __init__(self) -> None:
        self._buf: Tensor | None = None
        self.generation = 0  # bumped by every take(): a backward checks its logits are still there

    def take(self, rows: int, vocab: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        need = rows * vocab
        buf = self._buf
        if buf is None or buf.numel() < need or buf.dtype != dtype or buf.device != device:
            self._buf = None  # the old one freed first
            buf = self._buf = torch.empty(need + need // 4, dtype=dtype, device=device)  # room for larger batches
        self.generation += 1
        return buf[:need].view(rows, vocab)


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast computes matrix products in on `device_type`, or None when it is off."""
    try:
        if not torch.is_autocast_enabled(device_type):
            return None
        return torch.get_autocast_dtype(device_type)
    except (TypeError, AttributeError):  # torch < 2.4: no device_type argument
        if device_type == "cpu":
            return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
        return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None


class _ProjectedNLL(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        states: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        target: Tensor,
        smoothing: float,
        pad_id: int,
        workspace: LogitsWorkspace,
        dtype: torch.dtype,
    ) -> tuple[Tensor, Tensor]:
        d = states.size(-1)
        h, tgt = states.reshape(-1, d).to(dtype), target.reshape(-1)
        w = weight.to(dtype)
        vocab = w.size(0)
        z = workspace.take(h.size(0), vocab, dtype, h.device)
        if bias is None:
            torch.mm(h, w.t(), out=z)
        else:
            torch.addmm(bias.to(dtype), h, w.t(), out=z)
        keep_all = tgt.ne(pad_id)
        loss = h.new_zeros((), dtype=torch.float32)
        nll = h.new_zeros((), dtype=torch.float32)
        rows = max(1, CACHE_CHUNK_ELEMENTS // vocab)  # a chunk stays in cache through its passes
        for start in range(0, z.size(0), rows):
            chunk = z[start : start + rows]
            f = chunk if dtype == torch.float32 else chunk.float()
            t, keep = tgt[start : start + rows].clamp(min=0).unsqueeze(1), keep_all[start : start + rows]
            z_y = f.gather(1, t).squeeze(1)
            mean = f.mean(dim=1) if smoothing else None
            top = f.amax(dim=1, keepdim=True)
            total = f.sub_(top).exp_().sum(dim=1, keepdim=True)  # f now holds exp(z - max)
            lse = total.log().add_(top).squeeze(1)
            chunk_nll = torch.where(keep, lse - z_y, 0.0)
            chunk_loss = (1.0 - smoothing) * chunk_nll
            if mean is not None:
                chunk_loss = chunk_loss + smoothing * torch.where(keep, lse - mean, 0.0)
            loss += chunk_loss.sum()
            nll += chunk_nll.sum()
            g = f.div_(total)  # softmax(z) - q, zero on pad rows
            if smoothing:
                g.sub_(smoothing / vocab)
            g.scatter_add_(1, t, torch.full_like(lse, smoothing - 1.0).unsqueeze(1))
            g.mul_(keep.unsqueeze(1))
            if f is not chunk:
                chunk.copy_(f)
        ctx.workspace, ctx.generation, ctx.z = workspace, workspace.generation, z
        ctx.has_bias, ctx.states_shape, ctx.states_dtype = bias is not None, states.shape, states.dtype
        ctx.save_for_backward(h, w)
        ctx.mark_non_differentiable(nll)
        return loss, nll

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: Tensor, _grad_nll: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        if ctx.workspace.generation != ctx.generation:
            raise RuntimeError("projected_nll: the workspace was reused before this loss's backward")
        h, w = ctx.saved_tensors
        g, scale = ctx.z, grad_loss.to(torch.float32)  # the scale applied in fp32 (see `_scale_`)
        grad_states = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_states = torch.mm(g, w).float().mul_(scale).to(ctx.states_dtype).view(ctx.states_shape)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.mm(g.t(), h).float().mul_(scale)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = g.sum(dim=0, dtype=torch.float32).mul_(scale)
        ctx.z = None
        return grad_states, grad_weight, grad_bias, None, None, None, None, None


CACHE_CHUNK_ELEMENTS = 2**21  # logits per chunk of projected_nll's passes (8 MiB in fp32)


def projected_nll(
    states: Tensor,
    proj: torch.nn.Linear,
    target: Tensor,
    *,
    smoothing: float,
    pad_id: int,
    workspace: LogitsWorkspace,
) -> tuple[Tensor, Tensor]:
    """`label_smoothed_nll(proj(states), target, ...)` for training, without a logits tensor of its own.

    The logits are computed into `workspace`, turned into their gradient (softmax - q) chunk by
    chunk while each chunk is in cache, and the backward multiplies that gradient into the
    gradients of `states`, `proj.weight` and `proj.bias`. Under autocast the products run in its
    dtype and the statistics in fp32, as `label_smoothed_nll` does.

    Args:
        states: (B, T, D) or (N, D), what `proj` takes (the model's `forward(..., project=False)`).
        target: gold ids of the same leading shape, `pad_id` where padded.
    """
    dtype = _autocast_dtype(states.device.type) or torch.promote_types(states.dtype, proj.weight.dtype)
    return _ProjectedNLL.apply(states, proj.weight, proj.bias, target, float(smoothing), int(pad_id), workspace, dtype)
