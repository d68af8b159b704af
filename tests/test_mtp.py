"""MTP (parallel heads, Gloeckle et al.) and MTP-seq (sequential modules, DeepSeek-V3): losses against
slow references, causality of every prediction, the sequential backward, horizon 1 == GPT, FLOP counts."""

import pytest
import torch
import torch.nn.functional as F

import futuretoken as ft
from conftest import tiny_config
from futuretoken.config import ConfigError

EOT = 0


def _crosses_document(tokens: torch.Tensor, b: int, t: int, k: int, eot: int | None) -> bool:
    """Target x_{t+k} of position t lies in a later document: an end-of-text token in x_{t+1..t+k-1}."""
    return eot is not None and any(int(tokens[b, t + j]) == eot for j in range(1, k))


def reference_mtp_loss(model: ft.MTP, tokens: torch.Tensor, eot: int | None):
    """Slow and obvious: the trunk by hand, every head's full logits, one cross-entropy per target."""
    N = model.config.horizon
    B, L = tokens.shape
    T = L - N
    enc = model.encoder
    z = enc.wte(tokens[:, :T]) + enc.wpe(torch.arange(T))
    for block in enc.blocks[:-1]:
        z = block(z)
    total, per_k = 0.0, []
    for k, head in enumerate([enc.blocks[-1], *model.heads], start=1):
        logits = enc.ln_f(head(z)) @ model.head_weight.T  # (B, T, V)
        ces = [F.cross_entropy(logits[b, t], tokens[b, t + k]) for b in range(B) for t in range(T)
               if not _crosses_document(tokens, b, t, k, eot)]
        total = total + sum(ces)
        per_k.append(sum(c.item() for c in ces) / len(ces))
    return total / (B * T), per_k


def reference_mtp_seq_loss(model: ft.MTPSeq, tokens: torch.Tensor, eot: int | None):
    """Slow and obvious: module k by hand on [norm(h^{k-1}); norm(Emb(x_{t+k}))], one cross-entropy per target."""
    c = model.config
    N, D = c.horizon, c.horizon - 1
    B, L = tokens.shape
    T = L - N
    enc = model.encoder
    state = enc(tokens[:, :T])
    features = [state]
    for k, module in enumerate(model.mtp, start=1):
        joined = torch.cat([module.hnorm(state), module.enorm(enc.wte(tokens[:, k : k + T]))], -1)
        state = module.block(module.proj(joined))
        features.append(enc.ln_f(state))
    total, per_k = 0.0, []
    for k, f in enumerate(features, start=1):  # features[k-1] predicts x_{t+k}
        logits = f @ model.head_weight.T
        ces = [F.cross_entropy(logits[b, t], tokens[b, t + k]) for b in range(B) for t in range(T)
               if not _crosses_document(tokens, b, t, k, eot)]
        total = total + (1.0 if k == 1 else c.mtp_lambda / D) * sum(ces)
        per_k.append(sum(x.item() for x in ces) / len(ces))
    return total / (B * T), per_k


def _tokens(eot: int | None, T: int = 10, N: int = 4) -> torch.Tensor:
    tokens = torch.randint(1, 64, (2, T + N))
    if eot is not None:
        tokens[0, [3, 9]] = EOT
        tokens[1, [5, 6]] = EOT
    return tokens


@pytest.mark.parametrize("backward", ["sequential", "joint"])
@pytest.mark.parametrize("impl", ["torch", "chunked"])
@pytest.mark.parametrize("eot", [None, EOT])
def test_mtp_loss_matches_reference_loop(eot, impl, backward):
    model = ft.MTP(tiny_config(eot_token=eot, loss_impl=impl, mtp_backward=backward)).double().eval()
    tokens = _tokens(eot)
    out = model.loss(tokens)
    ref_total, ref_per_k = reference_mtp_loss(model, tokens, eot)
    assert abs(out.total.item() - ref_total.item()) < 1e-9
    torch.testing.assert_close(out.per_distance.double(), torch.tensor(ref_per_k, dtype=torch.double), atol=1e-9,
                               rtol=0)


@pytest.mark.parametrize("impl", ["torch", "chunked"])
@pytest.mark.parametrize("eot", [None, EOT])
def test_mtp_seq_loss_matches_reference_loop(eot, impl):
    model = ft.MTPSeq(tiny_config(eot_token=eot, loss_impl=impl, mtp_lambda=0.7)).double().eval()
    tokens = _tokens(eot)
    out = model.loss(tokens)
    ref_total, ref_per_k = reference_mtp_seq_loss(model, tokens, eot)
    assert abs(out.total.item() - ref_total.item()) < 1e-9
    torch.testing.assert_close(out.per_distance.double(), torch.tensor(ref_per_k, dtype=torch.double), atol=1e-9,
                               rtol=0)


@pytest.mark.parametrize("cls", [ft.MTP, ft.MTPSeq])
def test_every_prediction_is_causal(cls, device):
    """The feature that predicts x_{t+j} (j = 1..N) never depends on x_{t+j} or later tokens."""
    model = cls(tiny_config()).eval().to(device)
    N, T = model.horizon, 16
    extra = N - 1 if cls is ft.MTPSeq else 0  # MTP-seq's module k reads x_{t+k}: its input runs N-1 tokens ahead
    tokens = torch.randint(0, 64, (2, T + extra), device=device)
    reads_ahead = torch.arange(N, device=device) if cls is ft.MTPSeq else torch.zeros(N, device=device)
    base = model.future_features(tokens)  # (B, T, N, d)
    for u in (3, 9, T - 1):  # change x_u onwards
        changed = tokens.clone()
        changed[:, u:] = (changed[:, u:] + 1 + torch.randint(0, 60, changed[:, u:].shape, device=device)) % 64
        other = model.future_features(changed)
        seen = torch.arange(T, device=device)[:, None] + reads_ahead[None, :]  # (T, N): last token each feature reads
        same = seen < u
        torch.testing.assert_close(other[:, same], base[:, same], rtol=0, atol=1e-6)
        assert not torch.allclose(other[:, ~same], base[:, ~same])  # the test can see a change


@pytest.mark.parametrize("cls", [ft.MTP, ft.MTPSeq])
def test_horizon_one_is_gpt(cls):
    """With one head (no module) the objective, the weights and the predictions are GPT's."""
    cfg = tiny_config(horizon=1)
    gpt, other = ft.GPT(cfg), cls(cfg)
    other.load_state_dict(gpt.state_dict())  # strict: the same parameters
    tokens = torch.randint(0, 64, (2, 17))
    torch.testing.assert_close(other.loss(tokens).total, gpt.loss(tokens).total)
    torch.testing.assert_close(other(tokens).logits, gpt(tokens).logits)


def _loss_grads_and_peak_saved(model, tokens):
    """The loss, every gradient, and the most bytes autograd holds for backward at any moment."""
    from futuretoken.bench.train import saved_activation_bytes

    torch.manual_seed(0)  # dropout draws the same masks in both runs
    peak = saved_activation_bytes(lambda: model.loss(tokens).total, torch.device("cpu"), None)
    torch.manual_seed(0)
    model.zero_grad()
    loss = model.loss(tokens).total
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    return loss.detach(), grads, peak


def test_sequential_head_backward_gives_the_same_gradients_with_less_memory():
    joint, sequential = (ft.MTP(tiny_config(dropout=0.1, block_size=64, eot_token=EOT, mtp_backward=b)).double()
                         for b in ("joint", "sequential"))
    sequential.load_state_dict(joint.state_dict())
    tokens = _tokens(EOT, T=64)
    ref_loss, ref_grads, ref_peak = _loss_grads_and_peak_saved(joint, tokens)
    loss, grads, peak = _loss_grads_and_peak_saved(sequential, tokens)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=0)
    assert set(grads) == set(ref_grads) and all(g.abs().sum() > 0 for g in grads.values())
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-9, atol=1e-12, msg=name)
    assert peak < 0.75 * ref_peak, (peak, ref_peak)  # the 4 heads' activations never live at once


def test_sequential_backward_scales_with_the_incoming_gradient():
    """The trainer rescales the summed loss; gradients computed during forward must follow."""
    model = ft.MTP(tiny_config()).double()
    tokens = _tokens(None)
    (2.5 * model.loss(tokens).weighted_sum).backward()
    scaled = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.config.mtp_backward = "joint"
    (2.5 * model.loss(tokens).weighted_sum).backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(scaled[n], p.grad, rtol=1e-9, atol=1e-12, msg=n)


@pytest.mark.parametrize("name", ["mtp", "mtp_seq"])
def test_overfits_one_batch(name):
    """Every distance can memorise one batch. MTP-seq gets mtp_lambda = D, so each module's
    cross-entropy weighs 1 as the next token's does (as in MTP's plain sum), not lambda / D."""
    cfg = tiny_config(block_size=16)
    model = ft.MODELS[name](tiny_config(block_size=16, mtp_lambda=float(cfg.horizon - 1)))
    tokens = torch.randint(0, 64, (4, 16 + model.horizon))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(200):
        out = model.loss(tokens)
        opt.zero_grad()
        out.total.backward()
        opt.step()
    assert out.per_distance.max() < 0.1, out.per_distance


def test_flop_counts_follow_the_parameters():
    """A non-embedding matmul weight costs 6 FLOPs per token per use in training; the unembedding
    (2 d V forward) runs under every head; attention scores add 4 T d per block."""
    cfg = tiny_config(horizon=3)
    d, T, V = cfg.n_embd, cfg.block_size, cfg.padded_vocab_size
    gpt = ft.training_flops_per_token(cfg, "gpt")
    for name, blocks, heads in (("mtp", "heads", 3), ("mtp_seq", "mtp", 3)):
        model = ft.MODELS[name](cfg)
        extra = sum(p.numel() for n, p in model.named_parameters() if n.startswith(blocks) and p.dim() == 2)
        expected = gpt + 3 * (2 * extra + 2 * 4 * T * d + (heads - 1) * 2 * d * V)
        assert ft.training_flops_per_token(cfg, name) == expected, name


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="mtp_backward='both'"):
        ft.MTP(tiny_config(mtp_backward="both"))
    with pytest.raises(ConfigError, match="mtp_lambda=-0.1"):
        ft.MTPSeq(tiny_config(mtp_lambda=-0.1))
    with pytest.raises(ConfigError, match="train.model='mtp2'.*mtp, mtp_seq"):
        ft.RunConfig.from_dict({"train": {"model": "mtp2"}})


@pytest.mark.parametrize("name", ["mtp", "mtp_seq"])
def test_recomputed_heads_give_the_same_gradients_with_less_memory(name):
    """activation_checkpointing='decoder' recomputes the blocks beside the encoder (MTP's heads 2..N,
    MTP-seq's modules) in backward: the same gradients, fewer saved bytes."""
    from futuretoken.training.parallelize import apply_activation_checkpointing

    plain, recomputed = (ft.MODELS[name](tiny_config(block_size=64, mtp_backward="joint")).double() for _ in range(2))
    recomputed.load_state_dict(plain.state_dict())
    apply_activation_checkpointing(recomputed, "decoder")
    tokens = _tokens(EOT, T=64)
    ref_loss, ref_grads, ref_peak = _loss_grads_and_peak_saved(plain, tokens)
    loss, grads, peak = _loss_grads_and_peak_saved(recomputed, tokens)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=0)
    for n, g in ref_grads.items():
        torch.testing.assert_close(grads[n], g, rtol=1e-9, atol=1e-12, msg=n)
    assert peak < 0.9 * ref_peak, (peak, ref_peak)
