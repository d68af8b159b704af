"""E4 prompt items: (prompt, real continuation) pairs cut from inside held-out documents.

Why inside and not at the start: document openings are boilerplate (every State of the Union
address opens with a salutation), so prompts cut there are near copies of each other and say
little about topic. Each prompt starts at least `prompt_tokens` tokens into its document, so it
never contains the opening, and the prompt and its continuation lie wholly inside the document
(no end-of-text token in either).

Diversity: documents are visited in a seeded random order, one item per document per round
(round robin), so the items cover as many documents as the split has before any document gets
a second one, and no document gets more than `max_per_document`. Items of one document never
overlap (the prompt of one is never the continuation of another); their positions are drawn
uniformly among the non-overlapping placements. The prompt is the unit of item-level tests, so
the order of the items is fixed (document, then position) and every model sees the same list.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class CoherenceItem:
    document: int  # index of the document in the split (documents are separated by end-of-text)
    start: int  # position of the prompt's first token in the split
    prompt: tuple[int, ...]  # prompt_tokens token ids
    continuation: tuple[int, ...]  # the document's next continuation_tokens ids: the real continuation


def document_spans(tokens: np.ndarray, eot_token: int) -> np.ndarray:
    """(n_documents, 2) [start, end) of the runs of tokens between end-of-text tokens (empty runs included)."""
    eot = np.flatnonzero(tokens == eot_token)
    starts = np.concatenate([[0], eot + 1])
    ends = np.concatenate([eot, [len(tokens)]])
    return np.stack([starts, ends], axis=1)


def coherence_items(val_tokens, eot_token: int, n_prompts: int = 75, prompt_tokens: int = 32,
                    continuation_tokens: int = 64, seed: int = 0, max_per_document: int = 8) -> list[CoherenceItem]:
    """`n_prompts` items from the held-out split `val_tokens` (1-D token ids); protocol: module docstring.

    A document supplies min(max_per_document, (length - prompt_tokens) // (prompt_tokens + continuation_tokens))
    items; ValueError, saying how many the split can supply, when all documents together supply fewer.
    """
    if min(n_prompts, prompt_tokens, continuation_tokens, max_per_document) < 1:
        raise ValueError(f"n_prompts={n_prompts}, prompt_tokens={prompt_tokens}, continuation_tokens="
                         f"{continuation_tokens} and max_per_document={max_per_document} must all be >= 1")
    tokens = np.asarray(val_tokens)
    docs = document_spans(tokens, eot_token)
    span = prompt_tokens + continuation_tokens
    room = docs[:, 1] - docs[:, 0] - prompt_tokens  # tokens left once the opening is skipped
    capacity = np.minimum(max_per_document, np.maximum(room, 0) // span)
    if capacity.sum() < n_prompts:
        raise ValueError(
            f"the split supplies at most {capacity.sum()} items ({np.count_nonzero(capacity)} of its {len(docs)} "
            f"documents have room for {prompt_tokens} skipped + {prompt_tokens} prompt + {continuation_tokens} "
            f"continuation tokens, at most {max_per_document} items each); asked for {n_prompts}. Fix: in "
            "[suite.coherence] of the experiment file (reproduce) or of a --settings file (compare, eval), lower "
            "prompts (0 skips E4) or shorten prompt_tokens or new_tokens; or hold out more documents "
            "(futuretoken data prepare --val-fraction 0.2, then train again)")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(docs))
    counts, left = np.zeros(len(docs), dtype=int), n_prompts
    for r in range(max_per_document):  # round robin: a document's r-th item only after every document's (r-1)-th
        takers = order[capacity[order] > r][:left]
        counts[takers] += 1
        left -= len(takers)
    items = []
    for d in np.flatnonzero(counts):
        k = counts[d]
        slack = room[d] - k * span  # free tokens to share out between and around the k spans
        gaps = np.sort(rng.integers(0, slack, size=k, endpoint=True))
        for j, gap in enumerate(gaps):
            start = int(docs[d, 0] + prompt_tokens + gap + j * span)
            ids = tokens[start : start + span].tolist()
            items.append(CoherenceItem(int(d), start, tuple(ids[:prompt_tokens]), tuple(ids[prompt_tokens:])))
    return items


def items_fingerprint(items: Sequence[CoherenceItem]) -> str:
    """sha256 of the items (ids, positions, order): results paired across models must carry the same one."""
    return hashlib.sha256(json.dumps([asdict(i) for i in items]).encode()).hexdigest()
