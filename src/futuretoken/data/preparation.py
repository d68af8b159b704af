"""Corpus -> tokenizer -> token shards + manifest, reproducibly.

Three passes over the corpus, each streaming (the corpus never has to fit in memory):
  1. hash every document to split train/val BY DOCUMENT: the validation set is the documents
     whose seeded hash is smallest, so identical texts always land on the same side;
  2. train the tokenizer (bpe:VOCAB only) on the training documents alone;
  3. encode in batches and stream `doc, EOT, doc, EOT, ...` into each split's shards.
A document longer than a piece (tokenizer.encoding_pieces) is trained on and encoded in pieces
cut where the pre-tokenizer splits anyway, with the same ids as encoding it whole: the tokenizers
library needs ~80 bytes per character of one sequence, so a 650 MB one-line file would not fit.
The same inputs give byte-identical shards, tokenizer.json and manifest.json (no timestamps).

The manifest is removed first and written last, and the folder's file lock is held throughout:
concurrent preparations of one folder run one after the other, so a preparation killed at any
point leaves either no manifest or one that names the tokenizer.json beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..storage import atomic_write, file_lock, fsync_dir, remove_temporaries, writable_dir
from .corpora import iter_documents
from .errors import DataError
from .shards import MANIFEST, SPLITS, ShardWriter, read_manifest, token_dtype
from .tokenizer import Tokenizer, build_tokenizer, encoding_pieces

FORMAT = 1
LOCK = ".prepare.lock"
BATCH_CHARS = 4_000_000  # characters per encode_batch call: parallel enough, small enough


def document_keys(corpus: str, seed: int) -> np.ndarray:
    """A seeded 64-bit hash per document, in corpus order: the split depends on content, not position."""
    salt = f"futuretoken-split:{seed}:".encode()
    keys = [int.from_bytes(hashlib.sha256(salt + doc.encode()).digest()[:8], "little")
            for doc in tqdm(iter_documents(corpus), desc="hash documents", unit="doc")]
    return np.array(keys, dtype=np.uint64)


def split_documents(keys: np.ndarray, val_fraction: float) -> np.ndarray:
    """Boolean mask of validation documents: the ~val_fraction of documents with the smallest keys
    (at least one; duplicates of a validation document go with it)."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction={val_fraction} must be in (0, 1). Fix: e.g. 0.05.")
    if len(keys) < 2:
        raise DataError(f"the corpus has {len(keys)} document; splitting by document needs at least 2. "
                        "Fix: add documents, or split a long file into several.")
    n_val = min(len(keys) - 1, max(1, round(val_fraction * len(keys))))
    val = keys <= np.partition(keys, n_val - 1)[n_val - 1]
    if val.all():
        raise DataError("every document is identical, so none is left for training after the split. "
                        "Fix: use a corpus with distinct documents.")
    return val


def _batches(corpus: str, mask: np.ndarray) -> Iterator[tuple[list[str], list[bool], list[bool]]]:
    """(pieces, is_val flags, ends-a-document flags) in batches of about BATCH_CHARS characters. A long
    document comes in pieces (encoding_pieces), so no batch, however long its documents, needs more
    memory than BATCH_CHARS characters do."""
    texts, flags, ends, chars = [], [], [], 0
    for doc, is_val in zip(iter_documents(corpus), mask, strict=True):
        parts = encoding_pieces(doc)
        for i, part in enumerate(parts):
            texts.append(part)
            flags.append(bool(is_val))
            ends.append(i == len(parts) - 1)
            chars += len(part)
            if chars >= BATCH_CHARS:
                yield texts, flags, ends
                texts, flags, ends, chars = [], [], [], 0
    if texts:
        yield texts, flags, ends


def prepare(corpus: str = "builtin:prose", tokenizer: str = "bpe:4096",
            out_dir: str | Path = "runs/data/prose-bpe4096", val_fraction: float = 0.05,
            shard_tokens: int = 50_000_000, seed: int = 0, if_missing: bool = False) -> dict:
    """Tokenize `corpus` into OUT_DIR/{train,val}_NNN.bin, OUT_DIR/tokenizer.json and OUT_DIR/manifest.json.

    Each document is followed by the end-of-text token. Returns the manifest (also written last,
    atomically: its presence marks a complete folder). if_missing=True keeps a folder that is
    already complete (e.g. prepared by another process while this one waited for the lock).
    """
    out = writable_dir(out_dir, "data folder")
    with file_lock(out / LOCK):
        if if_missing and (out / MANIFEST).is_file():
            return read_manifest(out)
        remove_temporaries(out)  # left by a preparation that was killed
        try:
            return _prepare(corpus, tokenizer, out, val_fraction, shard_tokens, seed)
        except OSError as err:  # a full disk, permissions
            raise DataError(f"preparing {corpus!r} into {out} failed: {err}. Fix: free disk space or fix the "
                            "permissions, then run prepare again") from err


def _prepare(corpus: str, tokenizer: str, out: Path, val_fraction: float, shard_tokens: int, seed: int) -> dict:
    (out / MANIFEST).unlink(missing_ok=True)  # the folder is incomplete until the new manifest lands
    fsync_dir(out)  # ... also after a power cut: never an old manifest beside a new tokenizer.json

    is_val = split_documents(document_keys(corpus, seed), val_fraction)
    train_docs = (piece for d, v in zip(iter_documents(corpus), is_val, strict=True) if not v
                  for piece in encoding_pieces(d))
    tok: Tokenizer = build_tokenizer(tokenizer, train_docs, length=int((~is_val).sum()))
    tok.save(out)
    dtype = token_dtype(tok.vocab_size)
    eot = np.array([tok.eot_token], dtype=dtype)

    writers = {s: ShardWriter(out, s, dtype, shard_tokens) for s in SPLITS}
    docs_count = dict.fromkeys(SPLITS, 0)
    try:
        with tqdm(total=len(is_val), desc=f"encode {tokenizer}", unit="doc") as bar:
            for texts, flags, ends in _batches(corpus, is_val):
                chunks: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
                for ids, v, end in zip(tok.encode_batch(texts), flags, ends):
                    split = "val" if v else "train"
                    chunks[split].append(np.asarray(ids, dtype=dtype))
                    if end:  # a document's last piece: the document separator follows
                        chunks[split].append(eot)
                        docs_count[split] += 1
                for split, parts in chunks.items():
                    if parts:
                        writers[split].write(np.concatenate(parts))
                bar.update(sum(ends))
        shards = {s: w.close() for s, w in writers.items()}
    except BaseException:
        for w in writers.values():
            w.abort()
        raise

    kept = {sh["file"] for split in shards.values() for sh in split}
    for stale in out.glob("*.bin"):  # shards of an earlier, larger preparation
        if re.fullmatch(r"(train|val)_\d{3,}\.bin", stale.name) and stale.name not in kept:
            stale.unlink()
    manifest = {
        "format": FORMAT,
        "corpus": corpus,
        "tokenizer": tokenizer,
        "tokenizer_file": "tokenizer.json",
        "tokenizer_sha256": tok.sha256,
        "vocab_size": tok.vocab_size,
        "eot_token": tok.eot_token,
        "dtype": dtype.name,
        "val_fraction": val_fraction,
        "seed": seed,
        "shard_tokens": shard_tokens,
        **{s: {"documents": docs_count[s], "tokens": sum(sh["tokens"] for sh in shards[s]), "shards": shards[s]}
           for s in SPLITS},
    }
    atomic_write(out / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def check_prepared_as(out_dir: str | Path, corpus: str | None = None, tokenizer: str | None = None,
                      val_fraction: float | None = None) -> dict:
    """The manifest of the prepared folder `out_dir`, after checking that it was prepared from
    `corpus`, with `tokenizer` and `val_fraction` (each None: not checked). A folder prepared from
    anything else is a DataError naming both sides and the fixes: training on it would train on
    other text than the config names."""
    out = Path(out_dir)
    manifest = read_manifest(out)
    differ = []
    if corpus is not None and not _same_corpus(corpus, manifest.get("corpus")):
        differ.append(f"corpus {manifest.get('corpus')!r} (asked: {corpus!r})")
    if tokenizer is not None and not _same_tokenizer(tokenizer, manifest):
        differ.append(f"tokenizer {manifest.get('tokenizer')!r} (asked: {tokenizer!r})")
    if val_fraction is not None and manifest.get("val_fraction") != val_fraction:
        differ.append(f"val_fraction {manifest.get('val_fraction')!r} (asked: {val_fraction!r})")
    if differ:
        raise DataError(
            f"the data folder {out} was prepared from {', '.join(differ)}, so training on it would not train on "
            "what the config asks for. Fix: set data.dir to a new folder (it is prepared there), or prepare this "
            f"one again (futuretoken data prepare --out {out} ...; runs trained on it can then no longer resume), "
            "or leave data.corpus, data.tokenizer and data.val_fraction unset to train on what the folder holds"
        )
    return manifest


def _same_corpus(asked: str, prepared) -> bool:
    """Specs name the same corpus: equal, or the same local path written differently (./a/ == a == /cwd/a)."""
    if not isinstance(prepared, str):
        return False
    if asked == prepared:
        return True
    local = [not re.match(r"[A-Za-z][A-Za-z0-9+.-]+:", spec) or spec.startswith("file:") for spec in (asked, prepared)]
    return all(local) and len({os.path.abspath(spec.removeprefix("file:")) for spec in (asked, prepared)}) == 1


def _same_tokenizer(asked: str, manifest: dict) -> bool:
    """The spec names the folder's tokenizer: the same spec, or a tokenizer file with the same contents."""
    if asked == manifest.get("tokenizer"):
        return True
    if asked.startswith("bpe:") or asked == "gpt2":
        return False
    try:
        return build_tokenizer(asked).sha256 == manifest["tokenizer_sha256"]
    except DataError:
        return False
