"""Measurements with known answers: n-gram baselines, held-out windows, state use, the future-bag
probe, smoothness, the matched-loss picker."""

import math
from collections import Counter

import numpy as np
import pytest
import torch

import futuretoken as ft
from conftest import tiny_config
from futuretoken.eval.future_bag import FutureBags, future_bag_probe, future_bags
from futuretoken.eval.matched import pick_matched_pair
from futuretoken.eval.ngram import NgramModel
from futuretoken.eval.smoothness import adjacent_cosine, other_document_partner, smoothness_experiment
from futuretoken.eval.state_use import next_token_losses, state_ablation
from futuretoken.eval.windows import document_spans, document_windows, split_halves


def kneser_ney_reference(tokens, V, prev, nxt):
    """Interpolated Kneser-Ney bigram, the textbook way: dictionaries and loops."""
    pairs = Counter(zip(tokens[:-1], tokens[1:]))
    n1, n2 = sum(c == 1 for c in pairs.values()), sum(c == 2 for c in pairs.values())
    D = n1 / (n1 + 2 * n2)
    left_of = Counter(w for (_, w) in pairs)  # distinct left neighbours of w
    cont = {w: (left_of.get(w, 0) + 1) / (len(pairs) + V) for w in range(V)}
    c_v = sum(c for (v, _), c in pairs.items() if v == prev)
    if c_v == 0:
        return cont[nxt]
    types_v = sum(1 for (v, _) in pairs if v == prev)
    return max(pairs.get((prev, nxt), 0) - D, 0) / c_v + D * types_v / c_v * cont[nxt]


def test_kneser_ney_bigram_matches_a_reference_loop_and_normalises():
    rng = np.random.default_rng(0)
    V = 12
    tokens = rng.integers(0, V - 2, 400)  # tokens V-2 and V-1 never occur: unseen histories and targets
    model = NgramModel.fit(tokens, V)
    for prev, nxt in [(0, 1), (3, 3), (V - 1, 2), (2, V - 1)]:
        assert math.exp(model.bigram_logp(np.array([prev]), np.array([nxt]))[0]) == pytest.approx(
            kneser_ney_reference(tokens.tolist(), V, prev, nxt))
    for prev in (0, V - 1):
        total = np.exp(model.bigram_logp(np.full(V, prev), np.arange(V))).sum()
        assert total == pytest.approx(1.0)
    windows = np.stack([tokens[:50], tokens[50:100]])
    ce = model.cross_entropy(windows)
    assert ce["bigram"] < ce["unigram"] < math.log(V)


def test_validation_halves_are_disjoint_documents():
    eot = 0
    tokens = np.array([5, 6, 0, 7, 8, 9, 0, 10, 0, 11, 12, 0])
    assert document_spans(tokens, eot) == [(0, 2), (3, 6), (7, 8), (9, 11)]
    halves = split_halves(tokens, eot)
    assert halves["selection"].tolist() == [5, 6, 0, 10, 0]
    assert halves["report"].tolist() == [7, 8, 9, 0, 11, 12, 0]
    with pytest.raises(ValueError, match="at least 2"):
        split_halves(np.array([1, 2, 3]), eot)


def test_document_windows_stay_inside_documents():
    eot = 0
    docs = [np.arange(1, 41), np.arange(50, 58), np.arange(60, 125)]  # 40, 8 and 65 tokens
    tokens = np.concatenate([np.append(d, eot) for d in docs])
    windows, doc_of = document_windows(tokens, eot, window=10, per_document=3, minimum=1)
    assert windows.shape == (6, 10) and doc_of.tolist() == [0, 0, 0, 2, 2, 2]
    assert (windows != eot).all() and all(np.all(np.diff(w.numpy()) == 1) for w in windows)  # contiguous text
    with pytest.raises(ValueError, match="only 6 windows"):
        document_windows(tokens, eot, window=10, per_document=3, minimum=7)


def test_state_ablation_is_zero_when_the_decoder_ignores_h():
    model = ft.FTP(tiny_config()).eval()
    windows = torch.randint(0, 64, (6, 17))
    result = state_ablation(model, windows, batch_size=4)
    np.testing.assert_allclose(result["own"], next_token_losses(model, windows), rtol=1e-5)
    assert result["increase"]["shuffled_state"]["mean"] != 0.0  # the decoder reads h at init...
    with torch.no_grad():  # ...until its pseudo-sequence no longer depends on h
        model.expand.weight.zero_()
    blind = state_ablation(model, windows, batch_size=4)
    for variant in ("mean_state", "shuffled_state"):
        assert blind["increase"][variant]["mean"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="FTP"):
        state_ablation(ft.GPT(tiny_config()), windows)


def test_future_bags_and_the_current_token_control():
    windows = torch.tensor([[1, 2, 3, 4, 5, 6]])
    bags = future_bags(windows, horizon=3, vocab=8)  # T = 3: positions 0..2, bags of x_{t+2}, x_{t+3}
    assert bags.shape == (3, 8)
    assert bags[0].nonzero().flatten().tolist() == [3, 4]
    assert future_bags(windows, horizon=3, vocab=8, stride=2).shape == (2, 8)  # positions 0 and 2
    periodic = torch.arange(16).repeat(40).unfold(0, 20, 7)[:60]  # the future is a function of x_t
    iid = torch.randint(0, 16, (60, 20), generator=torch.Generator().manual_seed(0))
    assert FutureBags.build(periodic[:40], periodic[40:], 4, 16, stride=1).token_r2 > 90  # percent
    assert abs(FutureBags.build(iid[:40], iid[40:], 4, 16, stride=1).token_r2) < 5
    assert len(FutureBags.build(iid[:40], iid[40:], 4, 16, n_labels=5).labels) == 5


def test_future_bag_probe_reads_the_state_without_training_the_model():
    model = ft.GPT(tiny_config(vocab_size=16, block_size=16))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    periodic = torch.arange(16).repeat(60).unfold(0, 20, 5)[:100]
    bags = FutureBags.build(periodic[:60], periodic[60:], horizon=4, vocab=16, stride=2)
    result = future_bag_probe(model, bags)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert result["r2"] > 50  # the random embedding identifies x_t, which fixes the future here
    iid = torch.randint(0, 16, (100, 20), generator=torch.Generator().manual_seed(1))
    noise = future_bag_probe(model, FutureBags.build(iid[:60], iid[60:], 4, 16, stride=2))
    assert noise["r2"] < 5  # nothing to find: the held-out R^2 stays near zero


class FakeEncoderModel:
    """A stand-in whose encoder returns given states, to check E3's arithmetic."""

    def __init__(self, hidden):
        self.hidden = hidden
        self.head_weight = torch.zeros(1)

    def encoder(self, windows):
        return self.hidden[windows[:, 0]]


def test_smoothness_removes_position_means_and_subtracts_the_cross_document_level():
    n, T, d = 6, 5, 4
    g = torch.Generator().manual_seed(0)
    doc_state = torch.randn(n, 1, d, generator=g)
    slow = doc_state.expand(n, T, d) + 0.05 * torch.randn(n, T, d, generator=g)  # a state per document
    windows = torch.arange(n)[:, None].expand(n, T).contiguous()
    docs = np.arange(n) // 2
    smooth = smoothness_experiment(FakeEncoderModel(slow + torch.linspace(0, 5, T)[:, None]), windows, docs)
    assert smooth["summary"]["adjacent"]["mean"] > 0.9  # the position offsets were removed
    assert smooth["summary"]["excess"]["mean"] > 0.5
    constant = smoothness_experiment(FakeEncoderModel(doc_state.expand(n, T, d) * 0 + 1.0
                                                      + 0.05 * torch.randn(n, T, d, generator=g)), windows, docs)
    assert abs(constant["summary"]["excess"]["mean"]) < 0.3  # a state that ignores the text is not "smooth"
    partner = other_document_partner(docs)
    assert (docs[partner] != docs).all()


def test_adjacent_cosine_on_constructed_vectors():
    d = 8
    constant = torch.ones(1, 5, d)
    assert torch.allclose(adjacent_cosine(constant), torch.ones(1, 4))
    alternating = torch.stack([torch.eye(d)[i % 2] for i in range(6)])[None]  # e0, e1, e0, ...: orthogonal steps
    assert torch.allclose(adjacent_cosine(alternating), torch.zeros(1, 5))
    offset = alternating + 10 * torch.ones(d)
    assert adjacent_cosine(offset).min() > 0.9
    centred = adjacent_cosine(offset, mean=offset.reshape(-1, d).mean(0))
    assert torch.allclose(centred, -torch.ones(1, 5), atol=1e-5)


def test_matched_pair_takes_the_weaker_runs_best_checkpoint():
    ftp = {100: 6.0, 200: 5.0, 300: 4.6}
    gpt = {100: 5.5, 200: 4.8, 300: 4.2, 400: 4.0}
    pair = pick_matched_pair(ftp, gpt)
    assert (pair.step_a, pair.step_b) == (300, 200)  # FTP's best (4.6) is matched by GPT's 4.8 checkpoint
    assert math.isclose(pair.gap, 0.2)
    swapped = pick_matched_pair(gpt, ftp)
    assert (swapped.step_a, swapped.step_b) == (200, 300)
    with pytest.raises(ValueError, match="at least one"):
        pick_matched_pair({}, gpt)


def test_future_lens_reads_a_planted_future_and_beats_the_current_token_control():
    """Windows repeat a random triple (a b c a b c ...), so x_{t+2} = x_{t-1}: a state holding the previous
    token predicts it exactly, while the current token alone cannot (the triples are random)."""
    from types import SimpleNamespace

    from futuretoken.eval.future_lens import FutureLensSettings, LensItems, future_lens

    V, T, N = 12, 18, 3
    g = torch.Generator().manual_seed(0)

    def windows(n):
        triples = torch.stack([torch.randperm(V, generator=g)[:3] for _ in range(n)])  # (n, 3) distinct tokens
        return triples.repeat(1, (T + N) // 3 + 1)[:, : T + N]

    class PreviousToken(torch.nn.Module):  # h_t = one-hot of x_{t-1} (zeros at t = 0)
        def forward(self, idx):
            shifted = torch.cat([torch.full_like(idx[:, :1], V), idx[:, :-1]], 1)
            return torch.nn.functional.one_hot(shifted, V + 1).float()[..., :V]

    model = SimpleNamespace(encoder=PreviousToken(), head_weight=torch.zeros(1))
    settings = FutureLensSettings(windows=200, labels=V, stride=1, ridge=1e-4)
    r = future_lens(model, LensItems(windows(200), windows(100), N, settings))
    assert r["offsets"] == [2, 3] and all(rows == 100 * T for rows in r["rows"])
    assert r["accuracy"][0] > 94  # every position but t = 0 (no previous token): 17 of 18
    assert r["token_accuracy"][0] < 20  # x_t says nothing of x_{t+2}, drawn with the triple (measured: 10%)
    assert r["token_accuracy"][1] == 100 and r["accuracy"][1] < 20  # x_{t+3} = x_t: the control is exact, x_{t-1} useless
