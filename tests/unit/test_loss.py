"""The chunked label-smoothed loss against PyTorch's own cross_entropy (value and gradient)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nmt.train import loss as loss_mod
from nmt.train.loss import label_smoothed_nll


def reference(logits: torch.Tensor, target: torch.Tensor, eps: float, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """F.cross_entropy's label smoothing is q = (1 - eps) onehot + eps / V, as ours."""
    z, t = logits.float().reshape(-1, logits.size(-1)), target.reshape(-1)
    loss = F.cross_entropy(z, t, ignore_index=pad, label_smoothing=eps, reduction="sum")
    return loss, F.cross_entropy(z, t, ignore_index=pad, reduction="sum")


def batch(dtype: torch.dtype, vocab: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(5, 9, vocab, generator=g) * 3).to(dtype)
    target = torch.randint(1, vocab, (5, 9), generator=g)
    target[0, 4:] = 0  # padded tail
    target[3] = 0  # an all-pad row
    return logits, target


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk_rows", [1, 7, 45, 1000])  # one row per chunk, a ragged last chunk, one chunk
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_chunked_loss_equals_cross_entropy_in_value_and_gradient(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, chunk_rows: int, eps: float
) -> None:
    vocab = 37
    monkeypatch.setattr(loss_mod, "CHUNK_ELEMENTS", chunk_rows * vocab)
    logits, target = batch(dtype, vocab)
    ours_in = logits.clone().requires_grad_()
    ref_in = logits.clone().requires_grad_()
    loss, nll = label_smoothed_nll(ours_in, target, smoothing=eps, pad_id=0)
    ref_loss, ref_nll = reference(ref_in, target, eps, 0)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(nll, ref_nll, rtol=1e-6, atol=1e-5)
    (loss * 0.37).backward()  # a scaled loss, as the training loop's normalisation makes it
    (ref_loss * 0.37).backward()
    assert ours_in.grad is not None and ours_in.grad.dtype == dtype
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-2, "atol": 4e-3}
    torch.testing.assert_close(ours_in.grad, ref_in.grad, **tol)
    assert ours_in.grad[3].abs().max() == 0  # pad rows get no gradient
    torch.testing.assert_close(logits, ours_in.detach())  # the input logits are left as they were


def test_values_without_grad_equal_the_training_form() -> None:
    logits, target = batch(torch.float32, 50, seed=1)
    with torch.no_grad():
        plain = label_smoothed_nll(logits, target, smoothing=0.1, pad_id=0)
    trained = label_smoothed_nll(logits.clone().requires_grad_(), target, smoothing=0.1, pad_id=0)
    torch.testing.assert_close(plain[0], trained[0].detach())
    torch.testing.assert_close(plain[1], trained[1])


def test_gradient_flows_through_a_model_like_autograd_does() -> None:
    """End to end through a linear layer: our loss and the reference give the same weight gradient."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 23)
    x = torch.randn(4, 6, 8)
    target = torch.randint(0, 23, (4, 6))
    label_smoothed_nll(layer(x), target, smoothing=0.1, pad_id=0)[0].backward()
    ours = layer.weight.grad.clone()
    layer.weight.grad = None
    reference(layer(x), target, 0.1, 0)[0].backward()
    torch.testing.assert_close(ours, layer.weight.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_in_place_gradient_through_a_layer_equals_the_reference(dtype: torch.dtype) -> None:
    """in_place=True (the training loop's form) overwrites the logits with their gradient and
    gives the same weight gradient as the reference; autograd would raise if anything had saved them."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 23).to(dtype)
    x = torch.randn(4, 6, 8, dtype=dtype)
    target = torch.randint(0, 23, (4, 6))
    logits = layer(x)
    before = logits.detach().clone()
    loss, _ = label_smoothed_nll(logits, target, smoothing=0.1, pad_id=0, in_place=True)
    assert not torch.equal(logits.detach(), before)  # the memory now holds the gradient
    loss.backward()
    ours = layer.weight.grad.clone()
    layer.weight.grad = None
    reference(layer(x), target, 0.1, 0)[0].backward()
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(ours, layer.weight.grad, **tol)


@pytest.mark.parametrize("in_place", [False, True])
def test_bf16_gradient_is_scaled_in_fp32_not_by_a_bf16_rounded_scale(in_place: bool) -> None:
    """The training loop's scale, world_size / total_tokens, here 2 / 510 = 1/255, is 0.39% off in bf16.

    A scale rounded to bf16 puts that one error on every element. The oracle is F.cross_entropy's
    fp64 gradient; the least-squares factor between ours and it must be 1 within 0.15% (measured:
    1.0032 with the scale rounded, 0.9993 without: storing the gradient in bf16 rounds the
    dominant entries, near -0.9 at the targets, mostly the same way).
    """
    g = torch.Generator().manual_seed(3)
    vocab = 501
    logits = (torch.randn(8, 16, vocab, generator=g) * 3).to(torch.bfloat16)
    target = torch.randint(1, vocab, (8, 16), generator=g)
    target[0, 10:] = 0
    scale = 2 / torch.tensor(510.0)  # as in the loop: a float32 tensor
    assert abs(scale.to(torch.bfloat16).float() / scale - 1) > 3e-3  # a scale bf16 cannot hold
    ours_in = logits.clone().requires_grad_()
    loss, _ = label_smoothed_nll(
        ours_in * 1 if in_place else ours_in, target, smoothing=0.1, pad_id=0, in_place=in_place
    )
    (loss * scale).backward()
    ref_in = logits.double().requires_grad_()
    ref = F.cross_entropy(
        ref_in.reshape(-1, vocab), target.reshape(-1), ignore_index=0, label_smoothing=0.1, reduction="sum"
    )
    (ref * (2 / 510)).backward()
    ours, want = ours_in.grad.double(), ref_in.grad
    fitted = (ours * want).sum() / (want * want).sum()
    assert abs(fitted.item() - 1) < 1.5e-3, f"the gradient is {fitted.item():.5f} times the reference"
    torch.testing.assert_close(ours, want, rtol=1e-2, atol=1e-5)


# ---------------------------------------------------------------- projected_nll: projection and loss in one


def projection(vocab: int, dim: int, *, bias: bool, seed: int = 3) -> torch.nn.Linear:
    torch.manual_seed(seed)
    proj = torch.nn.Linear(dim, vocab, bias=bias)
    if bias:
        torch.nn.init.normal_(proj.bias, std=2.0)
    return proj


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("chunk_rows", [1, 7, 1000])  # one row per chunk, a ragged last chunk, one chunk
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_projected_loss_equals_linear_then_cross_entropy(
    monkeypatch: pytest.MonkeyPatch, bias: bool, chunk_rows: int, eps: float
) -> None:
    vocab, dim = 37, 16
    monkeypatch.setattr(loss_mod, "CACHE_CHUNK_ELEMENTS", chunk_rows * vocab)
    _, target = batch(torch.float32, vocab)
    states = (torch.randn(5, 9, dim) * 2).requires_grad_()
    ours, ref = projection(vocab, dim, bias=bias), projection(vocab, dim, bias=bias)
    ref_states = states.detach().clone().requires_grad_()
    workspace = loss_mod.LogitsWorkspace()
    for _ in range(2):  # the second call reuses the workspace and accumulates gradients as autograd does
        loss, nll = loss_mod.projected_nll(states, ours, target, smoothing=eps, pad_id=0, workspace=workspace)
        ref_loss, ref_nll = reference(F.linear(ref_states, ref.weight, ref.bias), target, eps, 0)
        torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-4)
        torch.testing.assert_close(nll, ref_nll, rtol=1e-6, atol=1e-4)
        (loss * 0.37).backward()
        (ref_loss * 0.37).backward()
    tol = {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(states.grad, ref_states.grad, **tol)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, **tol)
    if bias:
        torch.testing.assert_close(ours.bias.grad, ref.bias.grad, **tol)
    assert states.grad is not None and states.grad[3].abs().max() == 0  # pad rows get no gradient


def test_projected_loss_under_bf16_autocast_matches_autocast_linear_then_loss() -> None:
    vocab, dim = 50, 16
    _, target = batch(torch.float32, vocab, seed=2)
    states = torch.randn(5, 9, dim).requires_grad_()
    ours, ref = projection(vocab, dim, bias=True), projection(vocab, dim, bias=True)
    ref_states = states.detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, nll = loss_mod.projected_nll(
            states, ours, target, smoothing=0.1, pad_id=0, workspace=loss_mod.LogitsWorkspace()
        )
        logits = F.linear(ref_states, ref.weight, ref.bias)
    assert logits.dtype == torch.bfloat16
    ref_loss, _ = reference(logits, target, 0.1, 0)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-3)
    (loss * 3.0).backward()
    (ref_loss * 3.0).backward()
    assert states.grad is not None and states.grad.dtype == torch.float32 and ours.weight.grad.dtype == torch.float32
    torch.testing.assert_close(states.grad, ref_states.grad, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=2e-2, atol=2e-2)


def test_a_bf16_projection_gets_gradients_in_its_own_dtype() -> None:
    """Parameters cast to bf16 (no fp32 master copy): the fp32 products from the backward reach them in bf16."""
    vocab, dim = 50, 16
    _, target = batch(torch.float32, vocab, seed=3)
    states = torch.randn(5, 9, dim).to(torch.bfloat16).requires_grad_()
    ours, ref = (
        projection(vocab, dim, bias=True).to(torch.bfloat16),
        projection(vocab, dim, bias=True).to(torch.bfloat16),
    )
    ref_states = states.detach().clone().requires_grad_()
    loss, _ = loss_mod.projected_nll(
        states, ours, target, smoothing=0.1, pad_id=0, workspace=loss_mod.LogitsWorkspace()
    )
    ref_loss, _ = reference(F.linear(ref_states, ref.weight, ref.bias), target, 0.1, 0)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-3)
    loss.backward()
    ref_loss.backward()
    for got, want in (
        (states.grad, ref_states.grad),
        (ours.weight.grad, ref.weight.grad),
        (ours.bias.grad, ref.bias.grad),
    ):
        assert got is not None and want is not None and got.dtype == torch.bfloat16
        torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)


def test_a_workspace_reused_before_the_backward_is_an_error_not_a_wrong_gradient() -> None:
    vocab, dim = 20, 8
    _, target = batch(torch.float32, vocab)
    proj, workspace = projection(vocab, dim, bias=False), loss_mod.LogitsWorkspace()
    first = loss_mod.projected_nll(torch.randn(5, 9, dim), proj, target, smoothing=0.1, pad_id=0, workspace=workspace)
    loss_mod.projected_nll(torch.randn(5, 9, dim), proj, target, smoothing=0.1, pad_id=0, workspace=workspace)
    with pytest.raises(RuntimeError, match="workspace was reused"):
        first[0].backward()
