"""Bad inputs to generate, embed, train and the tokenizers are clear errors that name the problem
(the option, the prompt, the file and line, the text) and the fix, never a traceback or silently
wrong output."""

import json
import tracemalloc

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import futuretoken as ft
from conftest import run_main, tiny_config
from futuretoken.config import ConfigError, RunConfig
from futuretoken.data.corpora import MAX_LINE_CHARS, iter_documents, read_texts
from futuretoken.data.errors import DataError
from futuretoken.infer.sampling import SamplingConfig, probs

cli = run_main  # (exit status, stdout, stderr) of `futuretoken ARGV`, in this process


# --- generate: options ---------------------------------------------------------------------------
def test_generate_refuses_a_batch_size_below_one_before_loading_the_model(trained_runs, tmp_path, capsys):
    for size in ("0", "-1"):  # 0 failed inside range(), -1 generated nothing and exited 0
        code, out, err = cli(capsys, "generate", trained_runs / "gpt", "alpha", "--batch-size", size)
        assert code == 2 and f"--batch-size {size} is invalid" in err and ">= 1" in err, err
        assert out == ""
    code, _, err = cli(capsys, "generate", tmp_path / "no-run", "alpha", "--batch-size", "0")
    assert code == 2 and "--batch-size" in err, err


def test_seeds_outside_what_torch_and_numpy_take_name_the_key(trained_runs, capsys):
    for seed in (-1, 2**64):
        with pytest.raises(ConfigError, match=r"train\.seed=.* is outside \[0, 9223372036854775807\]"):
            RunConfig.load(None, [f"train.seed={seed}"])
        code, out, err = cli(capsys, "generate", trained_runs / "gpt", "alpha", "--seed", seed, "--max-new-tokens", "2")
        assert code == 2 and f"--seed {seed} is outside [0, 9223372036854775807]" in err, err
    assert RunConfig.load(None, [f"train.seed={2**63 - 1}"]).train.seed == 2**63 - 1


# --- sampling: a tiny temperature ----------------------------------------------------------------
def test_a_tiny_temperature_is_greedy_not_nan():
    logits = torch.randn(3, 5, 50) * 10
    for cfg in (SamplingConfig(temperature=1e-45), SamplingConfig(temperature=1e-300, top_k=5, top_p=0.9)):
        p = probs(logits, cfg)
        assert torch.isfinite(p).all()
        torch.testing.assert_close(p.sum(-1), torch.ones(3, 5))
        torch.testing.assert_close(p, probs(logits, SamplingConfig(temperature=0)))  # all mass on the argmax


@pytest.mark.parametrize("kind,strategy", [("gpt", "ar"), ("ftp", "speculative")])
def test_generate_with_a_tiny_temperature_equals_greedy(kind, strategy):
    model = ft.MODELS[kind](tiny_config()).eval()
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8]]
    greedy = ft.generate(model, prompts, 8, strategy=strategy, sampling=SamplingConfig(temperature=0))
    tiny = ft.generate(model, prompts, 8, strategy=strategy, sampling=SamplingConfig(temperature=1e-45),
                       generator=torch.Generator().manual_seed(0))
    assert tiny.rows() == greedy.rows()


# --- generate: prompts that leave no room ----------------------------------------------------------
def test_over_long_prompts_are_all_named_before_any_prompt_is_generated(trained_runs, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    long = "alpha beta " * 20  # block_size is 16
    prompts.write_text(f"alpha\n{long}\nbeta gamma\n{long}\n")
    code, out, err = cli(capsys, "generate", trained_runs / "gpt", "--prompts-file", prompts, "--batch-size", "1",
                         "--max-new-tokens", "2")
    assert code == 2, err
    assert f"prompt 1 (line 2 of {prompts}) has" in err and f"prompt 3 (line 4 of {prompts}) has" in err, err
    assert "prompt 0" not in err and "prompt 2" not in err
    assert "block_size is 16" in err and "Fix: shorten" in err
    assert out == "" and "tokens/s" not in err  # nothing was generated first


# --- input files: one text per line ----------------------------------------------------------------
def test_blank_lines_and_empty_texts_are_refused_not_dropped(trained_runs, tmp_path, capsys):
    txt = tmp_path / "texts.txt"
    txt.write_text("alpha\n\nbeta\n   \ngamma\n")
    with pytest.raises(DataError, match=rf"{txt} has a blank line at line\(s\) 2, 4\. Fix: .*remove blank lines"):
        read_texts(txt)
    jsonl = tmp_path / "texts.jsonl"
    jsonl.write_text('{"text": "alpha"}\n{"text": ""}\n\n{"text": "beta"}\n')
    with pytest.raises(DataError, match=rf"{jsonl} has a blank line or an empty 'text' at line\(s\) 2, 3\."):
        read_texts(jsonl)
    # embed's rows are the file's lines: a dropped blank line would shift every later row
    code, _, err = cli(capsys, "embed", trained_runs / "gpt", txt, "--out", tmp_path / "v.npy")
    assert code == 2 and "one output row: remove blank lines" in err, err
    assert not (tmp_path / "v.npy").exists()
    # one text per line, in order; a final newline is not a blank line; CRLF files read the same
    txt.write_bytes(b" alpha \r\nbeta\r\n")
    jsonl.write_text('{"text": "alpha"}\n{"text": " beta"}')
    assert read_texts(txt) == [" alpha ", "beta"] and read_texts(jsonl) == ["alpha", " beta"]


def test_a_line_over_the_cap_is_refused_without_reading_it_whole(tmp_path):
    path = tmp_path / "dump.txt"
    with open(path, "w") as f:
        f.write("short\n" + "x" * (16 * MAX_LINE_CHARS) + "\n")  # a 16 MB line
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=rf"{path}:2 is longer than 1,000,000 characters.*Fix: split it"):
            read_texts(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * MAX_LINE_CHARS * 2  # a few lines' worth, never the 16 MB line
    path.write_text("x" * MAX_LINE_CHARS + "\n")  # exactly at the cap: accepted
    assert read_texts(path) == ["x" * MAX_LINE_CHARS]


def test_a_jsonl_field_of_the_wrong_type_says_its_type(tmp_path):
    for value, kind in ((5, "an int"), (None, "null"), (["a"], "a list")):
        path = tmp_path / "t.jsonl"
        path.write_text(json.dumps({"text": value}) + "\n")
        for read in (read_texts, lambda p: list(iter_documents(str(p)))):
            with pytest.raises(DataError) as info:
                read(path)
            assert f"{path}:1 has no string field 'text': field 'text' is {kind}, not a string" in str(info.value)
            assert "it has ['text']" not in str(info.value)


# --- tokenizers: the split regex's limit -----------------------------------------------------------
@pytest.fixture(scope="module")
def gpt2():
    from futuretoken.data.tokenizer import build_tokenizer

    return build_tokenizer("gpt2")


def test_a_text_the_tokenizer_regex_gives_up_on_is_named(gpt2):
    spaces = " " * 1_000_000  # tiktoken's regex stops at its stack limit on a million spaces
    with pytest.raises(DataError, match=r"failed on a text of 1,000,000 characters starting ' +' .*"
                                        r"Fix: split the text, or shorten its long runs of one character"):
        gpt2.encode(spaces)
    with pytest.raises(DataError, match="failed on a text of 1,000,000 characters"):
        gpt2.encode_batch(["alpha", spaces, "x" * 2_000_000])  # the failing text, not the longest
    assert gpt2.encode_batch(["alpha", "beta"]) == [gpt2.encode("alpha"), gpt2.encode("beta")]


def test_a_tokenizer_panic_is_a_data_error_and_an_interrupt_is_not(gpt2, monkeypatch):
    # tiktoken < 0.13 (allowed by the requirements) panicked in encode itself; 0.14 still panics in
    # encode_ordinary, which is used here to get the real pyo3 PanicException from the Rust library.
    backend = gpt2.backend
    monkeypatch.setattr(gpt2, "backend", type("Panicking", (), {
        "encode": staticmethod(lambda text, **_: backend.encode_ordinary(text)),
        "encode_batch": staticmethod(lambda texts, **_: [backend.encode_ordinary(t) for t in texts])})())
    with pytest.raises(DataError, match=r"failed on a text of 1,000,000 characters .*RuntimeError\(StackOverflow\)"):
        gpt2.encode(" " * 1_000_000)
    with pytest.raises(DataError, match="failed on a text of 1,000,000 characters"):
        gpt2.encode_batch(["alpha", " " * 1_000_000])

    def interrupted(*_, **__):
        raise KeyboardInterrupt

    monkeypatch.setattr(gpt2, "backend", type("Interrupted", (), {"encode": staticmethod(interrupted)})())
    with pytest.raises(KeyboardInterrupt):
        gpt2.encode("alpha")


# --- long documents are tokenized in pieces, with the ids of the whole ----------------------------
TEXT_PARTS = st.sampled_from(["alpha", "Beta", " ", "  ", "\n", "\n\n", "\t", "42", "3.14", "'s", "'ll", "don't",
                              ",", "!?", "é", "日本", "🙂", "<|endoftext|>", " - ", "x" * 30])


@pytest.fixture(scope="module")
def bpe():
    from futuretoken.data.tokenizer import train_bpe

    return train_bpe(["alpha Beta gamma 42 3.14 don't it's we'll\n\tend.", "日本 🙂 é, !? - " * 5] * 20, 300)


@settings(max_examples=300, deadline=None)
@given(st.lists(TEXT_PARTS, max_size=60).map("".join), st.integers(4, 40))
def test_encoding_in_pieces_gives_the_ids_of_encoding_whole(bpe, gpt2, text, size):
    from futuretoken.data.tokenizer import encoding_pieces

    pieces = encoding_pieces(text, size)
    assert "".join(pieces) == text
    for tok in (bpe, gpt2):  # the library's own encoding of the whole text is the reference
        assert [i for piece in pieces for i in tok.encode(piece)] == tok.encode(text)


def test_a_corpus_prepared_in_pieces_equals_one_prepared_whole(tmp_path, monkeypatch):
    """Small pieces (64 characters) instead of the default 1M: the same tokenizer, shards and manifest."""
    import functools
    import importlib

    from futuretoken.data.tokenizer import encoding_pieces

    prep = importlib.import_module("futuretoken.data.preparation")

    words = ["alpha", "beta", "gamma", "delta", "don't", "42,", "é"]
    for i in range(6):
        (tmp_path / f"doc{i}.txt").write_text(" ".join(words[(i * j) % 7] for j in range(400)) + "\n")
    whole = prep.prepare(str(tmp_path / "*.txt"), "bpe:300", tmp_path / "whole", val_fraction=0.2)
    monkeypatch.setattr(prep, "encoding_pieces", functools.partial(encoding_pieces, size=64))
    pieces = prep.prepare(str(tmp_path / "*.txt"), "bpe:300", tmp_path / "pieces", val_fraction=0.2)
    assert pieces == whole and whole["train"]["documents"] + whole["val"]["documents"] == 6
    for name in ("tokenizer.json", "train_000.bin", "val_000.bin"):
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "pieces" / name).read_bytes()
