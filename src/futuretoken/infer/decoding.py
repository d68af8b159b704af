"""The decoding loops behind `generate`: `ar`, `rollout` and `speculative`, on one batch.

Speculative decoding, one round, in each row independently (the row's state is at its last
encoded token x_s):
1. Draft: the drafter writes k tokens from the state; y_j is drawn from a distribution q_j
   that may depend on y_1..y_{j-1} (FTP's decoder runs on from h_s with inputs x_s, y_1, ...;
   MTP's head j reads the trunk at s; MTP-seq's module j-1 reads y_{j-1}). q_1 is exactly
   the `ar` distribution of x_{s+1}, so y_1 needs no verification: it is committed at once
   (unless it was already fixed by the previous round, see 3).
2. Verify: ONE encoder pass over y_1..y_k (cached, all rows together) gives the state at
   each drafted position; its `ar` distribution at the position of y_{j-1} is p_j, that of
   y_j (FTP: decoder step 1 there, M = B*k rows). Draft y_j (j >= 2) is accepted with
   probability min(1, p_j(y_j) / q_j(y_j)); the row accepts the longest prefix y_2..y_{1+a}
   and commits it. The row's caches keep y_1..y_{1+a}: every row keeps its own length (the KV
   cache holds one length per row), so no row waits for another.
   The state at the position where the row's round ends (FTP: the step-1 run, its cross-attention K/V and
   decoder cache) is kept and starts its next draft, so nothing is computed twice.
3. If a < k-1, the first rejected position is resolved by a sample from
   norm(max(0, p - q)) there; that token is committed now but not encoded, and the next
   round uses it as its forced y_1. If a = k-1 (all accepted), nothing is forced and the
   next round's y_1 is the usual "bonus" token from the state at y_k.
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
from collections.abc import Callable

import torch
from torch import Tensor

from .drafters import NextToken
from .sampling import SamplingConfig, sample

StreamCallback = Callable[[Tensor], None]  # receives newly committed tokens (B, j), in order

# Work of one more drafted token (a draft step, one more position encoded and verified) in `ar`
# steps; measured on the demo's tiny FTP on CPU (README). It only steers speculative draft lengths.
DRAFT_TOKEN_COST = 0.75
# Each round, the acceptance counts so far weigh this much (about the last 10 rounds count): after a run of
# rejected drafts, rounds of one token let the estimate drift back to the prior, so drafting is tried again
# where the text has become predictable, instead of never once the counts have settled low.
ACCEPTANCE_MEMORY = 0.9


class Acceptance:
    """Per row, the acceptance rate of its drafts: accepted / verified drafts from an optimistic prior (0.9,
    weight 2) so that drafts get tried, older rounds weighing ACCEPTANCE_MEMORY less each round."""

    def __init__(self, rows: int, device) -> None:
        self.accepted = torch.zeros(rows, device=device)  # (B,)
        self.verified = torch.zeros(rows, device=device)  # (B,)

    def next_round(self, active: Tensor) -> float:
        """The lowest estimate among the `active` rows (B,) for this round (one host sync), then the decay."""
        alpha = torch.where(active, (self.accepted + 1.8) / (self.verified + 2), 1.0).min().item()
        self.accepted *= ACCEPTANCE_MEMORY
        self.verified *= ACCEPTANCE_MEMORY
        return alpha

    def add(self, accepted: Tensor, verified: Tensor) -> None:
        """This round's accepted and verified drafts per row (B,)."""
        self.accepted += accepted
        self.verified += verified


class Decoding:
    """State of one generate call: encoder cache, left padding, committed tokens, counters."""

    def __init__(self, model, prompt: Tensor, mask: Tensor | None, n: int, k_max: int, cfg: SamplingConfig,
                 generator: torch.Generator | None, stream: StreamCallback | None, drafter: NextToken) -> None:
        self.start = time.perf_counter()
        self.model, self.cfg, self.generator, self.stream, self.drafter = model, cfg, generator, stream, drafter
        self.n = n
        B = prompt.shape[0]
        # Column n is a sink for tokens a row commits past its n-th (speculative rows finish at different rounds).
        self.out = torch.zeros(B, n + 1, dtype=torch.long, device=prompt.device)
        self.filled = torch.zeros(B, dtype=torch.long, device=prompt.device)  # committed tokens per row
        self.done = 0  # tokens committed in every row (min of filled); streamed up to here
        self.passes = self.accepted = self.verified = 0
        if n == 0:
            return
        if drafter.lead:  # pad slots the drafter needs before every prompt: more left padding
            lead = torch.zeros(B, drafter.lead, dtype=torch.bool, device=prompt.device)
            mask = torch.cat([lead, mask if mask is not None else torch.ones_like(prompt, dtype=torch.bool)], 1)
            prompt = torch.cat([torch.zeros_like(lead, dtype=torch.long), prompt], 1)
        self.B, self.t = B, prompt.shape[1]
        # Capacity: the longest sequence, plus the drafted tokens a speculative row may encode past its end.
        capacity = self.t + n + k_max
        self.cache = model.new_cache(B, capacity)
        self.pads = None if mask is None else (~mask).sum(1)  # (B,) left padding per row
        self.valid = None  # (B, capacity) real slots, for the encoder's key padding mask
        if mask is not None:
            self.valid = torch.ones(B, capacity, dtype=torch.bool, device=prompt.device)
            self.valid[:, : self.t] = mask
        drafter.allocate(B, capacity, self.valid)
        self.state = drafter.advance(None, self._encode(prompt), prompt)  # at every row's last encoded token

    # --- primitives ------------------------------------------------------------------------
    def _encode(self, idx: Tensor):
        """idx (B, j) continuing each row's cache -> the drafter's view of the pass (h (B, j, d) and more)."""
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
        return self.drafter.encode(idx, self.cache, positions=positions, key_padding_mask=key_padding_mask)

    def _ends(self) -> Tensor | int:
        """Where every row's encoder cache ends (one int while all rows are alike)."""
        return self.cache[0].ends if self.cache[0].ends is not None else self.cache[0].length

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
            tok = self._sample(self.state.q)  # (B,)
            self._commit(tok[:, None])
            if self.remaining == 0:
                break  # the last token is never encoded: nothing would use its state
            self.state = self.drafter.advance(self.state, self._encode(tok[:, None]), tok[:, None])

    def rollout(self, k_max: int) -> None:
        while True:
            k = min(k_max, self.remaining)
            y, _ = self.drafter.draft(self.state, k, None, self._sample)  # (B, k)
            self._commit(y)
            if self.remaining == 0:
                break
            encoded = self._encode(y)  # catch up in one pass
            self.drafter.truncate(self._ends())  # every drafted token was kept
            self.state = self.drafter.advance(self.state, encoded, y)

    def speculative(self, k_max: int) -> None:
        B = self.B
        forced: Tensor | None = None  # (B,) committed, not yet encoded y_1 per row; -1 where none
        acceptance = Acceptance(B, self.out.device)
        while self.remaining > 0:
            active = self.filled < self.n  # (B,) rows that still need tokens
            alpha = acceptance.next_round(active)
            # A forced y_1 is already paid for: the round may then draft one token more.
            k = self._draft_length(min(k_max, self.remaining + (forced is not None)), alpha)
            y, q = self.drafter.draft(self.state, k, forced, self._sample)  # (B, k), (B, k, V)
            # y_1 ~ q_1 is an exact `ar` sample: final already (rows with a forced y_1 committed it before).
            self._commit(y[:, :1], counts=(forced < 0).long() if forced is not None else torch.ones_like(self.filled))
            if self.remaining == 0:
                break  # every row is complete; no later token needs y_1's state
            base = self._ends()
            # ONE encoder pass over the drafts: the state at the position of y_{j-1} holds p_j, the `ar`
            # distribution of y_j (j = 2..k), and the state at y_{1+a_b} is row b's next one.
            verify = self.drafter.states(self.state, self._encode(y), y)
            if k == 1:  # an `ar` step: nothing to verify, nothing to roll back
                self.drafter.truncate(self._ends())
                self.state, forced = self.drafter.select(verify, torch.zeros_like(self.filled)), None
                continue
            p = verify.q  # (B, k, V)
            # Positions 2..k: the verifier's distribution, the drafter's, and the drafted tokens.
            p_verify, q_draft, drafted = p[:, :-1], q[:, 1:], y[:, 1:]  # (B, k-1, V), (B, k-1, V), (B, k-1)
            p_y = p_verify.gather(-1, drafted[..., None])[..., 0]  # (B, k-1)
            q_y = q_draft.gather(-1, drafted[..., None])[..., 0]  # (B, k-1)
            if self.cfg.greedy:  # one-hot p and q: accept iff p_y = 1; no randomness needed
                u = torch.zeros(B, k - 1, device=p.device)
            else:
                u = torch.rand(B, k - 1, generator=self.generator, device=p.device)
            ok = u * q_y < p_y  # accept w.p. min(1, p/q), written without a division
            accepted = ok.long().cumprod(-1).sum(-1)  # (B,) longest accepted prefix per row
            self.accepted += int(accepted[active].sum())
            self.verified += int(active.sum()) * (k - 1)
            acceptance.add(accepted * active, (k - 1) * active)
            self._commit(drafted, counts=accepted)
            # Each row keeps y_1..y_{1+a_b}; a finished row keeps no more than its sequence, so the
            # cache never outgrows t + n + k_max.
            ends = torch.minimum(base + 1 + accepted, self.t + self.filled)
            for c in self.cache:
                c.truncate(ends)
            self.drafter.truncate(ends)
            self.state = self.drafter.select(verify, accepted)
            # Rows that rejected y_{2+a_b} resolve that position from the residual max(0, p - q).
            rows = torch.arange(B, device=accepted.device)
            at = accepted.clamp(max=k - 2)
            residual = (p_verify[rows, at] - q_draft[rows, at]).clamp_min(0.0)  # (B, V)
            mass = residual.sum(-1, keepdim=True)
            # A row that accepted everything (or, in fp32, has p == q) has no residual; its sample is unused.
            residual = torch.where(mass > 0, residual / mass.clamp_min(1e-30), p_verify[rows, at])
            rejected = accepted < k - 1
            forced = torch.where(rejected, self._sample(residual), -1)  # (B,)
            self._commit(forced[:, None], counts=rejected.long())
