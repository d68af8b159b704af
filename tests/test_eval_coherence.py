"""E4 (topic coherence): prompt items, copy and repetition controls."""

import numpy as np
import pytest

from futuretoken.eval.coherence_items import coherence_items, document_spans, items_fingerprint
from futuretoken.eval.text_controls import copy_rate, distinct_n, longest_copy


def split_with_documents(lengths: list[int]) -> np.ndarray:
    """A split of documents of the given lengths, each followed by end-of-text (0); token = 1 + its position."""
    parts = []
    for n in lengths:
        parts += [np.arange(1, n + 1) + sum(len(p) for p in parts), [0]]
    return np.concatenate(parts).astype(np.uint16)


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
