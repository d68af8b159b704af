"""Which held-out tokens each measurement reads.

The validation split is divided by document into two disjoint halves (documents alternate):
the *selection* half picks the matched checkpoint pair, the *report* half measures it, so the
pair is never scored on the tokens that chose it (validity gate 3). Windows for measurements
along a text (E3) lie inside one document, a bounded number per document.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data import WindowSampler


def document_spans(tokens: np.ndarray, eot: int) -> list[tuple[int, int]]:
    """[start, end) of every document of a split (the end-of-text token excluded), in order."""
    t = np.asarray(tokens)
    ends = np.flatnonzero(t == eot)
    starts = np.concatenate([[0], ends + 1])
    ends = np.concatenate([ends, [len(t)]])
    return [(int(s), int(e)) for s, e in zip(starts, ends) if e > s]


def split_halves(tokens: np.ndarray, eot: int) -> dict[str, np.ndarray]:
    """{"selection": documents 0, 2, 4, ..., "report": documents 1, 3, 5, ...}, each a token array
    with the documents' end-of-text separators kept (as the models saw them in training)."""
    t = np.asarray(tokens)
    spans = document_spans(t, eot)
    if len(spans) < 2:
        raise ValueError(f"the validation split has {len(spans)} document(s); selecting and reporting on "
                         "disjoint halves needs at least 2: prepare the data with a larger val_fraction")
    halves = {}
    for name, offset in (("selection", 0), ("report", 1)):
        parts = [t[s : min(e + 1, len(t))] for s, e in spans[offset::2]]
        halves[name] = np.concatenate(parts)
    return halves


def loss_windows(tokens: np.ndarray, window: int, n_batches: int, batch_size: int = 16, seed: int = 1234) -> torch.Tensor:
    """(n_batches * batch_size, window) fixed random windows of a token array (they may span documents,
    as training windows do)."""
    sampler = WindowSampler(tokens, window, batch_size, seed)
    return torch.cat([sampler.batch(i) for i in range(n_batches)])


def document_windows(tokens: np.ndarray, eot: int, window: int, per_document: int = 10,
                     minimum: int = 100) -> tuple[torch.Tensor, np.ndarray]:
    """Windows of `window` tokens inside single documents: up to `per_document` non-overlapping,
    evenly spaced windows from every document long enough. Returns (windows (n, window), the
    document index of each window); a clear error when fewer than `minimum` can be cut."""
    t = np.asarray(tokens)
    rows, docs = [], []
    for doc, (s, e) in enumerate(document_spans(t, eot)):
        fits = (e - s) // window
        for k in np.linspace(0, fits - 1, num=min(per_document, fits), dtype=int) if fits else []:
            rows.append(t[s + k * window : s + (k + 1) * window].astype(np.int64))
            docs.append(doc)
    if len(rows) < minimum:
        raise ValueError(f"only {len(rows)} windows of {window} tokens fit inside the held-out documents "
                         f"(at most {per_document} per document); {minimum} are needed. Fix: hold out more documents "
                         "(futuretoken data prepare --val-fraction 0.2, then train again), or ask for fewer windows: "
                         "[suite.smoothness] min_windows (and per_document) in the experiment file (reproduce) or "
                         "in a --settings file (compare, eval)")
    return torch.from_numpy(np.stack(rows)), np.asarray(docs)
