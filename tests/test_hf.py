"""Hugging Face ecosystem on tiny trained runs: transformers round trip, generate, tokenizer,
trust_remote_code, lm-eval on the local task, sentence-transformers, the export-hf command."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
pytest.importorskip("transformers")

import futuretoken as ft  # noqa: E402
from conftest import run_cli, run_config  # noqa: E402
from futuretoken.train import train  # noqa: E402

TEXTS = ["alpha beta gamma", "delta epsilon zeta eta theta iota.", "mu", "kappa lambda mu alpha beta gamma delta"]


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
    """Trained runs RUNS/{gpt,ftp} and their exports RUNS/hf-{gpt,ftp}."""
    import futuretoken.hf as fh

    root = tmp_path_factory.mktemp("hf")
    for kind in ("ftp", "gpt"):
        train(run_config(data_dir, root / kind, kind, max_steps=8, ckpt_interval=8, eval_interval=8))
        fh.export_hf(root / kind, root / f"hf-{kind}")
    return root


@pytest.fixture(params=["gpt", "ftp"])
def kind(request):
    return request.param


def test_from_pretrained_gives_identical_logits(runs, kind):
    from transformers import AutoConfig, AutoModelForCausalLM

    ours = ft.load(runs / kind)
    hf = AutoModelForCausalLM.from_pretrained(runs / f"hf-{kind}").eval()
    assert type(hf).__name__ == f"{kind.upper()}ForCausalLM"
    assert AutoConfig.from_pretrained(runs / f"hf-{kind}").model_type == f"futuretoken-{kind}"
    assert hf.model.config == ours.config
    idx = torch.randint(0, ours.config.vocab_size, (2, ours.config.block_size))
    with torch.no_grad():
        out = hf(idx, labels=idx)
        assert out.logits.shape == (2, ours.config.block_size, ours.config.vocab_size)
        assert torch.equal(out.logits, ours(idx).logits)
        if kind == "gpt":  # labels: the shifted mean cross-entropy, our own next-token loss
            assert torch.allclose(out.loss, ours.loss(idx).total, atol=1e-5)
    # Wrapping shares tensors; the head stays the token embedding after save/load.
    from futuretoken.hf import CAUSAL_LM

    assert CAUSAL_LM[kind].from_module(ours).model.encoder.wte.weight is ours.encoder.wte.weight
    assert hf.model.head_weight is hf.get_input_embeddings().weight


def test_hf_greedy_generate_equals_our_ar(runs, kind):
    from transformers import AutoModelForCausalLM

    ours = ft.load(runs / kind)
    hf = AutoModelForCausalLM.from_pretrained(runs / f"hf-{kind}").eval()
    prompt = torch.tensor([ours.tokenizer.encode("alpha beta gamma")] * 2)
    want = ft.generate(ours, prompt, 8, sampling=ft.SamplingConfig(temperature=0)).tokens
    for use_cache in (False, True):  # no KV cache either way: every step re-encodes the sequence
        got = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False,
                          use_cache=use_cache)
        assert got.tolist() == want.tolist()


def test_padding_right_is_exact_left_raises(runs):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(runs / "hf-ftp").eval()
    idx = torch.randint(0, 300, (2, 6))
    mask = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0]])
    with torch.no_grad():
        assert torch.allclose(hf(idx, attention_mask=mask).logits[1, :3], hf(idx[1:, :3]).logits[0], atol=1e-5)
        with pytest.raises(ValueError, match="right padding"):
            hf(idx, attention_mask=mask.flip(1))


def test_auto_tokenizer_round_trips(runs, kind):
    from transformers import AutoTokenizer

    ours = ft.load(runs / kind).tokenizer
    tok = AutoTokenizer.from_pretrained(runs / f"hf-{kind}")
    for text in [*TEXTS, "  odd   spacing\tand ünïcode <|endoftext|> next"]:
        ids = tok(text)["input_ids"]
        assert ids == ours.encode(text) and tok.decode(ids) == text
    assert tok.eos_token == tok.bos_token == "<|endoftext|>" and tok.eos_token_id == ours.eot_token
    batch = tok(TEXTS[:2], padding=True, return_tensors="pt")
    assert batch["attention_mask"][0, -1] == 0  # right padding


def test_trust_remote_code_without_importing_futuretoken_hf(runs, tmp_path):
    """A fresh process loads the folder through its own modeling_futuretoken.py (auto_map)."""
    ours = ft.load(runs / "ftp")
    idx = torch.tensor([ours.tokenizer.encode(TEXTS[1])])
    script = (
        "import sys, torch\n"
        "from transformers import AutoModel, AutoModelForCausalLM\n"
        f"path, idx = {str(runs / 'hf-ftp')!r}, torch.tensor({idx.tolist()})\n"
        "lm = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)\n"
        "base = AutoModel.from_pretrained(path, trust_remote_code=True)\n"
        "assert 'futuretoken.hf' not in sys.modules, 'remote code should not need futuretoken.hf'\n"
        "with torch.no_grad():\n"
        "    torch.save({'logits': lm(idx).logits, 'hidden': base(idx).last_hidden_state}, sys.argv[1])\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "o.pt")], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    got = torch.load(tmp_path / "o.pt")
    with torch.no_grad():
        want = ours(idx)
    # Another process may use another number of threads: equal up to float summation order.
    torch.testing.assert_close(got["logits"], want.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got["hidden"], want.hidden, atol=1e-5, rtol=1e-5)


def test_lm_eval_local_task_scores(runs, data_dir, tmp_path):
    pytest.importorskip("lm_eval")
    from futuretoken.hf import TASK, build_local_task, evaluate_local_task

    task_dir = build_local_task(data_dir, tmp_path / "task", n=24, context_words=4)
    items = [json.loads(line) for line in (task_dir / f"{TASK}.jsonl").read_text().splitlines()]
    assert len(items) == 24 and all(len(i["choices"]) == 4 and 0 <= i["label"] < 4 for i in items)
    assert str(task_dir / f"{TASK}.jsonl") in (task_dir / f"{TASK}.yaml").read_text()
    scores = evaluate_local_task(runs / "hf-gpt", task_dir, batch_size=24)
    assert math.isfinite(scores["acc,none"]) and 0.0 <= scores["acc,none"] <= 1.0
    assert scores["sample_len"] == 24


def test_sentence_transformer_encode_equals_embed(runs, kind):
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(runs / f"hf-{kind}"), device="cpu")
    want = ft.embed(ft.load(runs / kind), TEXTS, pool="mean")
    np.testing.assert_allclose(st.encode(TEXTS, batch_size=3), want, atol=1e-5)


def test_gpt2_tokenizer_converts_exactly():
    pytest.importorskip("tiktoken")
    from futuretoken.data.tokenizer import TiktokenTokenizer
    from futuretoken.hf import hf_tokenizer

    ours = TiktokenTokenizer()
    tok = hf_tokenizer(ours, 1024)
    texts = ["Hello world! It's 2026 - naive café, 12345.\n\n  spaces   and\ttabs<|endoftext|>next", "日本語 🎉",
             " leading space", "don't won't I'll they're"]
    for text in texts:
        assert tok(text)["input_ids"] == ours.encode(text) and tok.decode(ours.encode(text)) == text


def test_cli_export_hf(runs, tmp_path):
    out = run_cli("export-hf", str(runs / "gpt"), str(tmp_path / "x"), "--pool", "last")
    assert out.returncode == 0, out.stderr
    names = {p.name for p in (tmp_path / "x").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "modeling_futuretoken.py", "modules.json"} <= names
    assert json.loads((tmp_path / "x/1_Pooling/config.json").read_text())["pooling_mode_lasttoken"]
    bad = run_cli("export-hf", str(tmp_path / "missing"), str(tmp_path / "y"))
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr
