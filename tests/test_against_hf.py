"""Our GPT baseline IS GPT-2: its weights, copied into transformers' own GPT2LMHeadModel (code we did not
write), give the same logits, the same next-token loss and the same greedy continuations, in float64.
Checked at GPT-2 init and with every parameter moved away from it (LayerNorms off 1/0, biases non-zero),
with and without biases."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("transformers")

import torch.nn.functional as F  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

import futuretoken as ft  # noqa: E402
from conftest import tiny_config  # noqa: E402

TIGHT = dict(rtol=1e-10, atol=1e-10)  # float64 on both sides: only summation order differs


def to_hf_gpt2(model: ft.GPT) -> GPT2LMHeadModel:
    """transformers' GPT-2 holding our GPT's weights (same dtype), in eval mode, eager attention.

    ours (model.)                                theirs (GPT2LMHeadModel.)
    encoder.wte.weight[:vocab_size]              transformer.wte.weight, tied lm_head.weight
                                                 (padded rows are never input nor predicted: dropped)
    encoder.wpe.weight                           transformer.wpe.weight            (n_positions = block_size)
    encoder.blocks[i].ln_1 / ln_2                transformer.h[i].ln_1 / ln_2
    cat(attn.q, attn.kv) out-features (q, k, v)  transformer.h[i].attn.c_attn      (Conv1D: weight.T)
    attn.proj                                    transformer.h[i].attn.c_proj      (Conv1D: weight.T)
    mlp.fc / mlp.proj                            transformer.h[i].mlp.c_fc / c_proj (Conv1D: weight.T)
    encoder.ln_f                                 transformer.ln_f
    bias=False: GPT-2 always has biases; ours are absent, i.e. zero.
    Fixed by GPT-2 and matched by ours: GELU tanh approximation (gelu_new), scores / sqrt(head_dim),
    pre-norm blocks, LayerNorm eps 1e-5 (read from our modules), no dropout in eval.
    """
    c = model.config
    enc = model.encoder
    eps = {m.eps for m in model.modules() if isinstance(m, torch.nn.LayerNorm)}
    assert len(eps) == 1
    cfg = GPT2Config(vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer,
                     n_head=c.n_head, n_inner=4 * c.n_embd, activation_function="gelu_new",
                     layer_norm_epsilon=eps.pop(), resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False, reorder_and_upcast_attn=False,
                     tie_word_embeddings=True, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    cfg._attn_implementation = "eager"  # HF's explicit softmax(QK^T)V, while ours runs SDPA
    dtype = enc.wte.weight.dtype
    hf = GPT2LMHeadModel(cfg).to(dtype).eval()

    def linear(prefix, weight, bias):  # nn.Linear (out, in) -> Conv1D (in, out)
        return {f"{prefix}.weight": weight.T, f"{prefix}.bias": bias if bias is not None else
                torch.zeros(weight.shape[0], dtype=weight.dtype)}

    def norm(prefix, ln):
        return {f"{prefix}.weight": ln.weight,
                f"{prefix}.bias": ln.bias if ln.bias is not None else torch.zeros_like(ln.weight)}

    sd = {"transformer.wte.weight": enc.wte.weight[: c.vocab_size], "transformer.wpe.weight": enc.wpe.weight,
          "lm_head.weight": enc.wte.weight[: c.vocab_size], **norm("transformer.ln_f", enc.ln_f)}
    for i, b in enumerate(enc.blocks):
        p, a = f"transformer.h.{i}", b.attn
        qkv_b = None if a.q.bias is None else torch.cat([a.q.bias, a.kv.bias])  # kv: k rows, then v rows
        sd |= linear(f"{p}.attn.c_attn", torch.cat([a.q.weight, a.kv.weight]), qkv_b)
        sd |= linear(f"{p}.attn.c_proj", a.proj.weight, a.proj.bias)
        sd |= linear(f"{p}.mlp.c_fc", b.mlp.fc.weight, b.mlp.fc.bias)
        sd |= linear(f"{p}.mlp.c_proj", b.mlp.proj.weight, b.mlp.proj.bias)
        sd |= norm(f"{p}.ln_1", b.ln_1) | norm(f"{p}.ln_2", b.ln_2)
    hf.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=True)  # every HF tensor is ours
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()  # still tied after loading
    return hf


@pytest.fixture(params=[True, False], ids=["bias", "no-bias"])
def bias(request) -> bool:
    return request.param


@pytest.fixture(params=["init", "perturbed"])
def ours(request, bias) -> ft.GPT:
    """A tiny float64 GPT, vocabulary 96 padded to 128 rows. "perturbed": every parameter gets noise, so a
    mapping that drops a LayerNorm or bias, or mixes up what is zero/one at init, cannot pass."""
    model = ft.MODELS["gpt"](tiny_config(vocab_size=96, vocab_multiple=64, bias=bias)).double().eval()
    assert model.config.padded_vocab_size == 128 and model.config.dropout == 0.0 and model.horizon == 1
    if request.param == "perturbed":
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def test_logits_match_hf_gpt2(ours):
    hf = to_hf_gpt2(ours)
    idx = torch.randint(0, ours.config.vocab_size, (3, ours.config.block_size))
    with torch.no_grad():
        want = hf(idx).logits
        got = ours(idx).logits
    assert got.dtype == want.dtype == torch.float64 and got.shape == want.shape == (3, 32, 96)
    assert want.std() > 1e-3  # not a degenerate comparison of near-zero numbers
    torch.testing.assert_close(got, want, **TIGHT)


@pytest.mark.parametrize("loss_impl", ["torch", "chunked"])
def test_loss_matches_hf_gpt2(ours, loss_impl):
    """Our loss of a (B, T + 1) window is GPT-2's shifted cross-entropy. HF's `labels=` loss casts the
    logits to float32 first (ForCausalLMLoss), so it matches to float32 precision; the same loss on HF's
    float64 logits matches tightly."""
    ours.config.loss_impl = loss_impl
    hf = to_hf_gpt2(ours)
    tokens = torch.randint(0, ours.config.vocab_size, (3, ours.config.block_size))  # T + 1 = block_size
    with torch.no_grad():
        out = hf(tokens, labels=tokens)
        got = ours.loss(tokens).total
    assert got.dtype == torch.float64
    exact = F.cross_entropy(out.logits[:, :-1].reshape(-1, ours.config.vocab_size), tokens[:, 1:].reshape(-1))
    torch.testing.assert_close(got, exact, **TIGHT)
    torch.testing.assert_close(got, out.loss.double(), rtol=1e-6, atol=1e-6)


def test_greedy_generation_matches_hf_gpt2(ours):
    """Equal-length prompts, then left-padded ones (both sides put a row's first real token at position 0)."""
    hf = to_hf_gpt2(ours)
    greedy = ft.SamplingConfig(temperature=0)
    prompts = torch.randint(0, ours.config.vocab_size, (3, 5))
    want = hf.generate(prompts, max_new_tokens=8, do_sample=False, pad_token_id=0)
    got = ft.generate(ours, prompts, max_new_tokens=8, sampling=greedy).tokens
    assert want.shape == (3, 13) and torch.equal(got, want)

    mask = torch.tensor([[1] * 5, [0, 0, 1, 1, 1], [0, 0, 0, 0, 1]])
    want = hf.generate(prompts * mask, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0)
    got = ft.generate(ours, prompts * mask, attention_mask=mask, max_new_tokens=8, sampling=greedy).tokens
    assert torch.equal(got, want)
