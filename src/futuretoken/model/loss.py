"""Future targets, document-boundary masks, distance weights and the linear cross-entropy.

The FTP decoder makes B*T*N predictions over a V-way vocabulary; the (B, T, N, V) logit
tensor would take gigabytes, so the loss never builds more than a chunk of logits at once.
Two implementations compute the same numbers:
- "torch": `torch.nn.functional.linear_cross_entropy` with chunking options (torch >= 2.13),
  one call per distance k (the weight gamma^(k-1) is constant within a call);
- "chunked": our own autograd Function, which computes each chunk's loss and its gradients
  in the forward pass and keeps only the (rows, d) and (V, d) gradients. It is the fallback
  for older torch and the reference the tests hold the library path to.
Both do forward work only when autograd will not need gradients (no_grad, inference_mode,
frozen inputs).

The loss is returned as sums plus the normaliser, not as a mean: a training step spread
over micro-batches and processes divides the sum of all of them by the weight of all their
counted targets, so the gradient does not depend on how the global batch was split.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import LOSS_IMPLEMENTATIONS

IGNORE = -100
HAS_TORCH_LINEAR_CE = hasattr(torch.nn, "LinearCrossEntropyOptions")


@dataclass
class LossOutput:
    weighted_sum: Tensor  # scalar, differentiable: sum over counted targets of gamma^(k-1) * CE
    weight: Tensor  # scalar: sum of gamma^(k-1) over the counted targets (the mean's denominator)
    ce_sum: Tensor  # (N,) summed CE of the predictions k tokens ahead, k = 1..N (detached)
    n_targets: Tensor  # (N,) how many targets were counted at each distance

    @property
    def total(self) -> Tensor:
        """Scalar, differentiable: the gamma-weighted mean CE of this batch."""
        return self.weighted_sum / self.weight.clamp_min(1e-12)

    @property
    def per_distance(self) -> Tensor:
        """(N,) mean CE at distance k (detached)."""
        return self.ce_sum / self.n_targets.clamp_min(1)


def future_targets(tokens: Tensor, horizon: int, eot_token: int | None) -> tuple[Tensor, Tensor]:
    """Decoder inputs and targets for every position of a block of T + N tokens.

    tokens: (B, T + N). Position t gets inputs x_t .. x_{t+N-1} and targets x_{t+1} .. x_{t+N}.
    Target x_{t+k} belongs to another document when an end-of-text token sits in
    x_{t+1} .. x_{t+k-1}; it is then IGNORE. (x_t itself may be the separator: it then
    acts as the beginning-of-document token, as in GPT training.)
    Returns inputs, targets: both (B, T, N).
    """
    B, L = tokens.shape
    T = L - horizon
    if T < 1:
        raise ValueError(f"need a block of T + N tokens with T >= 1; got {L} tokens for N={horizon}")
    windows = tokens.unfold(1, horizon + 1, 1)[:, :T]  # (B, T, N + 1): x_t .. x_{t+N}
    inputs, targets = windows[..., :-1], windows[..., 1:].clone()
    if eot_token is not None and horizon > 1:
        is_eot = targets[..., :-1] == eot_token  # (B, T, N-1): separator at x_{t+1} .. x_{t+N-1}
        crossed = is_eot.int().cumsum(-1) > 0  # a separator lies before target k+1
        targets[..., 1:][crossed] = IGNORE
    return inputs, targets


def distance_weights(horizon: int, gamma: float, device=None, dtype=torch.float32) -> Tensor:
    """(N,) gamma^(k-1) for k = 1..N."""
    return gamma ** torch.arange(horizon, device=device, dtype=dtype)


def _chunked_ce(x: Tensor, weight: Tensor, targets: Tensor, row_weights: Tensor, chunk: int, vocab: int,
                with_grad: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Per-row CE of (x @ weight^T)[:, :vocab], and (with_grad) the gradients of sum(row_weights * CE).

    x: (M, d), weight: (V_padded, d), targets: (M,), row_weights: (M,). Rows of `weight` past
    `vocab` (padding) are never predicted: their logits are cut off before the softmax.
    """
    acc = torch.promote_types(x.dtype, torch.float32)  # softmax in fp32 even under bf16
    losses = torch.zeros(x.shape[0], device=x.device, dtype=acc)  # (M,)
    grad_x = torch.zeros_like(x) if with_grad else None
    grad_w = torch.zeros(weight.shape, device=weight.device, dtype=acc) if with_grad else None
    for start in range(0, x.shape[0], chunk):
        rows = slice(start, start + chunk)
        xc, yc = x[rows], targets[rows]
        logits = (xc @ weight.T).to(acc)[:, :vocab]  # (c, V): the only logits alive at once
        valid = yc != IGNORE
        safe_y = yc.clamp_min(0)
        lse = torch.logsumexp(logits, dim=-1)  # (c,)
        losses[rows] = torch.where(valid, lse - logits.gather(1, safe_y[:, None]).squeeze(1), 0.0)
        if with_grad:  # dCE/dlogits = softmax - onehot, built in the logits' own memory
            grad_logits = logits.sub_(lse[:, None]).exp_()
            grad_logits[torch.arange(len(yc), device=x.device), safe_y] -= 1.0
            grad_logits *= (row_weights[rows] * valid)[:, None]
            grad_logits = grad_logits.to(x.dtype)
            grad_x[rows] = grad_logits @ weight[:vocab].to(x.dtype)
            grad_w[:vocab] += (grad_logits.T @ xc).to(acc)
    return losses, grad_x, grad_w


class _LinearCrossEntropy(torch.autograd.Function):
    """Weighted CE of x @ W^T; gradients are computed chunk by chunk during forward."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, targets: Tensor, row_weights: Tensor, chunk: int, vocab: int):
        losses, grad_x, grad_w = _chunked_ce(x, weight, targets, row_weights, chunk, vocab, with_grad=True)
        ctx.save_for_backward(grad_x, grad_w)
        ctx.weight_dtype = weight.dtype
        ctx.mark_non_differentiable(losses)
        return (losses * row_weights.to(losses.dtype)).sum(), losses

    @staticmethod
    def backward(ctx, grad_total: Tensor, _grad_losses: Tensor):
        grad_x, grad_w = ctx.saved_tensors
        gx = grad_x * grad_total.to(grad_x.dtype) if ctx.needs_input_grad[0] else None
        gw = (grad_w * grad_total).to(ctx.weight_dtype) if ctx.needs_input_grad[1] else None
        return gx, gw, None, None, None, None


def linear_cross_entropy(x: Tensor, weight: Tensor, targets: Tensor, row_weights: Tensor, chunk: int,
                         vocab: int | None = None) -> tuple[Tensor, Tensor]:
    """Weighted cross-entropy of logits (x @ weight^T)[:, :vocab] without materialising all logits.

    x: (M, d), weight: (V_padded, d), targets: (M,) with IGNORE for skipped rows, row_weights: (M,).
    Returns (scalar sum_i row_weights_i * CE_i, differentiable when autograd needs it; per-row CE (M,)).
    """
    vocab = weight.shape[0] if vocab is None else vocab
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(x, weight, targets, row_weights, chunk, vocab)
    losses, _, _ = _chunked_ce(x, weight, targets, row_weights, chunk, vocab, with_grad=False)
    return (losses * row_weights.to(losses.dtype)).sum(), losses


def resolve_implementation(impl: str) -> str:
    if impl not in LOSS_IMPLEMENTATIONS:
        raise ValueError(f"loss_impl={impl!r} is unknown; choose one of {', '.join(LOSS_IMPLEMENTATIONS)}")
    if impl == "auto":
        return "torch" if HAS_TORCH_LINEAR_CE else "chunked"
    if impl == "torch" and not HAS_TORCH_LINEAR_CE:
        raise ValueError(f"loss_impl='torch' needs torch >= 2.13 (F.linear_cross_entropy); this is torch "
                         f"{torch.__version__}: use loss_impl='chunked' or 'auto'")
    return impl


def _torch_sum_ce(x: Tensor, weight: Tensor, targets: Tensor, chunk: int) -> Tensor:
    """Summed CE of x @ weight^T over the counted targets, by torch's chunked kernel.

    The kernel is a custom op that autocast does not reach, so the matmul dtype autocast
    would pick is applied by hand (bf16 on GPU: the head is the largest matmul of a step).
    """
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(dtype), weight.to(dtype)
    half = x.dtype in (torch.float16, torch.bfloat16)  # accumulate the softmax in fp32 even then
    options = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=chunk, acc_dtype=torch.float32 if half else None)
    loss = F.linear_cross_entropy(x.contiguous(), weight, targets, reduction="sum", ignore_index=IGNORE,
                                  options=options)
    return loss.to(torch.promote_types(loss.dtype, torch.float32))


def future_loss(
    features: Tensor,  # (M, N, d) decoder outputs after the final norm, e.g. M = B*T
    head_weight: Tensor,  # (V_padded, d) tied output head
    targets: Tensor,  # (M, N) with IGNORE for masked targets
    gamma: float | Tensor,  # distance k weighs gamma^(k-1); or the (N,) weights themselves
    chunk: int,
    vocab: int,  # the real vocabulary: rows of head_weight past it are padding, never predicted
    impl: str = "auto",
) -> LossOutput:
    """Sums of w_k * CE(x_{t+k}) over the counted targets, their weight and per-distance sums."""
    M, N, d = features.shape
    valid = targets != IGNORE  # (M, N)
    acc = torch.promote_types(features.dtype, torch.float32)
    if isinstance(gamma, Tensor):
        dist_w = gamma.to(features.device, acc)  # (N,)
    else:
        dist_w = distance_weights(N, gamma, features.device, acc)  # (N,)
    n_targets = valid.sum(0)  # (N,)
    weight = (n_targets * dist_w).sum()
    if resolve_implementation(impl) == "torch":
        w = head_weight[:vocab]
        ce_sum = torch.stack([_torch_sum_ce(features[:, k], w, targets[:, k], chunk) for k in range(N)])  # (N,)
        weighted_sum = (ce_sum * dist_w).sum()
        return LossOutput(weighted_sum, weight, ce_sum.detach(), n_targets)
    row_weights = (dist_w * valid).reshape(-1)  # (M*N,)
    weighted_sum, per_row = linear_cross_entropy(features.reshape(-1, d), head_weight, targets.reshape(-1),
                                                 row_weights, chunk, vocab)
    return LossOutput(weighted_sum, weight, per_row.view(M, N).sum(0).detach(), n_targets)


def per_position(out: LossOutput) -> LossOutput:
    """The same sums normalised by the number of positions (the targets at distance 1, which are never
    masked) instead of the summed weights: `total` is then a sum over distances of weighted per-position
    cross-entropies, as the multi-token objectives of Gloeckle et al. and DeepSeek-V3 define it."""
    return replace(out, weight=out.n_targets[0].to(out.weight.dtype))
