"""E5 (classification probe) machinery and the labelled sets it reads."""

from collections import Counter

import numpy as np
import pytest
import torch

import futuretoken as ft
from futuretoken.data.tokenizer import build_tokenizer
from futuretoken.eval import classification
from futuretoken.eval.classification import bag_of_words_baseline, probe_accuracy, random_init_like
from futuretoken.eval.labelled import load_labelled, stratified_subsample

TOPICS = {
    "sport": "match goal team player coach league score win season striker keeper referee".split(),
    "money": "bank market shares profit price investor rate economy trade stock inflation loss".split(),
    "music": "band album song singer concert tour guitar chart record stage melody drummer".split(),
}
FILLER = "the a of and to in is was it that on for".split()


def topical_texts(n_per_topic: int, seed: int = 0) -> tuple[list[str], list[int]]:
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for label, words in enumerate(TOPICS.values()):
        for _ in range(n_per_topic):
            texts.append(" ".join(rng.choice(words if rng.random() < 0.4 else FILLER) for _ in range(30)))
            labels.append(label)
    return texts, labels


@pytest.fixture(scope="module")
def tiny_models():
    texts, _ = topical_texts(20)
    tok = build_tokenizer("bpe:300", texts)
    cfg = ft.ModelConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=32, horizon=3,
                         pseudo_len=2, dec_layer=1, dec_head=2)
    models = {"ftp": ft.FTP(cfg).eval(), "gpt": ft.GPT(cfg).eval()}
    for m in models.values():
        m.tokenizer = tok
    return models


def test_probe_separates_separable_features():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    features = rng.normal(size=(120, 8)) + 6.0 * np.eye(3, 8)[labels]  # class means 6 sd apart
    r = probe_accuracy(features, labels)
    assert r["mean"] >= 0.99 and len(r["folds"]) == 5 and r["chance"] == pytest.approx(1 / 3)


def test_probe_on_random_labels_is_at_chance():
    # 400 held-out predictions in all: if each is right with p = 0.5, the accuracy has sd
    # sqrt(0.25 / 400) = 0.025, so 0.1 is a 4-sd band; a probe that leaked labels would score ~1.
    rng = np.random.default_rng(1)
    labels = rng.permutation(np.repeat([0, 1], 200))
    r = probe_accuracy(rng.normal(size=(400, 16)), labels, seed=3)
    assert r["chance"] == 0.5 and abs(r["mean"] - 0.5) < 0.1


def test_probe_rejects_too_small_classes():
    with pytest.raises(ValueError, match="fewer than folds"):
        probe_accuracy(np.zeros((7, 2)), [0, 0, 0, 0, 0, 1, 1])


def test_bag_of_words_beats_chance_on_topical_text():
    texts, labels = topical_texts(15)
    r = bag_of_words_baseline(texts, labels)
    assert r["mean"] > r["chance"] + 0.4


def test_stratified_subsample_is_proportional_and_deterministic():
    labels = [0] * 60 + [1] * 30 + [2] * 10
    idx = stratified_subsample(labels, 20, seed=4)
    assert Counter(labels[i] for i in idx) == {0: 12, 1: 6, 2: 2}
    assert np.array_equal(idx, stratified_subsample(labels, 20, seed=4))
    assert not np.array_equal(idx, stratified_subsample(labels, 20, seed=5))


def test_load_bbc():
    texts, labels, names = load_labelled("bbc", limit=50)
    assert names == ["business", "entertainment", "politics", "sports", "tech"]
    counts = Counter(labels)
    assert len(texts) == 50 and set(counts) == set(range(5)) and min(counts.values()) >= 7
    assert all(isinstance(t, str) and len(t) > 200 for t in texts)
    assert sum("the" in t.split() for t in texts) == 50  # English prose, not bytes or paths
    assert load_labelled("bbc", limit=50)[0] == texts  # deterministic


def test_load_rotten_tomatoes():
    texts, labels, names = load_labelled("rotten_tomatoes", limit=40, seed=2)
    assert names == ["rotten", "fresh"] and len(texts) == 40
    assert Counter(labels) == {1: 23, 0: 17}  # 7368 fresh : 5384 rotten after dropping duplicates
    assert all(len(t) > 10 for t in texts)


def test_random_init_like(tiny_models):
    model = tiny_models["ftp"]
    a, b = random_init_like(model, seed=7), random_init_like(model, seed=7)
    assert type(a) is type(model) and a.config == model.config and a.tokenizer is model.tokenizer
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.head_weight, random_init_like(model, seed=8).head_weight)


def test_classification_experiment_pipeline(tiny_models, monkeypatch):
    texts, labels = topical_texts(10)
    texts[0] = texts[0] * 5  # longer than block_size tokens: truncated
    monkeypatch.setattr(classification, "load_labelled", lambda name, limit, seed: (texts, labels, list(TOPICS)))
    r = classification.classification_experiment(tiny_models["gpt"], dataset="toy")
    assert r["n"] == 30 and r["truncated"] >= 1 and r["max_tokens"] == 64 and set(r["probe"]) == {"mean", "last"}
    assert all(0 <= p["mean"] <= 1 for p in r["probe"].values()) and r["bag_of_words"]["mean"] > 0.8
