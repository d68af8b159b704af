"""E5 (classification probe) machinery and the labelled sets it reads."""

import json
import re
from collections import Counter

import numpy as np
import pytest
import torch

import futuretoken as ft
from futuretoken.data.tokenizer import build_tokenizer
from futuretoken.eval import classification
from futuretoken.eval.classification import (
    above_chance,
    bag_of_words_baseline,
    pooled_features,
    probe_accuracy,
    random_init_like,
)
from futuretoken.eval.labelled import BROWN_TOPICS, LabelledSet, brown_passages, load_labelled, stratified_subsample
from futuretoken.infer.embed import embed

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
    assert r["accuracy"] >= 0.99 and len(r["folds"]) == len(r["chosen_C"]) == 5 and r["chance"] == pytest.approx(1 / 3)
    assert r["above_chance"]["passed"] and len(r["correct"]) == 120


def test_nested_cv_picks_a_small_C_on_noise_and_a_large_C_on_signal():
    # 70 / 30 labels. On pure noise the best inner accuracy is the majority rate, which only the
    # strongest regularisation (C = 1e-3: weights ~0, the unpenalised intercept decides) gets;
    # on a clean margin, C = 1e-3 still predicts the majority while C >= 1 separates the classes.
    rng = np.random.default_rng(0)
    labels = np.array([0] * 140 + [1] * 60)
    noise = probe_accuracy(rng.normal(size=(200, 40)), labels, seed=1)
    signal = rng.normal(size=(200, 5))
    signal[:, 0] = np.where(labels == 1, 1.0, -1.0) + 0.1 * rng.normal(size=200)
    clean = probe_accuracy(signal, labels, seed=1)
    assert max(noise["chosen_C"]) <= 0.01 and noise["accuracy"] == pytest.approx(0.7, abs=0.03)
    assert min(clean["chosen_C"]) >= 0.1 and clean["accuracy"] >= 0.98


def test_per_text_correctness_is_in_the_texts_order():
    # Separable features; five texts carry the other class's label: exactly those are wrong.
    rng = np.random.default_rng(2)
    labels = np.repeat([0, 1], 50)
    features = rng.normal(size=(100, 4)) + 5.0 * np.eye(2, 4)[labels]
    flipped = [3, 17, 58, 71, 96]
    labels[flipped] = 1 - labels[flipped]
    r = probe_accuracy(features, labels)
    assert np.flatnonzero(~np.array(r["correct"])).tolist() == flipped
    assert r["accuracy"] == pytest.approx(0.95)


def test_grouped_cv_keeps_each_document_on_one_side(monkeypatch):
    # 40 documents of 5 passages; a document's passages share its random vector and its label is
    # a coin flip. Seen documents are memorised (a split document would be scored ~1); unseen
    # ones can only be guessed, so grouped CV must land near chance.
    rng = np.random.default_rng(3)
    doc_labels = rng.permutation(np.repeat([0, 1], 20))
    groups = np.repeat(np.arange(40), 5)
    features = rng.normal(size=(40, 32))[groups] + 0.05 * rng.normal(size=(200, 32))
    labels = doc_labels[groups]
    splits = []
    real = classification._splitter

    def recording(folds, grouped, seed):
        splitter = real(folds, grouped, seed)
        split = splitter.split
        splitter.split = lambda X, y, g: [splits.append((g, tr, te)) or (tr, te) for tr, te in split(X, y, g)]
        return splitter

    monkeypatch.setattr(classification, "_splitter", recording)
    ungrouped = probe_accuracy(features, labels)
    splits.clear()
    grouped = probe_accuracy(features, labels, groups=groups)
    assert ungrouped["accuracy"] > 0.95 and abs(grouped["accuracy"] - 0.5) < 0.2
    assert len(splits) == 5 + 5 * 3  # outer folds, then 3 inner folds in each
    assert all(not set(g[tr]) & set(g[te]) for g, tr, te in splits)


def test_majority_guard():
    at_chance = above_chance([True] * 60 + [False] * 40, chance=0.6)
    assert not at_chance["passed"] and at_chance["p_value"] > 0.4 and at_chance["majority_rate"] == 0.6
    above = above_chance([True] * 75 + [False] * 25, chance=0.6)
    assert above["passed"] and above["p_value"] < 0.01 and above["accuracy"] == 0.75


def test_probe_on_random_labels_is_at_chance():
    # 400 held-out predictions in all: if each is right with p = 0.5, the accuracy has sd
    # sqrt(0.25 / 400) = 0.025, so 0.1 is a 4-sd band; a probe that leaked labels would score ~1.
    rng = np.random.default_rng(1)
    labels = rng.permutation(np.repeat([0, 1], 200))
    r = probe_accuracy(rng.normal(size=(400, 16)), labels, seed=3)
    assert r["chance"] == 0.5 and abs(r["accuracy"] - 0.5) < 0.1 and not r["above_chance"]["passed"]


def test_probe_rejects_too_small_classes():
    with pytest.raises(ValueError, match="fewer than folds"):
        probe_accuracy(np.zeros((7, 2)), [0, 0, 0, 0, 0, 1, 1])


def test_bag_of_words_beats_chance_on_topical_text():
    texts, labels = topical_texts(15)
    r = bag_of_words_baseline(texts, labels)
    assert r["accuracy"] > r["chance"] + 0.4 and len(r["chosen_C"]) == 5


def test_stratified_subsample_is_proportional_and_deterministic():
    labels = [0] * 60 + [1] * 30 + [2] * 10
    idx = stratified_subsample(labels, 20, seed=4)
    assert Counter(labels[i] for i in idx) == {0: 12, 1: 6, 2: 2}
    assert np.array_equal(idx, stratified_subsample(labels, 20, seed=4))
    assert not np.array_equal(idx, stratified_subsample(labels, 20, seed=5))


def test_load_bbc():
    bbc = load_labelled("bbc", limit=50)
    assert bbc.label_names == ["business", "entertainment", "politics", "sports", "tech"] and bbc.groups is None
    counts = Counter(bbc.labels)
    assert len(bbc.texts) == 50 and set(counts) == set(range(5)) and min(counts.values()) >= 7
    assert all(isinstance(t, str) and len(t) > 200 for t in bbc.texts)
    assert sum("the" in t.split() for t in bbc.texts) == 50  # English prose, not bytes or paths
    assert load_labelled("bbc", limit=50) == bbc  # deterministic
    assert len(load_labelled("bbc").texts) == 2127


def test_load_rotten_tomatoes():
    rt = load_labelled("rotten_tomatoes", limit=40, seed=2)
    assert rt.label_names == ["rotten", "fresh"] and len(rt.texts) == 40
    assert Counter(rt.labels) == {1: 23, 0: 17}  # 7368 fresh : 5384 rotten after dropping duplicates
    assert all(len(t) > 10 for t in rt.texts)


def test_load_brown_passages_grouped_by_document():
    brown = load_labelled("brown")
    assert brown.label_names == list(BROWN_TOPICS) == ["press", "nonfiction", "learned", "fiction"]
    labels_of = {}
    for text, label, doc in zip(brown.texts, brown.labels, brown.groups):
        labels_of.setdefault(doc, set()).add(label)
        assert re.fullmatch(r"c[a-r]\d\d", doc) and len(text.split()) >= 50
    assert all(len(v) == 1 for v in labels_of.values()) and len(labels_of) == 246  # the probe part
    docs_per_topic = Counter(next(iter(v)) for v in labels_of.values())
    assert min(docs_per_topic.values()) >= 40 and len(brown.texts) > 4000
    joined = " ".join(brown.texts)
    assert not re.search(r"\w/(at|nn|nns|in|vbd|jj|cc|np)\b|``|'' ", joined) and "the jury" in joined  # tags gone
    small = load_labelled("brown", limit=200, seed=1)
    assert len(small.texts) == len(small.groups) == 200
    assert all(brown.groups[brown.texts.index(t)] == g for t, g in zip(small.texts, small.groups))


def test_brown_passages_are_whole_sentences_of_at_least_the_target_length():
    from futuretoken.data.brown import BrownDocument

    sentence = lambda i, n: " ".join(["word"] * (n - 1) + [f"end{i}."])  # noqa: E731
    doc = BrownDocument("cz99", "news", ((sentence(0, 60), sentence(1, 30)), (sentence(2, 30), sentence(3, 20))))
    assert brown_passages(doc, min_words=80) == [f"{sentence(0, 60)} {sentence(1, 30)}",
                                                  f"{sentence(2, 30)} {sentence(3, 20)}"]
    assert brown_passages(doc, min_words=100) == [" ".join(sentence(i, n) for i, n in enumerate((60, 30, 30, 20)))]
    tail = BrownDocument("cz98", "news", ((sentence(0, 100), sentence(1, 10)),))
    assert brown_passages(tail, min_words=100) == [f"{sentence(0, 100)} {sentence(1, 10)}"]  # short tail joins


def test_random_init_like(tiny_models):
    model = tiny_models["ftp"]
    a, b = random_init_like(model, seed=7), random_init_like(model, seed=7)
    assert type(a) is type(model) and a.config == model.config and a.tokenizer is model.tokenizer
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.head_weight, random_init_like(model, seed=8).head_weight)


def toy_set(monkeypatch, n_per_topic: int = 10) -> LabelledSet:
    texts, labels = topical_texts(n_per_topic)
    texts[0] = texts[0] * 5  # longer than block_size tokens: truncated
    data = LabelledSet(texts, labels, list(TOPICS), None)
    monkeypatch.setattr(classification, "load_labelled", lambda name, limit, seed: data)
    return data


def test_classification_experiment_pipeline(tiny_models, monkeypatch):
    toy_set(monkeypatch)
    r = classification.classification_experiment(tiny_models["gpt"], dataset="toy")
    assert r["n"] == 30 and r["truncated"] >= 1 and r["max_tokens"] == 64 and set(r["probe"]) == {"mean", "last"}
    assert r["chance"] == pytest.approx(1 / 3) and r["documents"] is None
    for p in (*r["probe"].values(), r["bag_of_words"]):
        assert 0 <= p["accuracy"] <= 1 and len(p["correct"]) == 30 and len(p["chosen_C"]) == 5
        assert p["accuracy"] == pytest.approx(np.mean(p["correct"])) and "p_value" in p["above_chance"]
    assert r["bag_of_words"]["accuracy"] > 0.8
    assert json.loads(json.dumps(r)) == r  # JSON-serialisable as it is
    again = classification.classification_experiment(tiny_models["gpt"], dataset="toy")
    assert again == r  # deterministic given the seed


def test_default_limits_keep_all_bbc_and_4000_rotten_tomatoes(tiny_models, monkeypatch):
    asked = []
    monkeypatch.setattr(classification, "load_labelled",
                        lambda name, limit, seed: asked.append((name, limit)) or LabelledSet(["a b"], [0], ["x"], None))
    for name in ("bbc", "rotten_tomatoes", "brown"):
        classification.probe_texts(tiny_models["gpt"], name)
    classification.probe_texts(tiny_models["gpt"], "rotten_tomatoes", limit=3000)
    assert asked == [("bbc", None), ("rotten_tomatoes", 4000), ("brown", None), ("rotten_tomatoes", 3000)]


def test_pooled_features_match_embed(tiny_models, monkeypatch):
    model = tiny_models["ftp"]
    ids = model.tokenizer.encode_batch(topical_texts(3)[0])
    monkeypatch.setattr(classification, "EMBED_CHUNK", 4)  # several chunks
    pooled = pooled_features(model, ids)
    for pool in ("mean", "last"):
        np.testing.assert_allclose(pooled[pool], embed(model, ids, pool=pool), atol=1e-5)


def test_measure_classification_and_the_shared_bag_of_words(tiny_models, monkeypatch):
    toy_set(monkeypatch)
    calls = []
    real = classification.bag_of_words_baseline
    monkeypatch.setattr(classification, "bag_of_words_baseline", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(classification, "_BAG_OF_WORDS", {})
    settings = classification.ClassificationSettings(datasets=("toy",), limit=None)
    ftp = classification.EXPERIMENT.measure(tiny_models["ftp"], None, settings, 0)
    gpt = classification.EXPERIMENT.measure(tiny_models["gpt"], None, settings, 0)
    assert set(ftp) == {"toy"} and ftp["toy"]["n"] == 30
    assert ftp["toy"]["bag_of_words"] == gpt["toy"]["bag_of_words"] and len(calls) == 1  # same text seen: once




def test_the_C_grid_grows_until_no_fold_picks_an_edge():
    # A clean margin with many noise features: the inner CV keeps preferring less regularisation than
    # the default grid's top (C = 100) offers until the separating direction dominates.
    rng = np.random.default_rng(3)
    labels = np.array([0] * 100 + [1] * 100)
    x = rng.normal(size=(200, 30))
    x[:, 0] = np.where(labels == 1, 1.0, -1.0) * 0.05 + 0.001 * rng.normal(size=200)
    small_grid = classification.probe_accuracy(x, labels, seed=0, Cs=(1e-4, 1e-3))
    assert max(small_grid["chosen_C"]) > 1e-3  # beyond the grid it was given: the grid grew upwards
    assert not any(small_grid["C_at_edge"]) and small_grid["accuracy"] >= 0.95
