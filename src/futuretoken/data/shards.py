"""Token shards on disk: raw little-endian integer files plus a manifest that pins them.

A split is the concatenation of its shards `{split}_000.bin`, `{split}_001.bin`, ...; each
holds `uint16` ids (`uint32` when the vocabulary does not fit 16 bits) with no header, so
np.memmap reads them in place and any tool can. manifest.json records every shard's token count
and sha256 and the tokenizer's sha256: prepare() writes it last, so its presence means the
shards are complete, and a tokenizer.json that differs from it is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np

from ..storage import open_temp, read_json, sha256_file
from .errors import DataError
from .tokenizer import TOKENIZER_FILE

MANIFEST = "manifest.json"
SPLITS = ("train", "val")
REPREPARE = "Fix: re-run prepare (`futuretoken data prepare`) into this folder"


def token_dtype(vocab_size: int) -> np.dtype:
    """Little-endian uint16 while every id fits (vocab_size <= 65536), else uint32."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


class ShardWriter:
    """Streams one split's tokens into shards of `shard_tokens` tokens; each shard is written to a
    temporary file and moved into place when full, hashed on the way."""

    def __init__(self, out_dir: str | Path, split: str, dtype: np.dtype, shard_tokens: int) -> None:
        if shard_tokens < 1:
            raise DataError(f"shard_tokens={shard_tokens} must be positive. Fix: e.g. 50_000_000.")
        self.out_dir, self.split, self.dtype, self.shard_tokens = Path(out_dir), split, np.dtype(dtype), shard_tokens
        self.shards: list[dict] = []
        self._file = self._tmp = self._hash = None
        self._count = 0

    def write(self, tokens: np.ndarray) -> None:
        tokens = np.asarray(tokens).astype(self.dtype, copy=False)
        while len(tokens):
            if self._file is None:
                self._file, self._tmp = open_temp(self.out_dir, self.split)
                self._hash, self._count = hashlib.sha256(), 0
            take = min(len(tokens), self.shard_tokens - self._count)
            data = tokens[:take].tobytes()
            self._file.write(data)
            self._hash.update(data)
            self._count += take
            tokens = tokens[take:]
            if self._count == self.shard_tokens:
                self._finish()

    def _finish(self) -> None:
        self._file.close()
        name = f"{self.split}_{len(self.shards):03d}.bin"
        os.replace(self._tmp, self.out_dir / name)
        self.shards.append({"file": name, "tokens": self._count, "sha256": self._hash.hexdigest()})
        self._file = self._tmp = None

    def close(self) -> list[dict]:
        """Finish the last, partly filled shard; return [{file, tokens, sha256}] for the manifest."""
        if self._file is not None:
            self._finish()
        return self.shards

    def abort(self) -> None:
        """Drop the unfinished shard (on an error) so no temporary file is left behind."""
        if self._file is not None:
            self._file.close()
            Path(self._tmp).unlink(missing_ok=True)
            self._file = None


MANIFEST_KEYS = ("vocab_size", "eot_token", "dtype", "tokenizer_sha256", *SPLITS)


def read_manifest(out_dir: str | Path) -> dict:
    """manifest.json of a prepared folder, after checking its fields and types. Shard names must be
    the plain names prepare() writes ({split}_NNN.bin), so a manifest never leads a reader outside
    its folder."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"no {MANIFEST} in {out_dir}: the token shards are missing or incomplete. {REPREPARE}.")
    manifest = read_json(path, DataError, f"{REPREPARE}.")
    missing = [k for k in MANIFEST_KEYS if k not in manifest] if isinstance(manifest, dict) else list(MANIFEST_KEYS)
    if missing:
        raise DataError(f"{path} is not a futuretoken manifest (it lacks {missing}). {REPREPARE}.")
    if bad := _malformed_fields(manifest):
        raise DataError(f"{path} is malformed: {'; '.join(bad)}. {REPREPARE}.")
    return manifest


def _malformed_fields(manifest: dict) -> list[str]:
    bad = []
    if not (type(manifest["vocab_size"]) is int and 0 < manifest["vocab_size"] <= 1 << 32):
        bad.append(f"vocab_size {manifest['vocab_size']!r} is not a positive integer")
    elif not (type(manifest["eot_token"]) is int and 0 <= manifest["eot_token"] < manifest["vocab_size"]):
        bad.append(f"eot_token {manifest['eot_token']!r} is not an id of the vocabulary")
    if manifest["dtype"] not in ("uint16", "uint32"):
        bad.append(f"dtype {manifest['dtype']!r} is not uint16 or uint32")
    if not (isinstance(manifest["tokenizer_sha256"], str) and re.fullmatch(r"[0-9a-f]{64}", manifest["tokenizer_sha256"])):
        bad.append("tokenizer_sha256 is not a sha256")
    for split in SPLITS:
        shards = manifest[split].get("shards") if isinstance(manifest[split], dict) else None
        if not isinstance(shards, list):
            bad.append(f"{split} has no list of shards")
            continue
        for shard in shards:
            ok = (isinstance(shard, dict) and isinstance(shard.get("file"), str)
                  and re.fullmatch(rf"{split}_\d{{3,}}\.bin", shard["file"])
                  and type(shard.get("tokens")) is int and shard["tokens"] >= 0
                  and isinstance(shard.get("sha256"), str))
            if not ok:
                bad.append(f"{split} shard {shard!r} is not {{file: {split}_NNN.bin, tokens, sha256}} "
                           "(a shard is a file of this folder)")
                break
    return bad


def data_identity(manifest: dict) -> str:
    """sha256 of what decides the token ids a run trains on: the tokenizer's hash and every shard's
    hash, split by split. Preparing again from another corpus, split, seed or tokenizer changes it;
    moving the folder does not."""
    pinned = {"tokenizer": manifest["tokenizer_sha256"],
              **{s: [shard["sha256"] for shard in manifest[s]["shards"]] for s in SPLITS}}
    return hashlib.sha256(json.dumps(pinned, sort_keys=True).encode()).hexdigest()


class ConcatTokens:
    """Several memory-mapped shards read as one 1-D array: len(), t[i] and t[a:b] (step 1)."""

    def __init__(self, parts: list[np.ndarray]) -> None:
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts])
        self.dtype = parts[0].dtype

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return self[start:stop][::step]
            pieces = []
            i = int(np.searchsorted(self.offsets, start, side="right")) - 1
            while start < stop:
                lo = start - self.offsets[i]
                take = min(stop - start, len(self.parts[i]) - lo)
                pieces.append(self.parts[i][lo:lo + take])
                start, i = start + take, i + 1
            return np.concatenate(pieces) if pieces else np.empty(0, self.dtype)
        index = int(index) + (len(self) if index < 0 else 0)
        if not 0 <= index < len(self):
            raise IndexError(f"token index {index} out of range for {len(self)} tokens")
        i = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.parts[i][index - self.offsets[i]]

    def __array__(self, dtype=None, copy=None):
        out = np.concatenate(self.parts)
        return out if dtype is None else out.astype(dtype)


class TokenShards:
    """One split of a prepared corpus, memory-mapped: `.tokens` is the whole split as a 1-D array
    (the memmap itself when there is one shard), plus `vocab_size`, `eot_token` and `manifest`.

    Shard sizes are always checked against the manifest; `verify=True` also re-hashes every shard
    (reads all of it) and names the first corrupt one.
    """

    def __init__(self, out_dir: str | Path, split: str = "train", verify: bool = False) -> None:
        self.out_dir, self.split = Path(out_dir), split
        self.manifest = read_manifest(out_dir)
        if split not in SPLITS or split not in self.manifest:
            raise DataError(f"unknown split {split!r}. Fix: use one of {SPLITS}.")
        self.vocab_size: int = self.manifest["vocab_size"]
        self.eot_token: int = self.manifest["eot_token"]
        self.dtype = np.dtype(self.manifest["dtype"]).newbyteorder("<")
        tokenizer = self.out_dir / TOKENIZER_FILE  # one small file: every process checks it, verify or not
        digest = hashlib.sha256(tokenizer.read_bytes()).hexdigest() if tokenizer.is_file() else None
        if digest != self.manifest["tokenizer_sha256"]:
            raise DataError(f"{tokenizer} is missing or is not the tokenizer {MANIFEST} names (sha256 differs): "
                            f"the shards' token ids would be read with another tokenizer. {REPREPARE}.")
        parts = []
        for shard in self.manifest[split]["shards"]:
            path = self.out_dir / shard["file"]
            size = path.stat().st_size if path.is_file() else None
            if size != shard["tokens"] * self.dtype.itemsize:
                raise DataError(f"shard {path} is {'missing' if size is None else f'{size} bytes'}, expected "
                                f"{shard['tokens'] * self.dtype.itemsize} bytes. {REPREPARE}.")
            if verify and sha256_file(path) != shard["sha256"]:
                raise DataError(f"shard {path} is corrupt: its sha256 differs from the manifest's. {REPREPARE}.")
            parts.append(np.memmap(path, dtype=self.dtype, mode="r"))
        if not parts:
            raise DataError(f"split {split!r} of {out_dir} has no tokens. {REPREPARE} with a larger corpus.")
        self.tokens = parts[0] if len(parts) == 1 else ConcatTokens(parts)

    def __len__(self) -> int:
        return len(self.tokens)

    def __repr__(self) -> str:
        return f"TokenShards({str(self.out_dir)!r}, {self.split!r}: {len(self):,} tokens, vocab {self.vocab_size})"
