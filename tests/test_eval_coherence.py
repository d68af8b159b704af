"""E4 (topic coherence): prompt items, copy and repetition controls, drift, calibration, the experiment."""

import copy
import re
import zlib

import numpy as np
import pytest

import futuretoken as ft
from futuretoken.data.tokenizer import build_tokenizer
from futuretoken.eval.coherence import (
    coherence_calibration,
    coherence_experiment,
    drift_slopes,
    floor_sources,
    minilm_judge,
    normalised_score,
    score_windows,
    split_windows,
)
from futuretoken.eval.coherence_items import coherence_items, document_spans, items_fingerprint
from futuretoken.eval.text_controls import copy_rate, distinct_n, longest_copy
from futuretoken.infer.sampling import SamplingConfig

TOPIC_WORDS = [
    "rain cloud storm wind snow thunder forecast frost sunny humid breeze drizzle".split(),
    "oven flour butter recipe bake sugar dough kettle spoon simmer garlic onion".split(),
    "rocket orbit planet moon comet galaxy launch astronaut telescope crater nebula asteroid".split(),
]
FILLER = "the a of and to in is was it that on for".split()


def bow_judge(texts: list[str]) -> np.ndarray:
    """A stand-in sentence encoder: hashed bag of words (64 buckets)."""
    out = np.zeros((len(texts), 64))
    for i, text in enumerate(texts):
        for w in re.findall(r"[a-z]+", text.lower()):
            out[i, zlib.crc32(w.encode()) % 64] += 1
    return out


def window_scores(prompt, windows, judge):
    return score_windows([prompt], [windows], judge)[0]


def split_with_documents(lengths: list[int]) -> np.ndarray:
    """A split of documents of the given lengths, each followed by end-of-text (0); token = 1 + its position."""
    parts = []
    for n in lengths:
        parts += [np.arange(1, n + 1) + sum(len(p) for p in parts), [0]]
    return np.concatenate(parts).astype(np.uint16)


@pytest.fixture(scope="module")
def topical():
    """A held-out split of 18 single-topic documents, its tokenizer, and tiny untrained FTP and GPT models."""
    rng = np.random.default_rng(0)
    docs = [" ".join(rng.choice(TOPIC_WORDS[d % 3] if rng.random() < 0.8 else FILLER) for _ in range(150))
            for d in range(18)]
    tok = build_tokenizer("bpe:400", docs)
    val = np.concatenate([[*tok.encode(doc), tok.eot_token] for doc in docs]).astype(np.uint16)
    cfg = ft.ModelConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=32, horizon=3,
                         pseudo_len=2, dec_layer=1, dec_head=2)
    models = {"ftp": ft.FTP(cfg).eval(), "gpt": ft.GPT(cfg).eval()}
    for m in models.values():
        m.tokenizer = tok
    items = coherence_items(val, tok.eot_token, n_prompts=12, prompt_tokens=16, continuation_tokens=32, max_per_document=2)
    return {"tok": tok, "val": val, "models": models, "items": items}


def test_items_lie_inside_documents_and_spread_over_them():
    lengths = [5, 300, 40, 200, 120, 0, 90]  # with 8 + 8 + 16 tokens needed: documents 1, 2, 3, 4, 6 have room
    val = split_with_documents(lengths)
    items = coherence_items(val, 0, n_prompts=10, prompt_tokens=8, continuation_tokens=16, max_per_document=3)
    docs = document_spans(val, 0)
    assert len(items) == 10 and len(docs) == len(lengths) + 1  # the empty run after the last end-of-text
    per_doc = {}
    for it in items:
        lo, hi = docs[it.document]
        assert len(it.prompt) == 8 and len(it.continuation) == 16
        assert lo + 8 <= it.start and it.start + 24 <= hi  # past the opening, wholly inside its document
        assert [*it.prompt, *it.continuation] == val[it.start : it.start + 24].tolist() and 0 not in it.prompt
        per_doc.setdefault(it.document, []).append(it.start)
    assert set(per_doc) == {1, 2, 3, 4, 6}  # every document with room before any gets a third
    assert max(len(s) for s in per_doc.values()) <= 3 and len(per_doc[2]) == 1  # document 2 has room for one
    assert all(b - a >= 24 for s in per_doc.values() for a, b in zip(s, s[1:]))  # items never overlap
    assert [(it.document, it.start) for it in items] == sorted((it.document, it.start) for it in items)
    again = coherence_items(val, 0, n_prompts=10, prompt_tokens=8, continuation_tokens=16, max_per_document=3)
    other = coherence_items(val, 0, n_prompts=10, prompt_tokens=8, continuation_tokens=16, max_per_document=3, seed=1)
    assert items_fingerprint(again) == items_fingerprint(items) != items_fingerprint(other)


def test_items_say_how_many_the_split_can_supply():
    val = split_with_documents([5, 300, 40, 200, 120, 0, 90])  # room for 3 + 1 + 3 + 3 + 3 items
    with pytest.raises(ValueError, match="at most 13 items"):
        coherence_items(val, 0, n_prompts=14, prompt_tokens=8, continuation_tokens=16, max_per_document=3)


def test_drift_slope_is_the_least_squares_slope():
    cos = np.array([[0.5, 0.4, 0.3, 0.2], [0.1, 0.1, 0.1, 0.1], [0.0, 0.3, 0.0, 0.3]])
    assert drift_slopes(cos) == pytest.approx([-0.1, 0.0, 0.06])
    with pytest.raises(ValueError, match="at least two windows"):
        drift_slopes(cos[:, :1])


def test_copy_and_repetition_controls():
    prompt = "The storm brought heavy rain to the northern hills last night."
    fresh = "Bakers mixed flour and butter before the oven was warm enough."
    assert copy_rate(prompt, prompt) == 1 and copy_rate(prompt, fresh) == 0
    assert copy_rate(prompt, "heavy rain to the sea and more") == pytest.approx(2 / 5)
    assert longest_copy(prompt, "so the storm brought heavy rain again") == 5 and longest_copy(prompt, fresh) == 1
    assert distinct_n(fresh, 1) == distinct_n(fresh, 2) == 1
    assert distinct_n("rain snow rain snow rain snow", 1) == pytest.approx(2 / 6)
    assert distinct_n("rain snow rain snow rain snow", 2) == pytest.approx(2 / 5)
    assert distinct_n("rain", 2) == copy_rate(prompt, "rain") == 0  # no bigrams: degenerate, copies nothing


def test_floor_continuations_come_from_other_documents(topical):
    items = topical["items"]
    source = floor_sources(items, seed=3)
    assert all(items[j].document != it.document for it, j in zip(items, source))
    assert len(set(source)) == len(items)  # room in other documents: each continuation is one floor
    with pytest.raises(ValueError, match="two documents"):
        floor_sources([items[0], items[0]])


def test_calibration_places_the_real_continuation_above_floor_and_salad(topical):
    cal = coherence_calibration(topical["items"], topical["tok"], judge=bow_judge, window=8)
    n = len(topical["items"])
    assert cal["n_prompts"] == n and cal["n_windows"] == 4 and len(cal["floor_source"]) == n
    for name in ("ceiling", "floor", "word_salad"):
        per = cal[name]["per_prompt"]
        assert len(per["cosine"]) == len(per["drift"]) == len(per["distinct_2"]) == n and len(per["windows"][0]) == 4
    means = {name: cal[name]["mean"]["cosine"] for name in ("ceiling", "floor", "word_salad")}
    assert means["ceiling"] > means["floor"] + 0.1 and means["ceiling"] > means["word_salad"] + 0.1
    assert cal == coherence_calibration(topical["items"], topical["tok"], judge=bow_judge, window=8)


@pytest.mark.parametrize("kind", ["ftp", "gpt"])
def test_experiment_is_paired_across_identical_models(topical, kind):
    model, items = topical["models"][kind], topical["items"][:8]
    r = coherence_experiment(model, items, judge=bow_judge, max_new_tokens=16, window=8, batch_size=5)
    per, n = r["per_prompt"], len(items)
    assert r["n_prompts"] == n and r["n_windows"] == 2 and r["items"] == items_fingerprint(items)
    assert all(len(per[k]) == n for k in ("cosine", "drift", "copy_3gram", "longest_copy", "distinct_1", "eot", "text"))
    assert np.isfinite(r["per_prompt"]["windows"]).all() and r["mean"]["cosine"] == pytest.approx(np.mean(per["cosine"]))
    twin = coherence_experiment(copy.deepcopy(model), items, judge=bow_judge, max_new_tokens=16, window=8, batch_size=5)
    assert twin["per_prompt"] == per  # same items, seed and batches: the same samples, prompt by prompt
    other = coherence_experiment(model, items, judge=bow_judge, seed=1, max_new_tokens=16, window=8, batch_size=5)
    assert other["per_prompt"]["text"] != per["text"]


def test_experiment_results_follow_the_item_order(topical):
    model, items = topical["models"]["gpt"], topical["items"][:6]
    greedy = dict(judge=bow_judge, max_new_tokens=16, window=8, sampling=SamplingConfig(temperature=0), batch_size=1)
    forward = coherence_experiment(model, items, **greedy)["per_prompt"]
    backward = coherence_experiment(model, items[::-1], **greedy)["per_prompt"]
    assert {k: v[::-1] for k, v in backward.items()} == forward


def test_experiment_checks_its_settings(topical):
    model, items = topical["models"]["gpt"], topical["items"]
    with pytest.raises(ValueError, match="exceeds block_size=64"):
        coherence_experiment(model, items, judge=bow_judge, max_new_tokens=60, window=8)
    with pytest.raises(ValueError, match="needs at least two"):
        coherence_experiment(model, items, judge=bow_judge, max_new_tokens=32, window=17)


def test_normalised_score_places_a_model_between_floor_and_ceiling(topical):
    items = topical["items"]
    cal = coherence_calibration(items, topical["tok"], judge=bow_judge, window=8)
    r = coherence_experiment(topical["models"]["ftp"], items, judge=bow_judge, max_new_tokens=32, window=8)
    place = normalised_score(r, cal)
    f, c = cal["floor"]["mean"]["cosine"], cal["ceiling"]["mean"]["cosine"]
    assert place["normalised"] == pytest.approx((r["mean"]["cosine"] - f) / (c - f))
    assert place["above_floor"][0] == pytest.approx(r["per_prompt"]["cosine"][0] - cal["floor"]["per_prompt"]["cosine"][0])
    with pytest.raises(ValueError, match="differ in 'items'"):
        normalised_score(r, coherence_calibration(items[:-1], topical["tok"], judge=bow_judge, window=8))


def test_window_scores_prefer_on_topic():
    prompt = "the striker scored a goal and the team won the match"
    on = ["the keeper saved a goal late in the match", "the coach praised the team and the striker"]
    off = ["the bank raised the rate as inflation hit the economy", "shares fell as investor profit dropped"]
    s_on, s_off = window_scores(prompt, on, bow_judge), window_scores(prompt, off, bow_judge)
    assert s_on.shape == s_off.shape == (2,) and s_on.min() > s_off.max()


def test_split_windows(topical):
    tok = topical["tok"]
    ids = tok.encode("the storm brought rain") + [tok.eot_token] + tok.encode("the oven and flour")
    windows = split_windows(ids, tok, 4)
    assert len(windows) == len(ids) // 4
    assert "".join(windows).replace("\n", "") == tok.decode([t for t in ids[: 4 * len(windows)] if t != tok.eot_token])
    assert "<|endoftext|>" not in "".join(windows) and "\n" in "".join(windows)


def test_minilm_judge_offline():
    judge = minilm_judge()
    prompt = "The striker scored twice as the home team won the football match."
    on, off = window_scores(prompt, ["The goalkeeper saved a penalty in the second half of the game.",
                                     "The central bank raised interest rates to curb inflation."], judge)
    assert judge(["a sentence"]).shape == (1, 384)
    assert on > 0.3 and off < 0.2 and on - off > 0.3  # measured: 0.51 vs -0.05
