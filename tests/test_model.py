import pytest
import torch

import futuretoken as ft
from conftest import tiny_config


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_causality(model, seed, device):
    model = model.to(device)
    g = torch.Generator().manual_seed(seed)
    T = model.config.block_size
    idx = torch.randint(0, 64, (2, T), generator=g)
    t = int(torch.randint(0, T - 1, (1,), generator=g))
    changed = idx.clone()
    changed[:, t + 1 :] = torch.randint(0, 64, (2, T - t - 1), generator=g)
    a, b = model(idx.to(device)), model(changed.to(device))
    torch.testing.assert_close(a.hidden[:, : t + 1], b.hidden[:, : t + 1], rtol=0, atol=1e-6)
    torch.testing.assert_close(a.logits[:, : t + 1], b.logits[:, : t + 1], rtol=0, atol=1e-5)
    assert not torch.allclose(a.hidden[:, t + 1 :], b.hidden[:, t + 1 :])  # the test can see a change


def test_ftp_future_loss_is_causal_in_the_encoder_state():
    """A prediction made from position t may depend on x_{t+1..t+N-1} only through teacher
    forcing of earlier outputs of the same position: output k must not see x_{t+k}."""
    model = ft.FTP(tiny_config(horizon=4)).eval()
    N = 4
    tokens = torch.randint(0, 64, (1, 12 + N))
    h = model.encoder(tokens[:, :12])[0]  # (T, d)
    inputs, _ = ft.model.future_targets(tokens, N, None)
    mem = model.cross_kv(h)
    feats = model.decode(inputs[0], mem)  # (T, N, d)
    for k in range(N):
        altered = inputs[0].clone()
        altered[:, k:] = (altered[:, k:] + 1) % 64
        alt = model.decode(altered, mem)
        torch.testing.assert_close(feats[:, :k], alt[:, :k], rtol=0, atol=1e-6)


def test_cached_encoding_equals_full_forward(model, device):
    model = model.to(device)
    idx = torch.randint(0, 64, (3, 20), device=device)
    full = model(idx)
    cache = model.new_cache(3)
    pieces = [model(idx[:, :7], cache), model(idx[:, 7:8], cache), model(idx[:, 8:20], cache)]
    torch.testing.assert_close(torch.cat([p.hidden for p in pieces], 1), full.hidden, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat([p.logits for p in pieces], 1), full.logits, atol=1e-4, rtol=1e-4)


def test_cache_truncate_rolls_back():
    model = ft.GPT(tiny_config()).eval()
    idx = torch.randint(0, 64, (1, 10))
    cache = model.new_cache(1)
    model(idx[:, :6], cache)
    model(torch.randint(0, 64, (1, 3)), cache)  # a rejected draft
    for c in cache:
        c.truncate(6)
    out = model(idx[:, 6:], cache)
    torch.testing.assert_close(out.hidden, model(idx).hidden[:, 6:], atol=1e-5, rtol=1e-5)


def test_decoder_step_by_step_equals_full_decode():
    model = ft.FTP(tiny_config()).eval()
    h = torch.randn(5, 32)
    inputs = torch.randint(0, 64, (5, 4))
    mem = model.cross_kv(h)
    full = model.decode(inputs, mem)
    cache = model.new_decoder_cache(5)
    steps = [model.decode(inputs[:, i : i + 1], mem, cache=cache) for i in range(4)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_ftp_next_token_logits_are_decoder_first_output():
    model = ft.FTP(tiny_config()).eval()
    idx = torch.randint(0, 64, (2, 9))
    out = model(idx)
    h = out.hidden[:, -1]
    first = model.decode(idx[:, -1:], model.cross_kv(h))[:, 0] @ model.head_weight.T
    torch.testing.assert_close(out.logits[:, -1], first, atol=1e-5, rtol=1e-5)


def test_ftp_without_decoder_and_n1_is_gpt():
    cfg = tiny_config(horizon=1, dec_layer=0)
    gpt, ftp = ft.GPT(cfg), ft.FTP(cfg)
    ftp.encoder.load_state_dict(gpt.encoder.state_dict())
    tokens = torch.randint(0, 64, (2, 17))
    torch.testing.assert_close(ftp.loss(tokens).total, gpt.loss(tokens).total)
    torch.testing.assert_close(ftp(tokens).logits, gpt(tokens).logits)


def test_decoder_needs_layers_for_horizon_above_one():
    with pytest.raises(ValueError, match="horizon=1"):
        ft.FTP(tiny_config(horizon=2, dec_layer=0))


@pytest.mark.parametrize("name", ["gpt", "ftp"])
def test_overfits_one_batch(name):
    model = ft.MODELS[name](tiny_config(block_size=16))
    tokens = torch.randint(0, 64, (4, 16 + model.horizon))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(300):
        loss = model.loss(tokens).total
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05, loss.item()


def test_block_size_is_enforced(model):
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, model.config.block_size + 1, dtype=torch.long))


def test_flop_and_parameter_counts_grow_with_the_decoder():
    cfg = ft.ModelConfig.preset("gpt2-124m")
    gpt, ftp = ft.training_flops_per_token(cfg, "gpt"), ft.training_flops_per_token(cfg, "ftp")
    assert 3 < ftp / gpt < 8  # PAPER.md: roughly 4-5x at GPT-2-small width, N=8
    half = ft.ModelConfig.preset("gpt2-124m", decoder_fraction=0.25)
    assert ft.training_flops_per_token(half, "ftp") < ftp
    # The analytic count matches parameters: a non-embedding matmul weight costs 6 FLOPs per use.
    small = tiny_config()
    g = ft.GPT(small)
    d, L = small.n_embd, small.n_layer
    block_weights = sum(p.numel() for n, p in g.named_parameters() if n.startswith("encoder.blocks") and p.dim() == 2)
    assert block_weights == L * 12 * d * d
    expected = 3 * (2 * block_weights + L * 4 * small.block_size * d + 2 * d * small.vocab_size)
    assert ft.training_flops_per_token(small, "gpt") == expected


def test_learned_decoder_start_never_reads_the_current_token():
    """With decoder_start = "learned" the first decoder output depends on x_t only through h_t."""
    model = ft.FTP(tiny_config(decoder_start="learned")).eval()
    torch.nn.init.normal_(model.dec_start)
    h = torch.randn(6, 32)
    mem = model.cross_kv(h)
    inputs = torch.randint(0, 64, (6, 4))
    other = inputs.clone()
    other[:, 0] = (other[:, 0] + 1) % 64
    torch.testing.assert_close(model.decode(inputs, mem), model.decode(other, mem), rtol=0, atol=0)
    current = ft.FTP(tiny_config()).eval()
    current.load_state_dict({k: v for k, v in model.state_dict().items() if k != "dec_start"})
    assert not torch.allclose(current.decode(inputs, mem)[:, 0], current.decode(other, mem)[:, 0])


def test_learned_start_generates_and_speculative_equals_ar():
    model = ft.FTP(tiny_config(decoder_start="learned")).eval()
    torch.nn.init.normal_(model.dec_start)
    prompt = torch.randint(0, 64, (2, 5))
    greedy = ft.SamplingConfig(temperature=0)
    ar = ft.generate(model, prompt, 12, "ar", greedy).tokens
    assert torch.equal(ft.generate(model, prompt, 12, "speculative", greedy).tokens, ar)
