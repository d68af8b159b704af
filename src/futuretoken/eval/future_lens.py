"""E2b, the future lens: can a linear probe read x_{t+k} itself (k = 2..N) off the frozen h_t?

E2 asks how much of the *bag* of coming tokens h_t holds; the lens asks, offset by offset, for
the token at t + k. Per offset k, a ridge regression from the standardised h_t to the one-hot
x_{t+k} over the `labels` most frequent tokens is fitted on windows of the validation split's
selection half and scored on its report half (rows whose x_{t+k} is among those tokens); the
prediction is the arg max. Metric: held-out top-1 accuracy (percent) per offset.
Control: the current token alone: the most frequent x_{t+k} after each token in the fit rows
(the overall most frequent where a token was not seen), scored on the same test rows: what a
table of x_t already knows, which a state that looks ahead must beat.
Secondary: linear decodability is a lower bound on what h_t holds, and not a claim of the paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import torch
from torch import Tensor

from .experiment import Claim, Experiment
from .future_bag import states
from .windows import loss_windows


@dataclass
class FutureLensSettings:
    windows: int = 256  # windows fitting the probes (selection half) and scoring them (report half)
    labels: int = 256  # the most frequent tokens a probe chooses among
    stride: int = 2  # every stride-th position
    ridge: float = 0.1  # penalty per row on standardised features


@dataclass(frozen=True)
class LensItems:
    fit_windows: Tensor  # (n, T + N)
    test_windows: Tensor  # (m, T + N)
    horizon: int
    settings: FutureLensSettings


class FutureLensResult(TypedDict):
    offsets: list[int]  # k = 2..N
    accuracy: list[float]  # the probe's held-out top-1 accuracy per offset (percent)
    token_accuracy: list[float]  # the current-token control's (percent)
    rows: list[int]  # test rows per offset (x_{t+k} among the labels)


def targets_at(windows: Tensor, horizon: int, k: int, stride: int) -> tuple[Tensor, Tensor]:
    """(current tokens x_t, tokens x_{t+k}) at positions t = 0, stride, ... < T: both (n * ceil(T / stride),)."""
    T = windows.shape[1] - horizon
    return windows[:, :T:stride].reshape(-1), windows[:, k : T + k : stride].reshape(-1)


def lens_at(x: Tensor, x_test: Tensor, fit: Tensor, test: Tensor, fit_current: Tensor, test_current: Tensor,
            n_labels: int, ridge: float) -> tuple[float, float, int]:
    """One offset: (probe accuracy %, current-token control accuracy %, test rows). x, x_test: (rows, d)
    standardised states; fit/test: the target tokens; *_current: the tokens x_t of the same rows."""
    labels = torch.bincount(fit).argsort(descending=True)[:n_labels]  # (K,)
    index = torch.full((int(max(fit.max(), test.max())) + 1,), -1, dtype=torch.long)
    index[labels] = torch.arange(len(labels))
    y_fit, y_test = index[fit], index[test]  # -1: not among the labels
    keep_fit, keep_test = y_fit >= 0, y_test >= 0
    x, y_fit = x[keep_fit], y_fit[keep_fit]
    x_test, y_test = x_test[keep_test], y_test[keep_test]
    onehot = torch.nn.functional.one_hot(y_fit, len(labels)).double()  # (rows, K)
    gram = x.T @ x + ridge * len(x) * torch.eye(x.shape[1], dtype=x.dtype)
    weights = torch.linalg.solve(gram, x.T @ (onehot - onehot.mean(0)))  # (d, K)
    probe = float(((x_test @ weights).argmax(1) == y_test).double().mean() * 100)
    # Control: the most frequent label after each current token (fit rows), else the most frequent overall.
    current, current_test = fit_current[keep_fit], test_current[keep_test]
    vocab = int(max(current.max(), current_test.max())) + 1
    table = torch.zeros(vocab, len(labels)).index_put_((current, y_fit), torch.ones(len(y_fit)), accumulate=True)
    table[:, 0] += 0.5  # unseen tokens (all-zero rows) and ties fall back to the most frequent label
    control = float((table[current_test].argmax(1) == y_test).double().mean() * 100)
    return probe, control, int(len(y_test))


def future_lens(model, items: LensItems) -> FutureLensResult:
    s, N = items.settings, items.horizon
    x = states(model, items.fit_windows, N, s.stride)  # (rows, d)
    x_test = states(model, items.test_windows, N, s.stride)
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-8)
    x, x_test = (x - mu) / sd, (x_test - mu) / sd
    result: FutureLensResult = {"offsets": [], "accuracy": [], "token_accuracy": [], "rows": []}
    for k in range(2, N + 1):
        fit_current, fit = targets_at(items.fit_windows, N, k, s.stride)
        test_current, test = targets_at(items.test_windows, N, k, s.stride)
        probe, control, rows = lens_at(x, x_test, fit, test, fit_current, test_current, s.labels, s.ridge)
        for key, value in (("offsets", k), ("accuracy", probe), ("token_accuracy", control), ("rows", rows)):
            result[key].append(value)
    return result


def prepare(data, settings: FutureLensSettings) -> LensItems:
    length = data.block_size + data.horizon
    return LensItems(loss_windows(data.halves["selection"], length, 1, settings.windows, seed=97 + data.seed),
                     loss_windows(data.halves["report"], length, 1, settings.windows, seed=96 + data.seed),
                     data.horizon, settings)


def measure(model, items: LensItems, settings: FutureLensSettings, seed: int) -> FutureLensResult:
    return future_lens(model, items)


EXPERIMENT = Experiment(
    "E2b", "future_lens", FutureLensSettings, measure, prepare, floor=measure,
    enabled=lambda s: s.windows > 0,
    claims=(Claim("future_lens_2", "E2b: x_{t+2} decoded linearly from h_t (top-1 accuracy, %)",
                  lambda r: r["accuracy"][0], margin=0.5, primary=False),))
