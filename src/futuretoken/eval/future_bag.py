"""E2: what h_t alone knows about the tokens after the next one.

FTP's own per-distance losses are teacher-forced (decoder step k reads x_{t+1} .. x_{t+k-1}),
so they mostly measure the decoder's local context, not the future held in h_t. Instead the
same linear probe reads the frozen state vectors of every model: ridge regression from the
standardised h_t to the *bag* of tokens x_{t+2} .. x_{t+N} (a multi-hot vector over the
`n_labels` most frequent future tokens; x_{t+1} is left out because the models are compared at
matched next-token loss). The probe is fitted on windows of the validation split's selection
half and scored on its report half (other documents, never trained on by either model).

Metric: held-out R^2, the share of the future bag's variance the probe explains (in percent).
Control: the same regression from the one-hot current token x_t alone (closed form: the bag's
mean after each token, shrunk by `alpha` pseudo-counts): what a bigram-like table already
knows, which a state holding more than its own token must beat. The fit is closed form and
deterministic; it takes about a second per model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import torch
from torch import Tensor

from .experiment import Claim, Experiment
from .windows import loss_windows


def future_bags(windows: Tensor, horizon: int, vocab: int, stride: int = 1) -> Tensor:
    """windows (n, T + N) -> (n * ceil(T / stride), V) multi-hot bags of x_{t+2} .. x_{t+N}, t = 0, stride, ..."""
    n, L = windows.shape
    T = L - horizon
    ahead = windows.unfold(1, horizon + 1, 1)[:, :T:stride, 2:]  # (n, T', N - 1): x_{t+2} .. x_{t+N}
    bags = torch.zeros(n * ahead.shape[1], vocab)
    bags.scatter_(1, ahead.reshape(len(bags), -1), 1.0)
    return bags


def r_squared(pred: Tensor, target: Tensor, train_mean: Tensor) -> float:
    """Held-out R^2 against the training mean, pooled over every label (percent)."""
    return float(100 * (1 - ((target - pred) ** 2).sum() / ((target - train_mean) ** 2).sum()))


@dataclass
class FutureBags:
    """The probe's fixed data (the same for every model): windows, labels, targets, the control."""

    fit_windows: Tensor  # (n, T + N) selection-half windows the probe is fitted on
    test_windows: Tensor  # (m, T + N) report-half windows it is scored on
    horizon: int
    stride: int
    labels: Tensor  # (K,) the future tokens predicted
    fit_y: Tensor  # (rows, K) multi-hot bags
    test_y: Tensor
    token_r2: float  # the current-token control's held-out R^2 (percent)

    @classmethod
    def build(cls, fit_windows: Tensor, test_windows: Tensor, horizon: int, vocab: int, n_labels: int = 256,
              stride: int = 2, alpha: float = 10.0) -> "FutureBags":
        full = future_bags(fit_windows, horizon, vocab, stride)
        labels = torch.argsort(full.sum(0), descending=True)[:n_labels]
        fit_y, test_y = full[:, labels], future_bags(test_windows, horizon, vocab, stride)[:, labels]
        mean = fit_y.mean(0)
        T = fit_windows.shape[1] - horizon
        current = fit_windows[:, :T:stride].reshape(-1)
        sums = torch.zeros(vocab, len(labels)).index_add_(0, current, fit_y - mean)
        counts = torch.bincount(current, minlength=vocab).float()[:, None]
        after_token = mean + sums / (counts + alpha)  # (V, K): the bag expected after each token
        token_r2 = r_squared(after_token[test_windows[:, :T:stride].reshape(-1)], test_y, mean)
        return cls(fit_windows, test_windows, horizon, stride, labels, fit_y, test_y, token_r2)


@torch.no_grad()
def states(model, windows: Tensor, horizon: int, stride: int, batch_size: int = 16) -> Tensor:
    """(rows, d) frozen h_t at the positions whose bags `future_bags` builds."""
    device = model.head_weight.device
    T = windows.shape[1] - horizon
    out = [model.encoder(windows[b : b + batch_size, :T].to(device))[:, ::stride].double().cpu()
           for b in range(0, len(windows), batch_size)]
    return torch.cat(out).reshape(-1, out[0].shape[-1])


class FutureBagResult(TypedDict):
    r2: float  # held-out R^2 of the probe on h_t (percent)
    token_r2: float  # the current-token control's (percent)
    positions: list[int]  # [fit, test] rows
    labels: int
    ridge: float


def future_bag_probe(model, bags: FutureBags, ridge: float = 0.1) -> FutureBagResult:
    """E2 on one model: held-out R^2 (percent) of the ridge probe from h_t to the future bag.

    `ridge` is the penalty per row on standardised features. Returns {"r2", "token_r2" (the control),
    "positions": [fit, test], "labels", "ridge"}.
    """
    x, x_test = states(model, bags.fit_windows, bags.horizon, bags.stride), \
        states(model, bags.test_windows, bags.horizon, bags.stride)
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-8)
    x, x_test = (x - mu) / sd, (x_test - mu) / sd
    y_mean = bags.fit_y.mean(0).double()
    gram = x.T @ x + ridge * len(x) * torch.eye(x.shape[1], dtype=x.dtype)
    weights = torch.linalg.solve(gram, x.T @ (bags.fit_y.double() - y_mean))  # (d, K)
    r2 = r_squared(x_test @ weights + y_mean, bags.test_y.double(), y_mean)
    return {"r2": r2, "token_r2": bags.token_r2, "positions": [len(x), len(x_test)], "labels": len(bags.labels),
            "ridge": ridge}


# --- E2 as the suite measures it ------------------------------------------------------------------
@dataclass
class FutureBagSettings:
    windows: int = 512  # windows fitting the probe (selection half) and scoring it (report half)
    labels: int = 256  # the most frequent future tokens predicted
    stride: int = 2  # every stride-th position


def prepare(data, settings: FutureBagSettings) -> FutureBags:
    """Bags over FTP's horizon (the longest among the arms), the same for every model."""
    length = data.block_size + data.horizon
    return FutureBags.build(loss_windows(data.halves["selection"], length, 1, settings.windows, seed=99 + data.seed),
                            loss_windows(data.halves["report"], length, 1, settings.windows, seed=98 + data.seed),
                            data.horizon, data.vocab, settings.labels, settings.stride)


def measure(model, bags: FutureBags, settings: FutureBagSettings, seed: int) -> FutureBagResult:
    return future_bag_probe(model, bags)


EXPERIMENT = Experiment(
    "E2", "future_bag", FutureBagSettings, measure, prepare, floor=measure,
    claims=(Claim("future_bag", "E2: future bag x_{t+2..t+N} explained by a linear probe on h_t (R^2, %)",
                  lambda r: r["r2"], margin=0.2, primary=False),))
