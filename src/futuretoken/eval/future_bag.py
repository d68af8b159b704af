"""E2: what h_t alone knows about the tokens after the next one.

FTP's own per-distance losses are teacher-forced (decoder step k reads x_{t+1} .. x_{t+k-1}),
so they mostly measure the decoder's local context, not the future held in h_t. Instead the
same linear probe is trained on the frozen state vectors of every model: from h_t, predict
the *bag* of tokens x_{t+2} .. x_{t+N} (a multi-label target over the vocabulary; the next
token x_{t+1} is left out because models are compared at matched next-token loss). A second
probe reads only the current token x_t (one-hot): the share of the future a bigram-like table
already gives, the control that h_t must beat to hold more than its own token.

Metric: the held-out binary cross-entropy of the probe, summed over the vocabulary and averaged
over positions, subtracted from that of a bias-only probe (the token frequencies): nats of
future-bag information per position. Probes train on windows of the training split (the same
windows for every model), and are scored on held-out windows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def future_bags(windows: Tensor, horizon: int, vocab: int) -> Tensor:
    """windows (n, T + N) -> (n * T, V) multi-hot bags of x_{t+2} .. x_{t+N} for t < T."""
    n, L = windows.shape
    T = L - horizon
    ahead = windows.unfold(1, horizon + 1, 1)[:, :T, 2:]  # (n, T, N - 1): x_{t+2} .. x_{t+N}
    bags = torch.zeros(n * T, vocab)
    bags.scatter_(1, ahead.reshape(n * T, -1), 1.0)
    return bags


@torch.no_grad()
def states(model, windows: Tensor, horizon: int, batch_size: int = 16) -> Tensor:
    """(n * T, d) frozen h_t at the positions whose future bags `future_bags` builds."""
    device = model.head_weight.device
    T = windows.shape[1] - horizon
    out = [model.encoder(windows[b : b + batch_size, :T].to(device)).float().cpu()
           for b in range(0, len(windows), batch_size)]
    return torch.cat(out).reshape(-1, out[0].shape[-1])


def _probe_bce(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, steps: int, lr: float,
               seed: int) -> float:
    """Held-out BCE (summed over labels, mean over rows) of a linear probe trained with full-batch Adam."""
    torch.manual_seed(seed)
    probe = torch.nn.Linear(train_x.shape[1], train_y.shape[1])
    freq = train_y.mean(0).clamp(1e-6, 1 - 1e-6)
    with torch.no_grad():  # start from the bias-only probe: token frequencies
        probe.weight.zero_()
        probe.bias.copy_(torch.log(freq / (1 - freq)))
    optimizer = torch.optim.Adam(probe.parameters(), lr=lr)
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(probe(train_x), train_y, reduction="sum") / len(train_x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float(F.binary_cross_entropy_with_logits(probe(test_x), test_y, reduction="sum") / len(test_x))


def _standardise(train: Tensor, test: Tensor) -> tuple[Tensor, Tensor]:
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return (train - mean) / std, (test - mean) / std


def _bce_of_probabilities(p: Tensor, y: Tensor) -> Tensor:
    """(rows, V) probabilities and multi-hot targets -> (rows,) BCE summed over the vocabulary."""
    p = p.clamp(1e-6, 1 - 1e-6)
    return -(y * p.log() + (1 - y) * (1 - p).log()).sum(1)


def bias_only_bce(train_windows: Tensor, test_windows: Tensor, horizon: int, vocab: int) -> float:
    """Held-out BCE of the bias-only probe: every token predicted with its training frequency."""
    freq = future_bags(train_windows, horizon, vocab).mean(0)
    test_y = future_bags(test_windows, horizon, vocab)
    return float(_bce_of_probabilities(freq.expand_as(test_y), test_y).mean())


def current_token_gain(train_windows: Tensor, test_windows: Tensor, horizon: int, vocab: int,
                       alpha: float = 1.0) -> float:
    """The control: nats per position that the current token x_t alone gives about the future bag.

    The best probe reading a one-hot x_t is a table: p(v in bag | x_t = u), estimated from the
    training windows' counts, smoothed towards the token's overall frequency by `alpha` pseudo-rows.
    """
    T = train_windows.shape[1] - horizon
    train_y = future_bags(train_windows, horizon, vocab)
    current = train_windows[:, :T].reshape(-1)
    counts = torch.zeros(vocab, vocab).index_add_(0, current, train_y)  # (V, V): bags following token u
    rows = torch.bincount(current, minlength=vocab).float()[:, None]
    freq = train_y.mean(0)
    table = (counts + alpha * freq) / (rows + alpha)
    test_y = future_bags(test_windows, horizon, vocab)
    test_current = test_windows[:, :T].reshape(-1)
    token = float(_bce_of_probabilities(table[test_current], test_y).mean())
    return bias_only_bce(train_windows, test_windows, horizon, vocab) - token


def future_bag_probe(model, train_windows: Tensor, test_windows: Tensor, horizon: int, steps: int = 150,
                     lr: float = 0.05, seed: int = 0) -> dict:
    """E2 on one model. Windows are (n, T + horizon) token windows, the same ones for every model.

    Returns {"gain": nats per position of the h_t probe over the bias-only probe, "probe_bce",
    "base_bce", "positions": [train, test], "horizon", "steps"}.
    """
    V = model.config.vocab_size
    train_y, test_y = future_bags(train_windows, horizon, V), future_bags(test_windows, horizon, V)
    base = bias_only_bce(train_windows, test_windows, horizon, V)
    train_x, test_x = _standardise(states(model, train_windows, horizon), states(model, test_windows, horizon))
    probe = _probe_bce(train_x, train_y, test_x, test_y, steps, lr, seed)
    return {"gain": base - probe, "probe_bce": probe, "base_bce": base, "positions": [len(train_y), len(test_y)],
            "horizon": horizon, "steps": steps}
