"""Text generation: `ar` (GPT and FTP), `rollout` and `speculative` (FTP only).

Conventions shared by every strategy:
- Prompts in a batch must all have the same length (no left padding); batch rows are
  independent samples that advance in lockstep, so the result is one (B, t + n) tensor.
- The whole sequence (prompt + new tokens) never exceeds `block_size`: there is no
  sliding window, so generation stops early when the context is full, and the result can
  always be re-encoded (scored, embedded) by the same model. A prompt that leaves no room
  is an error that says how to crop it.
- The encoder keeps a KV cache; a token is encoded only when a later token needs its h.
- `ModelOutput.logits` is not used: for FTP it runs decoder step 1 at *every* position,
  while generation only needs it at the last one.

Speculative decoding, one round (FTP; the state is h_s of the last encoded token x_s):
1. Draft: the decoder runs k steps from h_s with inputs x_s, y_1, ..., y_{k-1}; step j
   has distribution q_j and emits y_j. q_1 is exactly the `ar` distribution of x_{s+1}, so
   y_1 needs no verification: it is committed at once (unless it was already fixed by the
   previous round, see 4).
2. Verify: ONE encoder pass over y_1..y_k (cached) gives h at each drafted position;
   decoder step 1 there (M = B*k rows, n = 1) at the position of y_{j-1} is the `ar`
   distribution p_j of y_j. Draft y_j (j >= 2) is accepted with probability
   min(1, p_j(y_j) / q_j(y_j)); each row accepts the longest prefix a_b of y_2..y_k.
   The step-1 run at the position where the round ends (memory, decoder cache, q) is
   kept and starts the next round's draft, so no decoder step is computed twice.
3. Batch rule: m = min_b a_b. Every row commits y_1..y_{1+m} and the encoder cache is
   truncated to just after y_{1+m} (one cache length for the batch).
4. Position s + m + 2 (the first not shared by all rows, if m < k-1) is then resolved in
   every row by that row's *own* outcome there: its accepted draft y_{m+2} if a_b > m,
   otherwise (it was rejected there) a sample from norm(max(0, p - q)) at that position.
   The token is committed now; it is not encoded yet, so the next round uses it as its
   forced y_1. If m = k-1 (all drafts accepted in all rows) nothing is forced and the
   next round's y_1 is the usual "bonus" token from h of y_k.
Why this is exact: in every row, each position's token is either a first token of a round
(an `ar` sample from h_s) or the outcome of the standard accept-or-residual step at that
position, whose marginal given the prefix is p. Where a row's round ends (position m + 2)
depends on other rows (independent randomness) and on the row's own outcomes at earlier
positions only — never on its outcome at m + 2 itself — and that outcome is kept whichever
it was. So each row is the standard sequential rejection sampler stopped at a stopping
time, and later positions (accepted drafts past m + 2) can be dropped: nothing kept depends
on them. Two tempting shortcuts are biased and NOT used: resampling position m + 2 from p
in rows that accepted there (accepted drafts follow min(p, q)/beta, not p), and ignoring
the residual in rows that rejected there. Greedy: all distributions are one-hot, the rule
becomes "accept iff the draft is the verifier's argmax" (no randomness used), and the
output equals greedy `ar` token for token.
Measured with tests/test_generate.py's chi-square test: the first shortcut is rejected
at chi2 ~ 340-1250 (critical ~50-70) with 4000 samples; this rule passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..model.blocks import KVCache
from .sampling import SamplingConfig, probs, sample

STRATEGIES = ("ar", "rollout", "speculative")
FTP_ONLY = ("rollout", "speculative")

StreamCallback = Callable[[Tensor], None]  # receives newly committed tokens (B, j), in order


@dataclass
class GenerationStats:
    new_tokens: int  # generated per row
    seconds: float  # wall time of the whole call, prompt encoding included
    tokens_per_s: float  # generated tokens of all rows / seconds
    encoder_passes: int  # encoder forward calls, the prompt's included
    tokens_per_encoder_pass: float  # new_tokens / encoder_passes: 1.0 for ar, up to ~k for speculative
    acceptance_rate: float | None = None  # speculative: accepted / verified draft tokens y_2..y_k, per row outcome


@dataclass
class GenerationResult:
    tokens: Tensor  # (B, t + n) prompt followed by the generated tokens
    stats: GenerationStats


def generate(
    model,
    prompt_ids: Tensor | Sequence[int] | Sequence[Sequence[int]],
    max_new_tokens: int,
    strategy: str = "ar",
    sampling: SamplingConfig | None = None,
    draft_len: int | None = None,
    generator: torch.Generator | None = None,
    stream: StreamCallback | None = None,
) -> GenerationResult:
    """Continue `prompt_ids` (B, t) by up to `max_new_tokens` tokens.

    strategy: "ar" (next token from the model at the last position; FTP: decoder step 1),
        "rollout" (FTP: the decoder writes draft_len tokens from one state, then the encoder
        catches up in one pass) or "speculative" (FTP: decoder drafts, one encoder pass
        verifies; same output distribution as "ar", see the module docstring).
    draft_len: tokens per decoder draft for rollout/speculative, 1..horizon (default horizon).
    generator: a torch.Generator on the model's device for reproducible sampling.
    stream: called with each chunk of newly committed tokens (B, j) as soon as it is final.
    Stops after max_new_tokens or when the sequence reaches block_size tokens.
    """
    sampling = sampling if sampling is not None else SamplingConfig()
    model_type = getattr(model, "model_type", "")
    if model_type not in ("gpt", "ftp"):
        raise ValueError(f"generate needs a futuretoken GPT or FTP model, got {type(model).__name__}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r} is unknown; choose one of {', '.join(STRATEGIES)}")
    if strategy in FTP_ONLY and model_type != "ftp":
        raise ValueError(
            f"strategy={strategy!r} needs an FTP model (it drafts with the future-token decoder); "
            f"this is a {model_type.upper()} model: use strategy='ar'"
        )
    if draft_len is not None:
        if strategy == "ar":
            raise ValueError("draft_len only applies to strategy='rollout' or 'speculative'; leave it None for 'ar'")
        if isinstance(draft_len, bool) or not isinstance(draft_len, int) or not 1 <= draft_len <= model.horizon:
            raise ValueError(
                f"draft_len={draft_len!r} is invalid: the decoder predicts at most horizon={model.horizon} "
                f"tokens, give an integer in 1..{model.horizon} (or None for {model.horizon})"
            )
    k_max = draft_len if draft_len is not None else model.horizon
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} is invalid: give an integer >= 0")

    device = model.head_weight.device
    prompt = _as_prompt(prompt_ids, model.config.vocab_size).to(device)  # (B, t)
    B, t = prompt.shape
    block = model.config.block_size
    if max_new_tokens > 0 and t >= block:
        raise ValueError(
            f"the prompt has {t} tokens but block_size={block} leaves no room for new tokens "
            f"(no sliding window); crop it, e.g. prompt_ids[:, -{max(1, block - max_new_tokens)}:]"
        )
    n = min(max_new_tokens, block - t)  # the sequence never exceeds block_size

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            run = _Run(model, prompt, n, sampling, generator, stream)
            if n > 0:
                if strategy == "ar":
                    run.ar()
                elif strategy == "rollout":
                    run.rollout(k_max)
                else:
                    run.speculative(k_max)
            tokens = torch.cat([prompt, *run.chunks], dim=1)  # (B, t + n)
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # honest wall time
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - run.start
    stats = GenerationStats(
        new_tokens=n,
        seconds=seconds,
        tokens_per_s=B * n / seconds if seconds > 0 else float("inf"),
        encoder_passes=run.passes,
        tokens_per_encoder_pass=n / run.passes if run.passes else 0.0,
        acceptance_rate=run.accepted / run.verified if run.verified else None,
    )
    return GenerationResult(tokens=tokens, stats=stats)


def batches_by_length(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices of prompts grouped by equal length (shortest first), at most batch_size per group:
    `generate` takes equal-length prompts only."""
    by_length: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        by_length.setdefault(n, []).append(i)
    return [group[b : b + batch_size] for _, group in sorted(by_length.items())
            for b in range(0, len(group), batch_size)]


def _as_prompt(prompt_ids, vocab_size: int) -> Tensor:
    """Tensor or (nested) list -> (B, t) long tensor, with clear errors for what cannot work."""
    if not isinstance(prompt_ids, Tensor):
        rows = list(prompt_ids)
        if rows and not isinstance(rows[0], (int,)) and hasattr(rows[0], "__len__"):
            lengths = {len(r) for r in rows}
            if len(lengths) > 1:
                raise ValueError(
                    f"prompts in a batch must have the same length (no left padding), got lengths "
                    f"{sorted(lengths)}; group prompts by length or generate them one at a time"
                )
        prompt_ids = torch.tensor(rows, dtype=torch.long)
    prompt = prompt_ids.long()
    if prompt.dim() == 1:
        prompt = prompt[None]  # one prompt -> a batch of one
    if prompt.dim() != 2:
        raise ValueError(f"prompt_ids must be (B, t) token ids, got shape {tuple(prompt.shape)}")
    if prompt.shape[0] == 0 or prompt.shape[1] == 0:
        raise ValueError(
            f"the prompt is empty (shape {tuple(prompt.shape)}); give at least one token per row, "
            "e.g. the end-of-text token to start a new document"
        )
    lo, hi = int(prompt.min()), int(prompt.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"prompt token ids must lie in [0, {vocab_size}), got values in [{lo}, {hi}]")
    return prompt


@dataclass
class _Step1:
    """Decoder step 1 already run from B states: what a draft continues from."""

    memory: list[tuple[Tensor, Tensor]]  # per decoder layer: cross-attention K/V (B, H, P, hd)
    cache: list[KVCache]  # decoder self-attention cache holding step 1
    q: Tensor  # (B, V) distribution of step 1: the `ar` next-token distribution


class _Run:
    """State of one generate call: encoder cache, committed chunks, counters."""

    def __init__(self, model, prompt: Tensor, n: int, cfg: SamplingConfig,
                 generator: torch.Generator | None, stream: StreamCallback | None) -> None:
        self.start = time.perf_counter()
        self.model, self.cfg, self.generator, self.stream = model, cfg, generator, stream
        self.ftp = model.model_type == "ftp"
        self.remaining = n
        self.chunks: list[Tensor] = []
        self.passes = self.accepted = self.verified = 0
        B, t = prompt.shape
        self.B = B
        if n == 0:
            return
        self.cache = model.new_cache(B, t + n)  # capacity: the longest sequence ever encoded
        self.h = self._encode(prompt)[:, -1]  # (B, d) state of the last encoded token
        self.last = prompt[:, -1]  # (B,) the last encoded token: decoder step-1 input

    # --- primitives ------------------------------------------------------------------------
    def _encode(self, idx: Tensor) -> Tensor:
        """idx (B, j) continuing the cache -> h (B, j, d)."""
        self.passes += 1
        return self.model.encoder(idx, self.cache)

    def _step1(self, h: Tensor, last: Tensor) -> _Step1:
        """Decoder step 1 from states h (M, d) whose own tokens are last (M,)."""
        model = self.model
        memory = model.memory(h)  # cross-attention K/V, reused by every later step of a draft
        cache = model.new_decoder_cache(h.shape[0])
        features = model.decode(last[:, None], memory, h, cache=cache)  # (M, 1, d)
        return _Step1(memory, cache, probs(model.head(features[:, 0]), self.cfg))

    def _next_token_probs(self) -> Tensor:
        """(B, V) `ar` distribution of the token after the last encoded one."""
        if not self.ftp:
            return probs(self.model.head(self.h), self.cfg)
        return self._step1(self.h, self.last).q

    def _sample(self, p: Tensor) -> Tensor:
        """p (..., V) -> (...,) tokens. Greedy distributions are one-hot: argmax is the same
        token, cheaper than multinomial, and leaves the generator untouched."""
        return p.argmax(-1) if self.cfg.greedy else sample(p, self.generator)

    def _commit(self, tokens: Tensor) -> None:
        """tokens (B, j) become part of the output; they are final from here on."""
        if tokens.shape[1] == 0:
            return
        self.chunks.append(tokens)
        self.remaining -= tokens.shape[1]
        if self.stream is not None:
            self.stream(tokens)

    def _draft(self, k: int, first: _Step1 | None, forced: Tensor | None) -> tuple[Tensor, Tensor]:
        """The decoder writes k tokens from self.h: -> tokens (B, k) and their distributions (B, k, V).

        Step j's input is the previous token (x_s for step 1). `first` is step 1 when it was
        already computed (by the previous verification); `forced` (B,) replaces the sampled
        step-1 token when the previous round already fixed it.
        """
        model = self.model
        first = first if first is not None else self._step1(self.h, self.last)
        tok = forced if forced is not None else self._sample(first.q)  # (B,)
        tokens, dists = [tok], [first.q]
        for _ in range(k - 1):
            features = model.decode(tok[:, None], first.memory, self.h, cache=first.cache)  # (B, 1, d)
            q = probs(model.head(features[:, 0]), self.cfg)  # (B, V)
            tok = self._sample(q)
            tokens.append(tok)
            dists.append(q)
        return torch.stack(tokens, 1), torch.stack(dists, 1)  # (B, k), (B, k, V)

    # --- strategies ------------------------------------------------------------------------
    def ar(self) -> None:
        while True:
            tok = self._sample(self._next_token_probs())  # (B,)
            self._commit(tok[:, None])
            if self.remaining == 0:
                break  # the last token is never encoded: nothing would use its state
            self.h, self.last = self._encode(tok[:, None])[:, -1], tok

    def rollout(self, k_max: int) -> None:
        while True:
            k = min(k_max, self.remaining)
            y, _ = self._draft(k, None, None)  # (B, k)
            self._commit(y)
            if self.remaining == 0:
                break
            self.h, self.last = self._encode(y)[:, -1], y[:, -1]  # catch up in one pass

    def speculative(self, k_max: int) -> None:
        B = self.B
        forced: Tensor | None = None  # (B,) committed, not yet encoded token at position s+1
        first: _Step1 | None = None  # decoder step 1 at the current state, from the last verification
        while self.remaining > 0:
            # With a forced y_1 the round may draft one token more: y_1 is already paid for.
            k = min(k_max, self.remaining + (forced is not None))
            y, q = self._draft(k, first, forced)  # (B, k), (B, k, V)
            if forced is None:
                self._commit(y[:, :1])  # y_1 ~ q_1 is an exact `ar` sample: final already
            if self.remaining == 0 and k == 1:
                break  # nothing left to verify, and no later token needs y_1's state
            base = self.cache[0].length
            hv = self._encode(y)  # (B, k, d): h at every drafted position, one pass
            # Decoder step 1 at every drafted position, M = B*k rows: column j-2 verifies y_j
            # (j = 2..k), and column m is the next round's step 1, so it is computed only once.
            verify = self._step1(hv.reshape(B * k, -1), y.reshape(-1))
            p = verify.q.view(B, k, -1)  # (B, k, V)
            m = 0
            if k > 1:
                pd, qd, yd = p[:, :-1], q[:, 1:], y[:, 1:]  # (B, k-1, V), (B, k-1, V), (B, k-1)
                p_y = pd.gather(-1, yd[..., None])[..., 0]  # (B, k-1)
                q_y = qd.gather(-1, yd[..., None])[..., 0]  # (B, k-1)
                if self.cfg.greedy:  # one-hot p and q: accept iff p_y = 1; no randomness needed
                    u = torch.zeros(B, k - 1, device=p.device)
                else:
                    u = torch.rand(B, k - 1, generator=self.generator, device=p.device)
                ok = u * q_y < p_y  # accept w.p. min(1, p/q), written without a division
                a = ok.long().cumprod(-1).sum(-1)  # (B,) longest accepted prefix per row
                m = int(a.min())
                self.accepted += int(a.sum())
                self.verified += B * (k - 1)
                self._commit(yd[:, :m])
            for c in self.cache:  # keep y_1..y_{1+m}: the prefix every row accepted
                c.truncate(base + 1 + m)
            self.h, self.last = hv[:, m], y[:, m]
            first = _select_rows(verify, torch.arange(B, device=y.device) * k + m, self.model)
            forced = None
            if m < k - 1:
                # Resolve position m+2 per row with its own outcome (exactness: module docstring).
                residual = (pd[:, m] - qd[:, m]).clamp_min(0.0)  # (B, V)
                mass = residual.sum(-1, keepdim=True)
                # Rows that accepted here (or, in fp32, p == q) have no residual; their sample is unused.
                residual = torch.where(mass > 0, residual / mass.clamp_min(1e-30), pd[:, m])
                forced = torch.where(a > m, yd[:, m], self._sample(residual))  # (B,)
                self._commit(forced[:, None])


def _select_rows(step: _Step1, rows: Tensor, model) -> _Step1:
    """Step-1 state of the given rows (B,) of a larger batch: memory, decoder cache, q."""
    memory = [(k[rows], v[rows]) for k, v in step.memory]  # (B, H, P, hd) each
    cache = model.new_decoder_cache(len(rows))
    for new, old in zip(cache, step.cache):
        new.k[:, :, : old.length] = old.k[rows, :, : old.length]
        new.v[:, :, : old.length] = old.v[rows, :, : old.length]
        new.length = old.length
    return _Step1(memory, cache, step.q[rows])
