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
from futuretoken.training import train  # noqa: E402

TEXTS = ["alpha beta gamma", "delta epsilon zeta eta theta iota.", "mu", "kappa lambda mu alpha beta gamma delta"]


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
    """Trained runs RUNS/{gpt,ftp,mtp,mtp_seq} and their exports RUNS/hf-{gpt,ftp,mtp,mtp_seq}."""
    import futuretoken.hf as fh

    root = tmp_path_factory.mktemp("hf")
    for kind in ("ftp", "gpt", "mtp", "mtp_seq"):
        train(run_config(data_dir, root / kind, kind, max_steps=8, ckpt_interval=8, eval_interval=8))
        fh.export_hf(root / kind, root / f"hf-{kind}")
    return root


@pytest.fixture(params=["gpt", "ftp"])
def kind(request):
    """The wrapper's machinery (attention implementations, torch.export, Trainer, tokenizer, pooling) is
    the same for every model type; GPT and FTP, whose next-token paths differ, exercise it."""
    return request.param


@pytest.fixture(params=["gpt", "ftp", "mtp", "mtp_seq"])
def any_kind(request):
    """Every model type: export, loading, logits and generation."""
    return request.param


def test_from_pretrained_gives_identical_logits(runs, any_kind):
    from transformers import AutoConfig, AutoModelForCausalLM

    from futuretoken.hf import CAUSAL_LM, CONFIGS

    kind = any_kind
    ours = ft.load(runs / kind)
    hf = AutoModelForCausalLM.from_pretrained(runs / f"hf-{kind}").eval()
    assert type(hf) is CAUSAL_LM[kind] and type(hf.model) is type(ours)
    assert AutoConfig.from_pretrained(runs / f"hf-{kind}").model_type == CONFIGS[kind].model_type
    assert hf.model.config == ours.config
    assert all(torch.equal(hf.model.state_dict()[k], v) for k, v in ours.state_dict().items())  # heads, modules too
    idx = torch.randint(0, ours.config.vocab_size, (2, ours.config.block_size))
    with torch.no_grad():
        out = hf(idx, labels=idx)
        assert out.logits.shape == (2, ours.config.block_size, ours.config.vocab_size)
        assert torch.equal(out.logits, ours(idx).logits)
        if kind == "gpt":  # labels: the shifted mean cross-entropy, our own next-token loss
            assert torch.allclose(out.loss, ours.loss(idx).total, atol=1e-5)
    # Wrapping shares tensors; the head stays the token embedding after save/load.
    assert CAUSAL_LM[kind].from_module(ours).model.encoder.wte.weight is ours.encoder.wte.weight
    assert hf.model.head_weight is hf.get_input_embeddings().weight


def _hf_model(runs, kind):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(runs / f"hf-{kind}").eval()
    hf.generation_config.eos_token_id = None  # futuretoken's generate does not stop at end-of-text
    return hf


def test_hf_greedy_generate_equals_our_ar(runs, any_kind):
    """Prompts of different lengths, left-padded by the tokenizer: every row is our `ar` of that prompt
    alone, with the KV cache (the default) and without."""
    from transformers import AutoTokenizer

    kind = any_kind
    ours = ft.load(runs / kind)
    hf = _hf_model(runs, kind)
    assert hf.config.use_cache and hf.generation_config.use_cache
    tok = AutoTokenizer.from_pretrained(runs / f"hf-{kind}", padding_side="left")
    batch = tok(TEXTS, return_tensors="pt", padding=True)
    n = hf.config.block_size - batch["input_ids"].shape[1]  # the longest prompt's room
    assert n >= 4 and (batch["attention_mask"] == 0).any()
    greedy = ft.SamplingConfig(temperature=0)
    want = [ft.generate(ours, [ours.tokenizer.encode(t)], n, sampling=greedy).tokens[0].tolist() for t in TEXTS]
    for use_cache in (True, False):
        got = hf.generate(**batch, max_new_tokens=n, do_sample=False, use_cache=use_cache)
        rows = [row[mask.bool()].tolist() for row, mask in zip(got[:, :-n], batch["attention_mask"])]
        assert [r + g for r, g in zip(rows, got[:, -n:].tolist())] == want


def test_hf_cache_encodes_each_token_once(runs, kind):
    """With the cache, every step after the prompt feeds the model one new token, not the sequence."""
    hf = _hf_model(runs, kind)
    lengths = []
    hook = hf.model.encoder.register_forward_pre_hook(lambda m, args: lengths.append(args[0].shape[1]))
    try:
        hf.generate(torch.tensor([[5, 6, 7, 8]]), max_new_tokens=5, do_sample=False)
    finally:
        hook.remove()
    assert lengths == [4, 1, 1, 1, 1]


@pytest.mark.parametrize("drafting", ["ftp", "mtp", "mtp_seq"])
def test_speculative_from_hf_generate_equals_greedy(runs, drafting):
    from transformers import AutoTokenizer

    from futuretoken.hf import speculative_decoding

    hf = _hf_model(runs, drafting)
    tok = AutoTokenizer.from_pretrained(runs / f"hf-{drafting}", padding_side="left")
    batch = tok(TEXTS, return_tensors="pt", padding=True)
    n = hf.config.block_size - batch["input_ids"].shape[1]
    plain = hf.generate(**batch, max_new_tokens=n, do_sample=False)
    for draft_len in (2, 3):
        fast = hf.generate(**batch, max_new_tokens=n, do_sample=False, custom_generate=speculative_decoding,
                           draft_len=draft_len)
        assert torch.equal(fast, plain)
    gpt = _hf_model(runs, "gpt")
    with pytest.raises(ValueError, match="FTP's decoder, MTP's heads or MTP-seq's modules"):
        gpt.generate(**batch, max_new_tokens=2, custom_generate=speculative_decoding)
    with pytest.raises(ValueError, match="repetition_penalty"):
        hf.generate(**batch, max_new_tokens=2, custom_generate=speculative_decoding, repetition_penalty=1.3)


def test_padding_left_and_right_are_exact(runs, kind):
    hf = _hf_model(runs, kind)
    idx = torch.randint(0, 300, (3, 6))
    with torch.no_grad():
        alone = hf(idx[2:, :3]).logits[0]  # (3, V)
        right = hf(idx, attention_mask=torch.tensor([[1] * 6, [1] * 6, [1, 1, 1, 0, 0, 0]])).logits[2, :3]
        left_ids = torch.cat([idx[:, 3:], idx[:, :3]], 1)  # row 2: 3 pads, then its 3 tokens
        left = hf(left_ids, attention_mask=torch.tensor([[1] * 6, [1] * 6, [0, 0, 0, 1, 1, 1]])).logits[2, 3:]
    torch.testing.assert_close(right, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(left, alone, atol=1e-5, rtol=1e-5)


def test_config_from_partial_arguments():
    from futuretoken.config import ConfigError
    from futuretoken.hf import FTPConfig, FTPForCausalLM, GPTConfig

    config = FTPConfig(n_layer=1, n_embd=48, vocab_size=100)
    assert (config.n_layer, config.horizon, config.num_hidden_layers, config.hidden_size) == (1, 8, 1, 48)
    assert config.to_model_config() == ft.ModelConfig(n_layer=1, n_embd=48, vocab_size=100)
    model = FTPForCausalLM(config)
    assert model(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 100)
    assert GPTConfig().to_model_config() == ft.ModelConfig()
    with pytest.raises(ConfigError, match="n_head=5"):
        GPTConfig(n_head=5)


def test_attention_implementations_and_recorded_outputs(runs, kind):
    """sdpa (what runs) is accepted; eager computes attention explicitly: same logits, and its weights."""
    from transformers import AutoModelForCausalLM

    path = runs / f"hf-{kind}"
    sdpa = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa").eval()
    eager = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    idx, mask = torch.randint(0, 300, (2, 5)), torch.tensor([[1] * 5, [0, 0, 1, 1, 1]])
    with torch.no_grad():
        a = sdpa(idx, attention_mask=mask, output_hidden_states=True)
        b = eager(idx, attention_mask=mask, output_attentions=True, output_hidden_states=True)
        as_tuple = sdpa(idx, attention_mask=mask, return_dict=False)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-5)
    c = sdpa.config
    assert len(a.hidden_states) == c.n_layer + 1 and a.attentions is None
    assert torch.equal(a.hidden_states[-1], sdpa.model.encoder(idx, key_padding_mask=mask.bool(),
                                                                positions=(mask.cumsum(1) - 1).clamp(min=0)))
    assert [w.shape for w in b.attentions] == [(2, c.n_head, 5, 5)] * c.n_layer
    assert float(b.attentions[0][1, :, 2:, :2].abs().max()) == 0.0  # no real token attends to the pads
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], a.logits)


def test_export_with_attention_mask(runs, kind):
    """torch.export traces the forward with a padding mask (no data-dependent branch) and runs it exactly."""
    hf = _hf_model(runs, kind)
    hf.config.use_cache = False
    idx, mask = torch.randint(0, 300, (2, 6)), torch.tensor([[1] * 6, [0, 0, 1, 1, 1, 1]])
    program = torch.export.export(hf, (idx,), {"attention_mask": mask})
    other = torch.randint(0, 300, (2, 6))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(other, attention_mask=mask).logits,
                                   hf(other, attention_mask=mask).logits)


def test_trainer_gradient_accumulation_equals_one_batch(runs, kind, tmp_path):
    """transformers' Trainer: 4 micro-batches of 2 (num_items_in_batch) give the loss and the gradient of one
    batch of 8, although the micro-batches count different numbers of targets."""
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    g = torch.Generator().manual_seed(0)
    rows = []
    for n in (12, 3, 8, 5, 12, 2, 9, 6):  # real tokens per row, right-padded to 12
        ids = torch.randint(0, 300, (12,), generator=g)
        mask = (torch.arange(12) < n).long()
        rows.append({"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)})

    def load():
        return AutoModelForCausalLM.from_pretrained(runs / f"hf-{kind}", dropout=0.0)  # the runs train with dropout

    def one_step(batch: int, accumulation: int):
        model = load()
        before = [p.detach().clone() for p in model.parameters()]
        args = TrainingArguments(output_dir=str(tmp_path / f"{batch}x{accumulation}"), per_device_train_batch_size=batch,
                                 gradient_accumulation_steps=accumulation, max_steps=1, learning_rate=1.0, optim="sgd",
                                 lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0, logging_steps=1,
                                 save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=0)
        trainer = Trainer(model=model, args=args, train_dataset=rows)
        trainer.train()
        step = [b - a.detach() for a, b in zip(model.parameters(), before)]  # lr 1, plain SGD: the gradient
        return trainer.state.log_history[0]["loss"], step

    with torch.no_grad():  # the reference: mean shifted cross-entropy over every counted target of the 8 rows
        reference = load()(**{k: torch.stack([r[k] for r in rows]) for k in rows[0]}).loss
    loss_1, grad_1 = one_step(8, 1)
    loss_4, grad_4 = one_step(2, 4)
    assert loss_1 == pytest.approx(float(reference), rel=1e-5)
    assert loss_4 == pytest.approx(float(reference), rel=1e-5)
    for a, b in zip(grad_1, grad_4):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


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


# A process where futuretoken cannot be imported: the machine of someone with only transformers installed.
WITHOUT_FUTURETOKEN = (
    "import sys\n"
    "class _NoFuturetoken:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] == 'futuretoken':\n"
    "            raise ModuleNotFoundError('futuretoken is not installed here')\n"
    "sys.meta_path.insert(0, _NoFuturetoken())\n"
)


@pytest.mark.parametrize("remote", ["ftp", "mtp_seq"])
def test_exports_load_and_save_again_where_only_transformers_is_installed(runs, tmp_path, remote):
    """The folder as the Hub serves it: the model through its self-contained modeling_futuretoken.py
    (trust_remote_code), the tokenizer with no remote code and no question asked, and a
    save_pretrained of the loaded model (what push_to_hub uploads) that loads the same way again.
    A model loaded in-process through futuretoken.hf and saved again also keeps what that needs."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import futuretoken.hf  # noqa: F401  (registers the classes: no remote code in this process)

    ours = ft.load(runs / remote)
    idx = torch.tensor([ours.tokenizer.encode(TEXTS[1])])
    resaved = tmp_path / "resaved-here"
    AutoModelForCausalLM.from_pretrained(runs / f"hf-{remote}").save_pretrained(resaved)
    AutoTokenizer.from_pretrained(runs / f"hf-{remote}").save_pretrained(resaved)
    script = WITHOUT_FUTURETOKEN + (
        "import torch\n"
        "from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer\n"
        f"folders, idx, text = sys.argv[2:], torch.tensor({idx.tolist()}), {TEXTS[1]!r}\n"
        "out = {}\n"
        "for i, path in enumerate(folders):\n"
        "    lm = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)\n"
        "    base = AutoModel.from_pretrained(path, trust_remote_code=True)\n"
        "    tok = AutoTokenizer.from_pretrained(path)\n"
        "    assert tok(text)['input_ids'] == idx[0].tolist(), 'tokenizer'\n"
        "    lm.save_pretrained(sys.argv[1] + f'-{i}')\n"
        "    tok.save_pretrained(sys.argv[1] + f'-{i}')\n"
        "    again = AutoModelForCausalLM.from_pretrained(sys.argv[1] + f'-{i}', trust_remote_code=True)\n"
        "    with torch.no_grad():\n"
        "        out[i] = {'logits': lm(idx).logits, 'hidden': base(idx).last_hidden_state, 'again': again(idx).logits}\n"
        "torch.save(out, sys.argv[1])\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "o.pt"), str(runs / f"hf-{remote}"),
                          str(resaved)], capture_output=True, text=True, env=env, timeout=300,
                         stdin=subprocess.DEVNULL)  # a "run custom code? [y/N]" question would fail here
    assert run.returncode == 0, run.stderr
    with torch.no_grad():
        want = ours(idx)
    for got in torch.load(tmp_path / "o.pt").values():
        # Another process may use another number of threads: equal up to float summation order.
        torch.testing.assert_close(got["logits"], want.logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got["again"], want.logits, atol=1e-5, rtol=1e-5)
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


@pytest.mark.parametrize("pool", ["mean", "last", "weighted_mean"])
def test_sentence_transformer_encode_equals_ours(runs, kind, pool, tmp_path):
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer

    import futuretoken.hf as fh

    folder = runs / f"hf-{kind}" if pool == "mean" else fh.export_hf(runs / kind, tmp_path / "st", pool=pool)
    st = SentenceTransformer(str(folder), device="cpu")
    ours = ft.load(runs / kind)
    np.testing.assert_allclose(st.encode(TEXTS, batch_size=3), ft.encode(ours, TEXTS, pool=pool), atol=1e-5)
    np.testing.assert_allclose(st.encode(TEXTS, batch_size=3, normalize_embeddings=True),
                               ft.encode(ours, TEXTS, pool=pool, normalize=True, batch_size=2), atol=1e-5)


def test_mteb_encoder_scores_a_local_task(runs):
    """MTEB (>= 2) runs our encoder on an STS task built here (no download); its score is the Spearman
    correlation of our own cosine similarities with the gold scores."""
    pytest.importorskip("mteb")
    import mteb
    from datasets import Dataset, DatasetDict
    from mteb.abstasks.sts import AbsTaskSTS
    from mteb.abstasks.task_metadata import TaskMetadata
    from scipy.stats import spearmanr

    from futuretoken.hf.mteb import MTEBEncoder

    pairs = [("alpha beta gamma", "alpha beta delta", 5.0), ("mu kappa", "mu kappa lambda", 4.0),
             ("eta theta iota.", "zeta eta", 2.5), ("delta", "kappa lambda mu alpha beta", 1.0),
             ("gamma gamma", "iota", 0.0)]

    class LocalSTS(AbsTaskSTS):
        metadata = TaskMetadata(
            type="STS", name="FutureTokenLocalSTS", main_score="cosine_spearman", description="a local STS task",
            reference=None, dataset={"path": "local", "revision": "local"}, category="t2t", eval_splits=["test"],
            eval_langs=["eng-Latn"], date=None, dialect=[], domains=[], task_subtypes=[], license="not specified",
            annotations_creators="derived", modalities=["text"], sample_creation="created", bibtex_citation="")

        def load_data(self, **kwargs):
            columns = dict(zip(("sentence1", "sentence2", "score"), map(list, zip(*pairs))))
            self.dataset = DatasetDict({"test": Dataset.from_dict(columns)})
            self.data_loaded = True

    model = ft.load(runs / "ftp")
    result = mteb.evaluate(MTEBEncoder(model, pool="weighted_mean"), LocalSTS(), cache=None, show_progress_bar=False)
    score = result.task_results[0].scores["test"][0]["main_score"]
    a, b = (ft.encode(model, list(texts), pool="weighted_mean", normalize=True) for texts in list(zip(*pairs))[:2])
    assert score == pytest.approx(spearmanr((a * b).sum(1), [p[2] for p in pairs]).statistic)


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
