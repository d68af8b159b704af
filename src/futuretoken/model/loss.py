"""Future targets, document-boundary masks, distance weights and a chunked linear cross-entropy.

The FTP decoder makes B*T*N predictions over a V-way vocabulary; the (B, T, N, V) logit
tensor would take gigabytes, so `linear_cross_entropy` never builds more than
`chunk` rows of logits at once: it computes each chunk's loss and its gradients
in the forward pass and keeps only the (rows, d) and (V, d) gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

IGNORE = -100


@dataclass
class LossOutput:
    total: Tensor  # scalar: sum_k gamma^(k-1) * CE_k, normalised by the weights of the counted targets
    per_distance: Tensor  # (N,) mean CE of the prediction k tokens ahead, k = 1..N (detached)
    n_targets: Tensor  # (N,) how many targets were counted at each distance


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


def distance_weights(horizon: int, gamma: float, device=None) -> Tensor:
    """(N,) gamma^(k-1) for k = 1..N."""
    return gamma ** torch.arange(horizon, device=device, dtype=torch.float32)


class _LinearCrossEntropy(torch.autograd.Function):
    """Weighted CE of x @ W^T; gradients are computed chunk by chunk during forward."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, targets: Tensor, row_weights: Tensor, chunk: int):
        # x: (M, d), weight: (V, d), targets: (M,), row_weights: (M,)
        needs_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        acc = torch.promote_types(x.dtype, torch.float32)  # softmax in fp32 even under bf16
        losses = torch.zeros(x.shape[0], device=x.device, dtype=acc)  # (M,)
        grad_x = torch.zeros_like(x) if needs_grad else None
        grad_w = torch.zeros(weight.shape, device=weight.device, dtype=acc) if needs_grad else None
        for start in range(0, x.shape[0], chunk):
            rows = slice(start, start + chunk)
            xc, yc = x[rows], targets[rows]
            logits = (xc @ weight.T).to(acc)  # (c, V): the only logits alive at once
            valid = yc != IGNORE
            safe_y = yc.clamp_min(0)
            lse = torch.logsumexp(logits, dim=-1)  # (c,)
            losses[rows] = torch.where(valid, lse - logits.gather(1, safe_y[:, None]).squeeze(1), 0.0)
            if needs_grad:  # dCE/dlogits = softmax - onehot, built in the logits' own memory
                grad_logits = logits.sub_(lse[:, None]).exp_()
                grad_logits[torch.arange(len(yc), device=x.device), safe_y] -= 1.0
                grad_logits *= (row_weights[rows] * valid)[:, None]
                grad_logits = grad_logits.to(x.dtype)
                grad_x[rows] = grad_logits @ weight.to(x.dtype)
                grad_w += (grad_logits.T @ xc).to(acc)
        ctx.save_for_backward(grad_x, grad_w)
        ctx.weight_dtype = weight.dtype
        ctx.mark_non_differentiable(losses)
        return (losses * row_weights.to(acc)).sum(), losses

    @staticmethod
    def backward(ctx, grad_total: Tensor, _grad_losses: Tensor):
        grad_x, grad_w = ctx.saved_tensors
        gx = grad_x * grad_total.to(grad_x.dtype) if ctx.needs_input_grad[0] else None
        gw = (grad_w * grad_total).to(ctx.weight_dtype) if ctx.needs_input_grad[1] else None
        return gx, gw, None, None, None


def linear_cross_entropy(
    x: Tensor, weight: Tensor, targets: Tensor, row_weights: Tensor, chunk: int
) -> tuple[Tensor, Tensor]:
    """Weighted cross-entropy of logits x @ weight^T without materialising all logits.

    x: (M, d), weight: (V, d), targets: (M,) with IGNORE for skipped rows, row_weights: (M,).
    Returns (differentiable scalar sum_i row_weights_i * CE_i, per-row CE (M,) without grad).
    """
    return _LinearCrossEntropy.apply(x, weight, targets, row_weights, chunk)


def future_loss(
    features: Tensor,  # (..., N, d) decoder outputs after the final norm, e.g. (B*T, N, d)
    head_weight: Tensor,  # (V, d) tied output head
    targets: Tensor,  # (..., N) with IGNORE for masked targets
    gamma: float,
    chunk: int,
) -> LossOutput:
    """sum_{t,k} gamma^(k-1) CE(x_{t+k}) / sum_{t,k} gamma^(k-1) over the counted targets."""
    N = targets.shape[-1]
    valid = targets != IGNORE  # (B, T, N)
    weights = distance_weights(N, gamma, features.device).expand_as(targets) * valid  # (B, T, N)
    norm = weights.sum().clamp_min(1e-12)
    weighted, per_row = linear_cross_entropy(
        features.reshape(-1, features.shape[-1]), head_weight, targets.reshape(-1),
        (weights / norm).reshape(-1), chunk,
    )
    n_targets = valid.reshape(-1, N).sum(0)  # (N,)
    per_distance = (per_row.view(-1, N).sum(0) / n_targets.clamp_min(1)).detach()
    return LossOutput(total=weighted, per_distance=per_distance, n_targets=n_targets)
