"""Text generation: `ar` (GPT and FTP), `rollout` and `speculative` (FTP only).

Conventions shared by every strategy:
- Prompts of different lengths are left-padded (a list of lists is padded here; a tensor
  comes with an `attention_mask` of zeros then ones per row). Every row gets its own
  positions (its first real token at 0) and the encoder never attends to pad slots, so a
  row is generated exactly as it would be alone (greedy: token for token; sampled: from
  the same distribution). The result is one left-padded (B, t + n) tensor.
- The whole sequence (prompt + new tokens) never exceeds `block_size`: there is no
  sliding window, so generation stops early when the context is full, and the result can
  always be re-encoded (scored, embedded) by the same model. A prompt that leaves no room
  is an error that says how to crop it.
- The encoder keeps a KV cache; a token is encoded only when a later token needs its h.
- `ModelOutput.logits` is not used: for FTP it runs decoder step 1 at *every* position,
  while generation only needs it at the last one.

Speculative decoding, one round, in each row independently (FTP; the row's state is h_s of
its last encoded token x_s):
1. Draft: the decoder runs k steps from h_s with inputs x_s, y_1, ..., y_{k-1}; step j
   has distribution q_j and emits y_j. q_1 is exactly the `ar` distribution of x_{s+1}, so
   y_1 needs no verification: it is committed at once (unless it was already fixed by the
   previous round, see 3).
2. Verify: ONE encoder pass over y_1..y_k (cached, all rows together) gives h at each
   drafted position; decoder step 1 there (M = B*k rows, n = 1) at the position of y_{j-1}
   is the `ar` distribution p_j of y_j. Draft y_j (j >= 2) is accepted with probability
   min(1, p_j(y_j) / q_j(y_j)); the row accepts the longest prefix y_2..y_{1+a} and commits
   it. The row's encoder cache keeps y_1..y_{1+a}: every row keeps its own length (the KV
   cache holds one length per row), so no row waits for another.
   The step-1 run at the position where the row's round ends (memory, decoder cache, q) is
   kept and starts its next draft, so no decoder step is computed twice.
3. If a < k-1, the first rejected position is resolved by a sample from
   norm(max(0, p - q)) there; that token is committed now but not encoded, and the next
   round uses it as its forced y_1. If a = k-1 (all accepted), nothing is forced and the
   next round's y_1 is the usual "bonus" token from h of y_k.
Why this is exact: every row runs the standard sequential speculative sampler (draft,
accept the longest prefix by the min(1, p/q) rule, residual sample at the first
rejection, bonus token after a full acceptance), whose output has the `ar` distribution.
The draft length k of a round is chosen before the round from what is already committed
(in any row: it stops drafting past what the longest-remaining row can use), never from
the round's own outcomes, so it does not bias any row. Rows share only the batched
computation. Greedy: all distributions are one-hot, the rule becomes "accept iff the draft
is the verifier's argmax" (no randomness used), and each row equals greedy `ar` for that
prompt token for token. tests/test_generate.py checks the sampled distribution with a
chi-square test (for batches of identical and of differently padded prompts).
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

# Work of one more drafted token (a decoder step, one more position encoded and verified) in `ar`
# steps; measured on the demo's tiny FTP on CPU (README). It only steers speculative draft lengths.
DRAFT_TOKEN_COST = 0.75


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
    tokens: Tensor  # (B, t + n) prompt followed by the generated tokens, left-padded like the prompt
    stats: GenerationStats
    attention_mask: Tensor | None = None  # (B, t + n) zeros over left padding, ones elsewhere; None: no padding

    def rows(self) -> list[list[int]]:
        """Every row's tokens without its left padding."""
        if self.attention_mask is None:
            return self.tokens.tolist()
        return [row[mask.bool()].tolist() for row, mask in zip(self.tokens, self.attention_mask)]


def generate(
    model,
    prompt_ids: Tensor | Sequence[int] | Sequence[Sequence[int]],
    max_new_tokens: int,
    strategy: str = "ar",
    sampling: SamplingConfig | None = None,
    draft_len: int | None = None,
    generator: torch.Generator | None = None,
    stream: StreamCallback | None = None,
    attention_mask: Tensor | None = None,
) -> GenerationResult:
    """Continue `prompt_ids` (B, t) by up to `max_new_tokens` tokens.

    prompt_ids: a (B, t) tensor, one prompt, or a list of prompts of any lengths (left-padded here).
    strategy: "ar" (next token from the model at the last position; FTP: decoder step 1),
        "rollout" (FTP: the decoder writes draft_len tokens from one state, then the encoder
        catches up in one pass) or "speculative" (FTP: decoder drafts, one encoder pass
        verifies; same output distribution as "ar", see the module docstring).
    draft_len: tokens per decoder draft for rollout/speculative, 1..horizon (default horizon).
    generator: a torch.Generator on the model's device for reproducible sampling.
    stream: called with each chunk of newly committed tokens (B, j) as soon as it is final in every row.
    attention_mask: (B, t) for a tensor of left-padded prompts: zeros over padding, then ones.
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
    prompt, mask = _as_prompt(prompt_ids, model.config.vocab_size, attention_mask)
    prompt = prompt.to(device)  # (B, t)
    mask = mask.to(device) if mask is not None else None  # (B, t)
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
            run = _Run(model, prompt, mask, n, k_max if strategy != "ar" else 0, sampling, generator, stream)
            if n > 0:
                if strategy == "ar":
                    run.ar()
                elif strategy == "rollout":
                    run.rollout(k_max)
                else:
                    run.speculative(k_max)
            tokens = torch.cat([prompt, run.out[:, :n]], dim=1)  # (B, t + n)
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
    full_mask = None if mask is None else torch.cat([mask, torch.ones_like(run.out[:, :n])], 1).long()
    return GenerationResult(tokens=tokens, stats=stats, attention_mask=full_mask)


def batches_by_length(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices of prompts grouped by equal length (shortest first), at most batch_size per group:
    batches that need no padding."""
    by_length: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        by_length.setdefault(n, []).append(i)
    return [group[b : b + batch_size] for _, group in sorted(by_length.items())
            for b in range(0, len(group), batch_size)]


def batches_by_similar_length(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices of prompts sorted by length, batch_size per group: little left padding per batch."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[b : b + batch_size] for b in range(0, len(order), batch_size)]


def _as_prompt(prompt_ids, vocab_size: int, attention_mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Tensor or (nested) list -> (B, t) long tensor and its (B, t) left-padding mask (None: no padding),
    with clear errors for what cannot work."""
    if not isinstance(prompt_ids, Tensor):
        rows = list(prompt_ids)
        if rows and not isinstance(rows[0], (int,)) and hasattr(rows[0], "__len__"):
            if attention_mask is not None:
                raise ValueError("attention_mask goes with a (B, t) tensor; a list of prompts is left-padded here")
            lengths = [len(r) for r in rows]
            t = max(lengths, default=0)
            if len(set(lengths)) > 1:
                if min(lengths) == 0:
                    raise ValueError(f"prompt {lengths.index(0)} is empty; give at least one token per row")
                attention_mask = torch.tensor([[0] * (t - n) + [1] * n for n in lengths])
                rows = [[0] * (t - len(r)) + list(r) for r in rows]  # pad id 0: any valid id works, it is masked
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
    mask = None
    if attention_mask is not None:
        mask = attention_mask.to(prompt.device).bool()
        if mask.shape != prompt.shape:
            raise ValueError(f"attention_mask has shape {tuple(mask.shape)}, the prompts {tuple(prompt.shape)}")
        if bool((mask[:, 1:] < mask[:, :-1]).any()) or not bool(mask[:, -1].all()):
            raise ValueError("attention_mask must mark left padding: zeros then ones in every row, at least one "
                             "one (set tokenizer.padding_side='left')")
        mask = None if bool(mask.all()) else mask
    real = prompt if mask is None else prompt[mask]
    lo, hi = int(real.min()), int(real.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"prompt token ids must lie in [0, {vocab_size}), got values in [{lo}, {hi}]")
    if mask is not None:
        prompt = prompt.masked_fill(~mask, 0)  # any valid id: pad slots are never attended to
    return prompt, mask


@dataclass
class _Step1:
    """Decoder step 1 already run from B states: what a draft continues from."""

    memory: list[tuple[Tensor, Tensor]]  # per decoder layer: cross-attention K/V (B, H, P, hd)
    cache: list[KVCache]  # decoder self-attention cache holding step 1
    q: Tensor  # (B, V) distribution of step 1: the `ar` next-token distribution


class _Run:
    """State of one generate call: encoder cache, left padding, committed tokens, counters."""

    def __init__(self, model, prompt: Tensor, mask: Tensor | None, n: int, k_max: int, cfg: SamplingConfig,
                 generator: torch.Generator | None, stream: StreamCallback | None) -> None:
        self.start = time.perf_counter()
        self.model, self.cfg, self.generator, self.stream = model, cfg, generator, stream
        self.ftp = model.model_type == "ftp"
        self.n = n
        B, t = prompt.shape
        self.B, self.t = B, t
        # Column n is a sink for tokens a row commits past its n-th (speculative rows finish at different rounds).
        self.out = torch.zeros(B, n + 1, dtype=torch.long, device=prompt.device)
        self.filled = torch.zeros(B, dtype=torch.long, device=prompt.device)  # committed tokens per row
        self.done = 0  # tokens committed in every row (min of filled); streamed up to here
        self.passes = self.accepted = self.verified = 0
        if n == 0:
            return
        # Capacity: the longest sequence, plus the drafted tokens a speculative row may encode past its end.
        capacity = t + n + k_max
        self.cache = model.new_cache(B, capacity)
        self.pads = None if mask is None else (~mask).sum(1)  # (B,) left padding per row
        self.valid = None  # (B, capacity) real slots, for the encoder's key padding mask
        if mask is not None:
            self.valid = torch.ones(B, capacity, dtype=torch.bool, device=prompt.device)
            self.valid[:, :t] = mask
        self.h = self._encode(prompt)[:, -1]  # (B, d) state of the last encoded token
        self.last = prompt[:, -1]  # (B,) the last encoded token: decoder step-1 input

    # --- primitives ------------------------------------------------------------------------
    def _encode(self, idx: Tensor) -> Tensor:
        """idx (B, j) continuing each row's cache -> h (B, j, d)."""
        self.passes += 1
        cache = self.cache[0]
        j = idx.shape[1]
        positions = key_padding_mask = None
        if self.valid is not None:
            key_padding_mask = self.valid[:, : cache.length + j]
        if self.pads is not None or cache.ends is not None:
            # A row's position is its slot minus its left padding. Drafted tokens past a row's
            # last position are never committed; they take the last position instead.
            first = cache.ends[:, None] if cache.ends is not None else cache.length
            slots = first + torch.arange(j, device=idx.device)  # (B or 1, j)
            pads = self.pads[:, None] if self.pads is not None else 0
            positions = (slots - pads).clamp(0, self.model.config.block_size - 1).expand(idx.shape[0], j)
        return self.model.encoder(idx, self.cache, positions=positions, key_padding_mask=key_padding_mask)

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

    @property
    def remaining(self) -> int:
        """Tokens still to generate in the row that has the most left."""
        return self.n - self.done

    def _commit(self, tokens: Tensor, counts: Tensor | None = None) -> None:
        """tokens (B, j): row b's first counts[b] tokens (all j when None) become final, after
        what the row already has; nothing past a row's n-th token is kept."""
        j = tokens.shape[1]
        if j == 0:
            return
        if counts is None:  # every row advances by j: a plain copy, no host sync
            self.out[:, self.done : self.done + j] = tokens
            self.filled += j
            done = self.done + j
        else:
            offsets = torch.arange(j, device=tokens.device)
            cols = self.filled[:, None] + offsets  # (B, j)
            cols = torch.where((offsets < counts[:, None]) & (cols < self.n), cols, self.n)  # else: the sink
            self.out.scatter_(1, cols, tokens)
            self.filled = (self.filled + counts).clamp(max=self.n)
            done = int(self.filled.min())
        if self.stream is not None and done > self.done:
            self.stream(self.out[:, self.done : done])
        self.done = done

    def _draft(self, k: int, first: _Step1 | None, forced: Tensor | None) -> tuple[Tensor, Tensor]:
        """The decoder writes k tokens from self.h: -> tokens (B, k) and their distributions (B, k, V).

        Step j's input is the previous token (x_s for step 1). `first` is step 1 when it was
        already computed (by the previous verification); `forced` (B,) replaces the sampled
        step-1 token where it is >= 0 (rows whose previous round already fixed it).
        """
        model = self.model
        first = first if first is not None else self._step1(self.h, self.last)
        tok = self._sample(first.q)  # (B,)
        if forced is not None:
            tok = torch.where(forced >= 0, forced, tok)
        tokens, dists = [tok], [first.q]
        for _ in range(k - 1):
            features = model.decode(tok[:, None], first.memory, self.h, cache=first.cache)  # (B, 1, d)
            q = probs(model.head(features[:, 0]), self.cfg)  # (B, V)
            tok = self._sample(q)
            tokens.append(tok)
            dists.append(q)
        return torch.stack(tokens, 1), torch.stack(dists, 1)  # (B, k), (B, k, V)

    @staticmethod
    def _draft_length(k_cap: int, alpha: float) -> int:
        """The draft length in 1..k_cap with the most expected tokens per unit of work for a row
        whose drafts are accepted with probability alpha.

        A round of k drafts encodes and keeps, in expectation, 1 + alpha + ... + alpha^(k-1) tokens
        (y_1 and the accepted prefix; a residual token is kept by the next round) and costs
        1 + (k-1) * DRAFT_TOKEN_COST `ar` steps; k = 1 is an `ar` step. The caller passes the
        lowest acceptance among the rows still generating: a batch lasts as long as its slowest
        row, so a row that rejects its drafts makes the batch run `ar` steps, not long rounds.
        k depends only on earlier rounds, never on this round's draws: exactness is untouched.
        """
        rates = [sum(alpha**j for j in range(k)) / (1 + (k - 1) * DRAFT_TOKEN_COST) for k in range(1, k_cap + 1)]
        return 1 + rates.index(max(rates))

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
        rows = torch.arange(B, device=self.out.device)
        forced: Tensor | None = None  # (B,) committed, not yet encoded y_1 per row; -1 where none
        first: _Step1 | None = None  # decoder step 1 at every row's current state, from the last verification
        row_accepted = torch.zeros(B, device=self.out.device)  # per row: accepted drafts so far
        row_verified = torch.zeros(B, device=self.out.device)  # per row: verified drafts so far
        while self.remaining > 0:
            active = self.filled < self.n  # (B,) rows that still need tokens
            # Acceptance so far per row, from an optimistic prior (0.9, weight 2) so that drafts get tried.
            alpha = torch.where(active, (row_accepted + 1.8) / (row_verified + 2), 1.0).min().item()
            # A forced y_1 is already paid for: the round may then draft one token more.
            k = self._draft_length(min(k_max, self.remaining + (forced is not None)), alpha)
            y, q = self._draft(k, first, forced)  # (B, k), (B, k, V)
            # y_1 ~ q_1 is an exact `ar` sample: final already (rows with a forced y_1 committed it before).
            self._commit(y[:, :1], counts=(forced < 0).long() if forced is not None else torch.ones_like(self.filled))
            if self.remaining == 0:
                break  # every row is complete; no later token needs y_1's state
            base = self.cache[0].ends if self.cache[0].ends is not None else self.cache[0].length
            hv = self._encode(y)  # (B, k, d): h at every drafted position, one pass
            # Decoder step 1 at every drafted position, M = B*k rows: column j-2 verifies y_j
            # (j = 2..k), and column a_b is row b's next step 1, so it is computed only once.
            verify = self._step1(hv.reshape(B * k, -1), y.reshape(-1))
            if k == 1:  # an `ar` step: nothing to verify, nothing to roll back
                self.h, self.last, first, forced = hv[:, 0], y[:, 0], verify, None
                continue
            p = verify.q.view(B, k, -1)  # (B, k, V)
            pd, qd, yd = p[:, :-1], q[:, 1:], y[:, 1:]  # (B, k-1, V), (B, k-1, V), (B, k-1)
            p_y = pd.gather(-1, yd[..., None])[..., 0]  # (B, k-1)
            q_y = qd.gather(-1, yd[..., None])[..., 0]  # (B, k-1)
            if self.cfg.greedy:  # one-hot p and q: accept iff p_y = 1; no randomness needed
                u = torch.zeros(B, k - 1, device=p.device)
            else:
                u = torch.rand(B, k - 1, generator=self.generator, device=p.device)
            ok = u * q_y < p_y  # accept w.p. min(1, p/q), written without a division
            a = ok.long().cumprod(-1).sum(-1)  # (B,) longest accepted prefix per row
            self.accepted += int(a[active].sum())
            self.verified += int(active.sum()) * (k - 1)
            row_accepted += a * active
            row_verified += (k - 1) * active
            self._commit(yd, counts=a)
            # Each row keeps y_1..y_{1+a_b}; a finished row keeps no more than its sequence, so the
            # cache never outgrows t + n + k_max.
            for c in self.cache:
                c.truncate(torch.minimum(base + 1 + a, self.t + self.filled))
            self.h, self.last = hv[rows, a], y[rows, a]
            first = _select_rows(verify, rows * k + a)
            # Rows that rejected y_{2+a_b} resolve that position from the residual max(0, p - q).
            at = a.clamp(max=k - 2)
            residual = (pd[rows, at] - qd[rows, at]).clamp_min(0.0)  # (B, V)
            mass = residual.sum(-1, keepdim=True)
            # A row that accepted everything (or, in fp32, has p == q) has no residual; its sample is unused.
            residual = torch.where(mass > 0, residual / mass.clamp_min(1e-30), pd[rows, at])
            rejected = a < k - 1
            forced = torch.where(rejected, self._sample(residual), -1)  # (B,)
            self._commit(forced[:, None], counts=rejected.long())

def _select_rows(step: _Step1, rows: Tensor) -> _Step1:
    """Step-1 state of the given rows (B,) of a larger batch: memory, decoder cache, q."""
    memory = [(k[rows], v[rows]) for k, v in step.memory]  # (B, H, P, hd) each
    return _Step1(memory, [c.select(rows) for c in step.cache], step.q[rows])
