import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import futuretoken as ft
from conftest import tiny_config
from futuretoken.model.loss import IGNORE, future_targets, linear_cross_entropy

EOT = 0


def reference_ftp_loss(model: ft.FTP, tokens: torch.Tensor, eot: int | None):
    """Slow and obvious: one decoder call per (batch row, position), logits in full."""
    N, gamma = model.config.horizon, model.config.gamma
    B, L = tokens.shape
    T = L - N
    num = den = 0.0
    per_k = [[] for _ in range(N)]
    for b in range(B):
        h = model.encoder(tokens[b : b + 1, :T])[0]  # (T, d)
        for t in range(T):
            inputs = tokens[b, t : t + N][None]  # x_t .. x_{t+N-1}
            logits = model.decode(inputs, model.cross_kv(h[t : t + 1]))[0] @ model.head_weight.T  # (N, V)
            for k in range(1, N + 1):
                if eot is not None and any(int(tokens[b, t + j]) == eot for j in range(1, k)):
                    continue  # x_{t+k} is in a later document
                ce = F.cross_entropy(logits[k - 1], tokens[b, t + k])
                num = num + gamma ** (k - 1) * ce
                den += gamma ** (k - 1)
                per_k[k - 1].append(ce.item())
    return num / den, [sum(v) / len(v) for v in per_k]


@pytest.mark.parametrize("impl,start", [("torch", "current"), ("chunked", "current"), ("torch", "learned")])
@pytest.mark.parametrize("gamma", [1.0, 0.7])
@pytest.mark.parametrize("eot", [None, EOT])
def test_ftp_loss_matches_reference_loop(gamma, eot, impl, start, device):
    model = ft.FTP(tiny_config(gamma=gamma, eot_token=eot, loss_impl=impl, decoder_start=start)).double().eval()
    if start == "learned":
        torch.nn.init.normal_(model.dec_start)  # not the zero it starts from: the test must see it
    model = model.to(device)
    tokens = torch.randint(1, 64, (2, 10 + 4))
    if eot is not None:
        tokens[0, [3, 9]] = EOT
        tokens[1, [5, 6]] = EOT
    tokens = tokens.to(device)
    out = model.loss(tokens)
    ref_total, ref_per_k = reference_ftp_loss(model, tokens, eot)
    assert abs(out.total.item() - ref_total.item()) < 1e-5
    torch.testing.assert_close(out.per_distance.double().cpu(), torch.tensor(ref_per_k, dtype=torch.double),
                               atol=1e-5, rtol=0)


def test_gpt_loss_is_plain_cross_entropy():
    model = ft.GPT(tiny_config()).eval()
    tokens = torch.randint(0, 64, (3, 21))
    logits = model(tokens[:, :-1]).logits
    expected = F.cross_entropy(logits.reshape(-1, 64), tokens[:, 1:].reshape(-1))
    torch.testing.assert_close(model.loss(tokens).total, expected, atol=1e-6, rtol=1e-6)


def test_targets_never_cross_a_document_boundary():
    tokens = torch.tensor([[5, 6, EOT, 7, 8, 9, EOT, 1, 2]])
    inputs, targets = future_targets(tokens, horizon=3, eot_token=EOT)
    assert inputs.shape == targets.shape == (1, 6, 3)
    # position 0 (x=5): targets 6, EOT, and 7 (after EOT) is masked
    assert targets[0, 0].tolist() == [6, EOT, IGNORE]
    # position 2 (x=EOT) starts the next document: all of 7, 8, 9 are its future
    assert targets[0, 2].tolist() == [7, 8, 9]
    # position 5 (x=9): EOT, then 1 and 2 are masked
    assert targets[0, 5].tolist() == [EOT, IGNORE, IGNORE]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chunked_loss_and_gradients_match_unchunked(dtype):
    M, d, V = 37, 8, 29
    x = torch.randn(M, d, dtype=dtype, requires_grad=True)
    w = torch.randn(V, d, dtype=dtype, requires_grad=True)
    y = torch.randint(0, V, (M,))
    y[[3, 11]] = IGNORE
    rw = torch.rand(M, dtype=dtype)
    total, per_row = linear_cross_entropy(x, w, y, rw, chunk=5)
    total.backward()
    gx, gw = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    ce = F.cross_entropy(x @ w.T, y, reduction="none", ignore_index=IGNORE)
    ref = (ce * rw).sum()
    ref.backward()
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(total.double(), ref.double(), atol=tol, rtol=tol)
    torch.testing.assert_close(per_row.double(), ce.detach().double(), atol=tol, rtol=tol)
    torch.testing.assert_close(gx, x.grad, atol=tol, rtol=tol)
    torch.testing.assert_close(gw, w.grad, atol=tol, rtol=tol)


class LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("chunk,builds_full", [(16, False), (10**6, True)])
def test_full_logit_tensor_is_never_built(chunk, builds_full):
    cfg = tiny_config(vocab_size=512, loss_chunk=chunk, loss_impl="chunked")  # torch's kernel is opaque here
    model = ft.FTP(cfg)
    B, T, N, V = 2, 16, cfg.horizon, cfg.vocab_size
    tokens = torch.randint(0, V, (B, T + N))
    with LargestTensor() as probe:
        model.loss(tokens).total.backward()
    # With a huge chunk the probe must see the full tensor: proof that it can fail.
    assert (probe.largest >= B * T * N * V) == builds_full
    if not builds_full:
        assert probe.largest <= max(chunk * V, cfg.pseudo_len * cfg.n_embd * cfg.n_embd, B * T * N * 4 * cfg.n_embd)


def test_loss_is_finite_and_near_log_vocab_at_init():
    model = ft.FTP(tiny_config(vocab_size=256))
    out = model.loss(torch.randint(0, 256, (2, 24)))
    assert abs(out.total.item() - math.log(256)) < 0.5
    assert out.n_targets.tolist() == [40] * 4


@pytest.mark.parametrize("cls", [ft.GPT, ft.FTP])
def test_torch_kernel_equals_our_chunked_kernel(cls):
    """torch's F.linear_cross_entropy (the default where it exists) against our kernel, the
    reference: same sums, counts and gradients, with end-of-text masks and a padded vocabulary."""
    results = {}
    for impl in ("torch", "chunked"):
        torch.manual_seed(0)
        model = cls(tiny_config(vocab_size=50, eot_token=EOT, loss_impl=impl, loss_chunk=7)).double()
        tokens = torch.randint(1, 50, (3, 20 + model.horizon), generator=torch.Generator().manual_seed(1))
        tokens[:, 5] = EOT
        out = model.loss(tokens)
        out.total.backward()
        results[impl] = (out, {n: p.grad for n, p in model.named_parameters()})
    (a, ga), (b, gb) = results["torch"], results["chunked"]
    for field in ("weighted_sum", "weight", "ce_sum", "n_targets"):
        torch.testing.assert_close(getattr(a, field), getattr(b, field), rtol=1e-10, atol=1e-10)
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], rtol=1e-9, atol=1e-12, msg=name)


class CountMatmuls(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("grad", [False, True])
def test_no_gradient_work_without_autograd(grad):
    """Under no_grad (validation, evaluation) the chunked kernel only computes losses: one matmul per
    chunk, where training computes the logits' gradients too (two more per chunk)."""
    M, d, V, chunk = 40, 8, 29, 10
    x = torch.randn(M, d, requires_grad=True)
    w = torch.randn(V, d, requires_grad=True)
    y = torch.randint(0, V, (M,))
    with torch.set_grad_enabled(grad), CountMatmuls() as counter:
        linear_cross_entropy(x, w, y, torch.ones(M), chunk)
    assert counter.count == (3 if grad else 1) * (M // chunk)


def test_padded_vocabulary_rows_are_never_predicted():
    cfg = tiny_config(vocab_size=50, vocab_multiple=64)
    assert cfg.padded_vocab_size == 64
    assert ft.ModelConfig.preset("gpt2-124m").padded_vocab_size == 50304  # nanoGPT's padding of GPT-2's 50257
    model = ft.FTP(cfg).eval()
    assert model.encoder.wte.weight.shape == (64, cfg.n_embd)
    tokens = torch.randint(0, 50, (2, 12 + model.horizon))
    before = model.loss(tokens).total
    with torch.no_grad():  # padded rows that would win every prediction if they were scored
        model.encoder.wte.weight[50:] = 100 * model.encoder.wte.weight[:14].sign()
    out = model(tokens[:, :12])
    assert out.logits.shape[-1] == 50
    torch.testing.assert_close(model.loss(tokens).total, before)  # the softmax never includes them
    result = ft.generate(model, tokens[:, :4], 8, sampling=ft.SamplingConfig(temperature=1.0))
    assert int(result.tokens.max()) < 50
