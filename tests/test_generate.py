import functools
import itertools
import math

import pytest
import torch

import futuretoken as ft
from futuretoken.infer import SamplingConfig, generate, probs, sample


def scrambled(cls=ft.FTP, gain: float = 4.0, emb: float = 3.0, **overrides):
    """A random model whose predictions are peaky and depend on context.

    At GPT-2 init the tied embedding/head makes a tiny model repeat its last token, so every
    draft is accepted and the tests would see nothing. Large random weights give varied,
    confident predictions: drafts are sometimes accepted and sometimes rejected.
    """
    base = dict(vocab_size=32, block_size=64, n_layer=2, n_head=2, n_embd=32, horizon=4,
                pseudo_len=3, dec_layer=1, dec_head=2)
    model = cls(ft.ModelConfig(**{**base, **overrides}))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                std = emb if "encoder.wte" in name else 1.0 if "wpe" in name else gain / p.shape[1] ** 0.5
                p.normal_(0.0, std)
    return model.eval()


GREEDY = SamplingConfig(temperature=0)


@functools.cache
def _progression_weights(cls) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = scrambled(cls, gain=1.0, emb=1.0, mtp_lambda=3.0)  # MTP-seq: every module's CE weighs 1
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(150):
        start, step = torch.randint(0, 32, (16, 1), generator=g), torch.randint(1, 4, (16, 1), generator=g)
        loss = model.loss((start + step * torch.arange(36)) % 32).total
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def predictable(cls):
    """A model trained for a few seconds on arithmetic progressions mod 32 (step 1..3).

    MTP's heads 2..N read the trunk's state at one position and predict further tokens on their
    own: in a random model they are unrelated to what the trunk goes on to choose, so greedy
    drafts are almost never accepted (and MTP-seq's modules are no better). After this training
    a draft is often, not always, accepted from a random prompt: both branches get exercised.
    """
    model = scrambled(cls, mtp_lambda=3.0)
    model.load_state_dict(_progression_weights(cls))
    return model.eval()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Generation is a long chain of tiny ops: extra intra-op threads only add synchronisation,
    and on a busy 2-core machine they stall (measured 14x slower than one thread)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


DRAFTING = [ft.FTP, ft.MTP, ft.MTPSeq]  # the model types with rollout and speculative


# --- greedy: exact token-for-token agreement -------------------------------------------------
@pytest.mark.parametrize("cls", DRAFTING)
def test_greedy_speculative_equals_greedy_ar(device, cls):
    model = (scrambled(cls) if cls is ft.FTP else predictable(cls)).to(device)
    g = torch.Generator().manual_seed(0)
    multi_token_passes = 0
    for i in range(10):
        t = 1 + i % 7
        prompt = torch.randint(0, 32, (1, t), generator=g).to(device)
        ref = generate(model, prompt, 30, "ar", GREEDY).tokens
        for k in range(1, 5):
            out = generate(model, prompt, 30, "speculative", GREEDY, draft_len=k)
            assert torch.equal(out.tokens, ref), (i, k)
            multi_token_passes += out.stats.tokens_per_encoder_pass > 1
    assert multi_token_passes > 0  # drafts were accepted: the comparison exercised acceptance
    # Each row advances by its own accepted prefix and must still equal its own ar; every round commits at
    # least one token per row, so the batch never needs more encoder passes than `ar` (its draft lengths follow
    # the slowest row's acceptance, so it may need a few more or fewer than that row alone).
    prompts = torch.randint(0, 32, (5, 6), generator=g).to(device)
    ref = generate(model, prompts, 40, "ar", GREEDY).tokens
    for k in (2, 4):
        out = generate(model, prompts, 40, "speculative", GREEDY, draft_len=k)
        assert torch.equal(out.tokens, ref)
        assert 0 < out.stats.acceptance_rate < 1  # both branches (accept, reject) were taken
        assert out.stats.encoder_passes <= generate(model, prompts, 40, "ar", GREEDY).stats.encoder_passes


def test_speculative_draft_length_follows_acceptance():
    """Rounds draft more tokens only when the slowest row accepts enough of them to pay for the work:
    a batch whose drafts are rejected runs `ar` steps."""
    from futuretoken.infer.decoding import Decoding

    assert [Decoding._draft_length(4, alpha) for alpha in (0.0, 0.5, 0.9, 0.99)] == [1, 1, 2, 4]
    assert Decoding._draft_length(2, 0.99) == 2 and Decoding._draft_length(1, 0.99) == 1


def test_rejected_drafts_stop_drafting_for_a_while_then_it_is_tried_again():
    """Old rounds fade: a row that rejected every draft runs `ar` steps, and after some rounds of those the
    estimate has drifted back far enough that a draft is tried again; the slowest active row decides."""
    from futuretoken.infer.decoding import Acceptance, Decoding

    est = Acceptance(2, "cpu")
    both = torch.tensor([True, True])
    for _ in range(10):  # row 0 accepts every draft of 3, row 1 none
        est.next_round(both)
        est.add(torch.tensor([3.0, 0.0]), torch.tensor([3.0, 3.0]))
    lengths = [Decoding._draft_length(4, est.next_round(both))]
    while lengths[-1] == 1 and len(lengths) < 100:  # `ar` rounds verify nothing
        lengths.append(Decoding._draft_length(4, est.next_round(both)))
    assert lengths[0] == 1 and 5 < len(lengths) < 100 and lengths[-1] > 1
    est = Acceptance(2, "cpu")
    est.add(torch.tensor([3.0, 0.0]), torch.tensor([3.0, 30.0]))
    assert est.next_round(torch.tensor([True, False])) > 0.9  # a finished row no longer holds the batch back


@pytest.mark.parametrize("strategy, draft_len", [("ar", None), ("rollout", 3), ("speculative", 2),
                                                 ("speculative", 4)])
def test_left_padded_rows_equal_generating_each_prompt_alone(device, strategy, draft_len):
    """Prompts of different lengths in one batch: every row is what that prompt gives alone (greedy)."""
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, 32, (n,), generator=g).tolist() for n in (5, 1, 9, 3, 9)]
    classes = [ft.GPT, *DRAFTING] if strategy == "ar" else DRAFTING
    for cls in classes:
        model = scrambled(cls).to(device)
        out = generate(model, prompts, 25, strategy, GREEDY, draft_len=draft_len)
        assert out.tokens.shape == (5, 9 + 25) and out.attention_mask[:, -25:].all()
        for prompt, row in zip(prompts, out.rows()):
            alone = generate(model, [prompt], 25, strategy, GREEDY, draft_len=draft_len).tokens[0].tolist()
            assert row == alone, (cls.__name__, prompt)
        # The same batch as a left-padded tensor with its attention mask.
        again = generate(model, out.tokens[:, :9], 25, strategy, GREEDY, draft_len=draft_len,
                         attention_mask=out.attention_mask[:, :9])
        assert torch.equal(again.tokens[out.attention_mask.bool()], out.tokens[out.attention_mask.bool()])


@pytest.mark.parametrize("cls", [ft.GPT, *DRAFTING])
def test_cached_ar_equals_recomputation(cls):
    model = scrambled(cls)
    prompt = torch.randint(0, 32, (3, 4))
    out = generate(model, prompt, 20, "ar", GREEDY)
    seq = prompt
    with torch.no_grad():
        for _ in range(20):  # argmax of a full forward pass from scratch at every step
            seq = torch.cat([seq, model(seq).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out.tokens, seq)
    assert out.stats.encoder_passes == 20 and out.stats.tokens_per_encoder_pass == 1.0


def _reference_draft(model, seq: list[int], k: int, forced: int) -> list[int]:
    """The greedy draft of k tokens after seq, each from a full forward pass from scratch (no cache):
    y_1 = the next-token argmax (or `forced`); MTP: y_j = head j's argmax at the last position;
    MTP-seq: y_j = module j-1's argmax at the last position, reading y_1..y_{j-1}."""
    with torch.no_grad():
        if isinstance(model, ft.MTPSeq):
            D, ys = model.horizon - 1, []
            for j in range(1, k + 1):  # tokens past y_{j-1} are placeholders module j-1 never reads at s
                tokens = torch.tensor([seq + ys + [0] * (D + 1 - j)])
                choice = int(model.head(model.future_features(tokens)[0, -1, j - 1]).argmax())
                ys.append(forced if j == 1 and forced >= 0 else choice)
            return ys
        ys = model.head(model.future_features(torch.tensor([seq]))[0, -1, :k]).argmax(-1).tolist()
        return [forced if forced >= 0 else ys[0], *ys[1:]]


@pytest.mark.parametrize("cls", [ft.MTP, ft.MTPSeq])
def test_drafter_caches_equal_full_recomputation(cls):
    """The heads' (MTP) and modules' (MTP-seq) own KV caches, through speculative rounds that keep a
    random prefix of each row's draft (per row, left-padded rows, sometimes a forced y_1): every
    draft equals the one computed from scratch on the row's committed tokens."""
    from futuretoken.infer.decoding import Decoding
    from futuretoken.infer.drafters import drafter_for
    from futuretoken.infer.prompts import as_prompt

    model = scrambled(cls).double()
    g = torch.Generator().manual_seed(5)
    seqs = [torch.randint(0, 32, (n,), generator=g).tolist() for n in (5, 1, 8)]
    prompt, mask = as_prompt(seqs, 32, None)
    B, N = len(seqs), model.horizon
    with torch.inference_mode():
        run = Decoding(model, prompt, mask, 30, N, GREEDY, None, None, drafter_for(model, "speculative", GREEDY))
        kept = 0
        for _ in range(6):
            forced = torch.where(torch.rand(B, generator=g) < 0.3, torch.randint(0, 32, (B,), generator=g), -1)
            y, _ = run.drafter.draft(run.state, N, forced, run._sample)  # (B, N)
            for b in range(B):
                assert y[b].tolist() == _reference_draft(model, seqs[b], N, int(forced[b])), (b, seqs[b])
            base = run._ends()
            verify = run.drafter.states(run.state, run._encode(y), y)
            a = torch.randint(0, N, (B,), generator=g)  # row b keeps y_1..y_{1+a_b}
            for c in run.cache:
                c.truncate(base + 1 + a)
            run.drafter.truncate(base + 1 + a)
            run.state = run.drafter.select(verify, a)
            for b in range(B):
                seqs[b] += y[b, : 1 + a[b]].tolist()
            kept += int(a.sum())
    assert 0 < kept < 6 * B * (N - 1)  # rounds both kept and dropped drafted slots


# --- sampling: speculative has exactly the distribution of ar ---------------------------------
def _exact_distribution(model, prompt: torch.Tensor, n: int, cfg: SamplingConfig) -> torch.Tensor:
    """(V**n,) probability of every n-token continuation under ar, by enumeration."""
    V = model.config.vocab_size
    seqs = torch.tensor(list(itertools.product(range(V), repeat=n)))  # (V^n, n)
    full = torch.cat([prompt.expand(len(seqs), -1), seqs], 1)
    with torch.no_grad():
        p = probs(model(full[:, :-1]).logits[:, prompt.shape[1] - 1 :], cfg)  # (V^n, n, V)
    return p.gather(-1, seqs[..., None])[..., 0].prod(-1).double()


def _chi_square_rejects(samples: torch.Tensor, expected_p: torch.Tensor, V: int) -> bool:
    """Pearson goodness of fit at false-alarm rate 1e-4 (each call, for a correct sampler).

    Cells expecting fewer than 5 samples are pooled. The critical value is the Wilson–Hilferty
    approximation of the chi-square quantile (z = 3.719 for 1e-4), accurate to a few percent
    for these degrees of freedom; no scipy needed.
    """
    n = samples.shape[1]
    index = (samples * V ** torch.arange(n - 1, -1, -1)).sum(-1)
    counts = torch.bincount(index, minlength=V**n).double()
    expected = expected_p * counts.sum()
    big = expected >= 5
    obs = torch.cat([counts[big], counts[~big].sum()[None]])
    exp = torch.cat([expected[big], expected[~big].sum()[None]])
    if exp[-1] < 5:  # the pooled rest is itself too small to test: drop it
        obs, exp = obs[:-1], exp[:-1]
    stat = float(((obs - exp) ** 2 / exp).sum())
    df = len(exp) - 1
    critical = df * (1 - 2 / (9 * df) + 3.719 * math.sqrt(2 / (9 * df))) ** 3
    return stat > critical


@pytest.mark.parametrize("cls, cfg", [(ft.FTP, SamplingConfig()), (ft.FTP, SamplingConfig(temperature=0.8, top_k=3)),
                                      (ft.MTP, SamplingConfig()), (ft.MTPSeq, SamplingConfig(temperature=0.8, top_k=3))])
def test_speculative_sampling_has_the_ar_distribution(cls, cfg):
    model = scrambled(cls, vocab_size=5, block_size=16, horizon=3, emb=0.7)
    prompt = torch.tensor([[1, 3, 0]])
    expected = _exact_distribution(model, prompt, 3, cfg)
    g = torch.Generator().manual_seed(1)

    def draws(strategy: str, batch: int, calls: int) -> torch.Tensor:
        return torch.cat([
            generate(model, prompt.repeat(batch, 1), 3, strategy, cfg, generator=g).tokens[:, 3:]
            for _ in range(calls)
        ])

    assert not _chi_square_rejects(draws("ar", 4000, 1), expected, 5)  # the test itself is sound
    # One wide batch: the batch-minimum rule resolves nearly every position (accept or residual).
    assert not _chi_square_rejects(draws("speculative", 4000, 1), expected, 5)
    # Small batches: rows often accept several drafts in one pass.
    assert not _chi_square_rejects(draws("speculative", 3, 500), expected, 5)
    # Left-padded among prompts of other lengths: the row still has the ar distribution.
    mixed = [[1, 3, 0], [2], [4, 1, 2, 0, 3]] * 1500
    rows = generate(model, mixed, 3, "speculative", cfg, generator=g).tokens[0::3, -3:]
    assert not _chi_square_rejects(rows, expected, 5)
    # Power: rollout samples the drafter's own distribution, which differs from ar's.
    assert _chi_square_rejects(draws("rollout", 4000, 1), expected, 5)


@pytest.mark.parametrize("cls", DRAFTING)
def test_speculative_sampling_is_reproducible_with_a_generator(cls):
    model = scrambled(cls)
    prompt = torch.randint(0, 32, (2, 5))
    a = generate(model, prompt, 25, "speculative", generator=torch.Generator().manual_seed(7)).tokens
    b = generate(model, prompt, 25, "speculative", generator=torch.Generator().manual_seed(7)).tokens
    assert torch.equal(a, b)


# --- lengths, streaming, limits ---------------------------------------------------------------
@pytest.mark.parametrize("cls", DRAFTING)
@pytest.mark.parametrize("strategy", ["ar", "rollout", "speculative"])
def test_length_stats_and_stream(strategy, cls):
    model = scrambled(cls)
    prompt = torch.randint(0, 32, (2, 5))
    chunks = []
    out = generate(model, prompt, 11, strategy, draft_len=None if strategy == "ar" else 3,
                   generator=torch.Generator().manual_seed(0), stream=chunks.append)
    assert out.tokens.shape == (2, 16)
    assert torch.equal(out.tokens[:, :5], prompt)
    assert torch.equal(torch.cat(chunks, 1), out.tokens[:, 5:])  # streamed tokens are the final ones
    assert out.stats.new_tokens == 11 and out.stats.tokens_per_s > 0
    if strategy == "rollout":  # prompt pass + a catch-up pass after each full draft of 3: 3 + 3 + 3 + 2
        assert out.stats.encoder_passes == 4 and out.stats.tokens_per_encoder_pass == 11 / 4


@pytest.mark.parametrize("cls", DRAFTING)
@pytest.mark.parametrize("strategy", ["ar", "rollout", "speculative"])
def test_generation_stops_at_block_size(strategy, cls):
    model = scrambled(cls, block_size=16)
    out = generate(model, torch.randint(0, 32, (2, 13)), 10, strategy, GREEDY)
    assert out.tokens.shape == (2, 16) and out.stats.new_tokens == 3


def test_zero_new_tokens_and_list_prompts():
    model = scrambled()
    out = generate(model, [[1, 2, 3]], 0)
    assert out.tokens.tolist() == [[1, 2, 3]] and out.stats.encoder_passes == 0
    assert generate(model, [4, 5], 3, "speculative").tokens.shape == (1, 5)  # one prompt, a batch of one


def test_gpt_generates_and_mode_is_restored():
    model = scrambled(ft.GPT).train()
    out = generate(model, torch.randint(0, 32, (2, 3)), 5)
    assert out.tokens.shape == (2, 8) and model.training


# --- clear errors ----------------------------------------------------------------------------
def test_errors():
    ftp, gpt = scrambled(block_size=16), scrambled(ft.GPT, block_size=16)
    with pytest.raises(ValueError, match="empty"):
        generate(ftp, torch.zeros(1, 0, dtype=torch.long), 5)
    with pytest.raises(ValueError, match="block_size=16"):
        generate(ftp, torch.zeros(1, 17, dtype=torch.long), 5)
    with pytest.raises(ValueError, match="no room"):
        generate(ftp, torch.zeros(1, 16, dtype=torch.long), 5)
    for strategy in ("rollout", "speculative"):
        with pytest.raises(ValueError, match=f"{strategy}.*needs a model that drafts"):
            generate(gpt, torch.zeros(1, 2, dtype=torch.long), 5, strategy)
    with pytest.raises(ValueError, match="strategy='beam' is unknown"):
        generate(ftp, torch.zeros(1, 2, dtype=torch.long), 5, "beam")
    with pytest.raises(ValueError, match=r"draft_len=5.*1\.\.4"):
        generate(ftp, torch.zeros(1, 2, dtype=torch.long), 5, "speculative", draft_len=5)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate(ftp, [[1, 2], []], 5)
    with pytest.raises(ValueError, match="left padding"):
        generate(ftp, torch.ones(2, 3, dtype=torch.long), 5, attention_mask=torch.tensor([[1, 1, 0], [1, 1, 1]]))
    with pytest.raises(ValueError, match=r"\[0, 32\)"):
        generate(ftp, [[1, 32]], 5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(ftp, [[1]], -1)


@pytest.mark.parametrize("kwargs, name", [
    (dict(temperature=-0.5), "temperature"), (dict(temperature=float("nan")), "temperature"),
    (dict(top_k=0), "top_k"), (dict(top_k=2.5), "top_k"),
    (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"),
])
def test_bad_sampling_settings(kwargs, name):
    with pytest.raises(ValueError, match=rf"{name}=.*invalid: give"):
        SamplingConfig(**kwargs)


def test_probs_filters():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).log_softmax(-1)  # probabilities prop. to e^2, e^1, e^0, e^-1
    p = probs(logits, SamplingConfig(top_k=2))
    torch.testing.assert_close(p, torch.tensor([[math.e, 1.0, 0.0, 0.0]]) / (math.e + 1))
    full = logits.exp()[0]
    p = probs(logits, SamplingConfig(top_p=float(full[0]) + 1e-3))  # needs the first two tokens
    assert (p[0, :2] > 0).all() and (p[0, 2:] == 0).all()
    assert probs(logits, SamplingConfig(top_p=float(full[0]) - 1e-3))[0].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert probs(logits, GREEDY)[0].tolist() == [1.0, 0.0, 0.0, 0.0]
    torch.testing.assert_close(probs(logits, SamplingConfig(temperature=0.5)), (2 * logits).softmax(-1))
    assert sample(probs(logits.expand(3, -1), GREEDY)).tolist() == [0, 0, 0]
