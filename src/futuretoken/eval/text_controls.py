"""E4 copy and repetition controls, on the words of decoded text.

A continuation can score high on topic similarity for the wrong reasons: by copying the prompt
(the judge then compares the prompt with itself) or by repeating a few words. These numbers let
a report tell those apart from staying on topic. Words are lower-cased runs of letters, digits
and underscores (punctuation and spacing ignored), so the controls do not depend on the tokenizer.
A text with fewer than n words has no n-grams: it copies nothing (copy rate 0) and is counted as
wholly repetitive (distinct-n 0), the value a degenerate continuation deserves.
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher

WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def ngrams(ws: list[str], n: int) -> list[tuple[str, ...]]:
    return list(zip(*(ws[i:] for i in range(n))))


def copy_rate(prompt: str, continuation: str, n: int = 3) -> float:
    """Share of the continuation's word n-grams (counted with repeats) that also occur in the prompt."""
    grams = ngrams(words(continuation), n)
    seen = set(ngrams(words(prompt), n))
    return sum(g in seen for g in grams) / len(grams) if grams else 0.0


def longest_copy(prompt: str, continuation: str) -> int:
    """Length in words of the longest run of the continuation copied verbatim from the prompt."""
    a, b = words(prompt), words(continuation)
    return SequenceMatcher(None, a, b, autojunk=False).find_longest_match().size


def distinct_n(text: str, n: int) -> float:
    """Distinct word n-grams / all word n-grams: 1 = nothing repeated, near 0 = one phrase over and over."""
    grams = ngrams(words(text), n)
    return len(set(grams)) / len(grams) if grams else 0.0
