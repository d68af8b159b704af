"""What generation needs from each model type beyond its encoder: the next-token distribution at
a row's state, and (rollout, speculative) a draft of several tokens from that state.

The run (infer/generate.py) holds one `State` per row, at the row's last encoded token; its `q`
is the `ar` distribution of the next token. After an encoder pass, `advance` gives the state at
the pass's last token, and `states` the states at every token of the pass (a speculative
verification reads q at each drafted position), of which `select` keeps one column per row.
A drafter's own KV caches (MTP's heads, MTP-seq's modules) sit slot for slot beside the
encoder's; `truncate` rolls them back with the encoder's after a round.

- NextToken: head(h_t). GPT, and the `ar` of MTP and MTP-seq, whose next-token path is a GPT.
- FTPDrafter: decoder step 1 from h_t is the `ar` distribution; the draft runs the decoder on.
- MTPDrafter: heads 2..N run beside the encoder on the trunk's state of every encoded token.
  The draft takes y_1 from head 1 and y_j from head j at the same position, independently of
  y_2..y_{j-1}: still an exact proposal, the acceptance rule only needs y_j ~ q_j.
- MTPSeqDrafter: module k at slot t reads x_{t+k}, so the module caches lag behind the encoder:
  they hold the slots up to s - D - 1 (s: the row's last encoded slot, D modules), every input of
  which is a committed token. A draft runs every module over the W = D + 1 slots s-D..s; module
  k's output at slot s gives q_{k+1}, whose sample y_{k+1} module k+1 then reads. The round ends
  at s' <= s + k <= s + D + 1 and the caches keep the slots up to s' - D - 1: their inputs were
  committed tokens (y_1 and the accepted drafts), and a slot that read an undrafted token (past
  y_k, a placeholder) is always among the dropped ones. W pad slots before the prompt give every
  row a whole window from the first round.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..model.blocks import KVCache
from .sampling import SamplingConfig, probs

Sampler = Callable[[Tensor], Tensor]  # (..., V) distributions -> (...,) tokens


@dataclass
class State:
    q: Tensor  # (B, V): `ar` distribution of the token after each row's last encoded one; (B, j, V) over a pass


class NextToken:
    """The next token from head(h_t): GPT's `ar`, and MTP's and MTP-seq's."""

    lead = 0  # pad slots the drafter needs before the prompt
    next_token_beside_encoder = False  # True: even `ar` needs this drafter (the next token is not head(h_t))

    def __init__(self, model, cfg: SamplingConfig) -> None:
        self.model, self.cfg = model, cfg
        self.valid: Tensor | None = None  # (B, capacity) the run's real slots (None: no padding)

    def allocate(self, batch: int, capacity: int, valid: Tensor | None) -> None:
        """Caches for a run of `batch` rows and `capacity` slots; `valid` marks its real slots."""
        self.valid = valid

    def probs(self, features: Tensor) -> Tensor:
        """(..., d) after the final norm -> (..., V) sampling distributions."""
        return probs(self.model.head(features), self.cfg)

    def encode(self, idx: Tensor, cache: list[KVCache], **encoder_args):
        """One encoder pass (B, j) continuing `cache` -> what `advance` and `states` read."""
        return self.model.encoder(idx, cache, **encoder_args)  # (B, j, d)

    def advance(self, prev: State | None, encoded, idx: Tensor) -> State:
        """The state at the last token of a pass over idx (B, j); prev: the state before it (None: the prompt)."""
        return State(self.probs(encoded[:, -1]))

    def states(self, prev: State, encoded, idx: Tensor) -> State:
        """The states at every token of a pass over idx (B, j): q is (B, j, V)."""
        return State(self.probs(encoded))

    def select(self, states: State, a: Tensor) -> State:
        """Row b's state at column a[b] of `states`."""
        return State(states.q[_rows(a), a])

    def truncate(self, ends: Tensor | int) -> None:
        """The encoder's caches now end at `ends` (per row): roll back the drafter's own."""

    def draft(self, state: State, k: int, forced: Tensor | None, sample: Sampler) -> tuple[Tensor, Tensor]:
        """k tokens from each row's state -> tokens (B, k) and their distributions (B, k, V); `forced` (B,)
        replaces y_1 where it is >= 0. Here y_1 alone (horizon 1: nothing predicts further)."""
        if k != 1:
            raise ValueError(f"{type(self.model).__name__} with horizon 1 drafts one token, not {k}")
        return _first(state, forced, sample)[:, None], state.q[:, None]


def _rows(a: Tensor) -> Tensor:
    return torch.arange(a.shape[0], device=a.device)


def _first(state: State, forced: Tensor | None, sample: Sampler) -> Tensor:
    """y_1 (B,): a sample of the `ar` distribution, or the token a row's previous round already fixed."""
    tok = sample(state.q)
    return tok if forced is None else torch.where(forced >= 0, forced, tok)


# --- FTP: the future-token decoder ------------------------------------------------------------------
@dataclass
class _FirstStep:
    """Decoder step 1 already run from M states: what a draft continues from."""

    cross_kv: list[tuple[Tensor, Tensor]]  # per decoder layer: cross-attention K/V (M, H, P, hd)
    cache: list[KVCache]  # decoder self-attention cache holding step 1
    q: Tensor  # (M, V) distribution of step 1: the `ar` next-token distribution


@dataclass
class FTPState(State):
    h: Tensor  # (B, d) the encoder state the decoder reads ((B, j, d) over a pass)
    step1: _FirstStep  # over B rows (B * j over a pass); consumed by one draft


class FTPDrafter(NextToken):
    next_token_beside_encoder = True  # FTP's next token is decoder step 1

    def _step1(self, h: Tensor, last: Tensor) -> _FirstStep:
        """Decoder step 1 from states h (M, d) whose own tokens are last (M,)."""
        model = self.model
        cross_kv = model.cross_kv(h)  # cross-attention K/V, reused by every later step of a draft
        cache = model.new_decoder_cache(h.shape[0])
        features = model.decode(last[:, None], cross_kv, h, cache=cache)  # (M, 1, d)
        return _FirstStep(cross_kv, cache, self.probs(features[:, 0]))

    def advance(self, prev, h: Tensor, idx: Tensor) -> FTPState:
        step1 = self._step1(h[:, -1], idx[:, -1])
        return FTPState(step1.q, h[:, -1], step1)

    def states(self, prev, h: Tensor, idx: Tensor) -> FTPState:
        # Decoder step 1 at every position of the pass, M = B*j rows: each one's q verifies a draft,
        # and the selected one starts the row's next draft, so no step is computed twice.
        B, j, d = h.shape
        step1 = self._step1(h.reshape(B * j, d), idx.reshape(-1))
        return FTPState(step1.q.view(B, j, -1), h, step1)

    def select(self, states: FTPState, a: Tensor) -> FTPState:
        rows = _rows(a)
        flat = rows * states.h.shape[1] + a  # (B,) rows of the B*j decoder runs
        s = states.step1
        step1 = _FirstStep([(k[flat], v[flat]) for k, v in s.cross_kv], [c.select(flat) for c in s.cache], s.q[flat])
        return FTPState(step1.q, states.h[rows, a], step1)

    def draft(self, state: FTPState, k: int, forced: Tensor | None, sample: Sampler) -> tuple[Tensor, Tensor]:
        """The decoder writes k tokens; step j's input is the previous token (x_s for step 1, in state.step1)."""
        model = self.model
        tok = _first(state, forced, sample)  # (B,)
        tokens, dists = [tok], [state.q]
        for _ in range(k - 1):
            features = model.decode(tok[:, None], state.step1.cross_kv, state.h, cache=state.step1.cache)  # (B, 1, d)
            q = self.probs(features[:, 0])  # (B, V)
            tok = sample(q)
            tokens.append(tok)
            dists.append(q)
        return torch.stack(tokens, 1), torch.stack(dists, 1)


# --- MTP: parallel heads ----------------------------------------------------------------------------
@dataclass
class MTPState(State):
    features: Tensor  # (B, N-1, d) heads 2..N at the row's last token ((B, j, N-1, d) over a pass)


class MTPDrafter(NextToken):
    def allocate(self, batch: int, capacity: int, valid: Tensor | None) -> None:
        super().allocate(batch, capacity, valid)
        self.caches = self.model.encoder.new_cache(batch, capacity, layers=len(self.model.heads))

    def encode(self, idx: Tensor, cache: list[KVCache], **encoder_args) -> tuple[Tensor, Tensor]:
        """-> h (B, j, d) and heads 2..N's features (B, j, N-1, d); the heads' caches take the same slots."""
        model = self.model
        # The heads' caches hold what the encoder's held before this pass: the same mask.
        mask = model.encoder.attention_mask(*idx.shape, self.caches, encoder_args.get("key_padding_mask"), idx.device)
        z, h = model.trunk_and_head1(idx, cache, **encoder_args)
        features = [model.head_features(z, k, cache=c, mask=mask) for k, c in enumerate(self.caches, start=2)]
        return h, torch.stack(features, 2)

    def advance(self, prev, encoded, idx: Tensor) -> MTPState:
        h, features = encoded
        return MTPState(self.probs(h[:, -1]), features[:, -1])

    def states(self, prev, encoded, idx: Tensor) -> MTPState:
        h, features = encoded
        return MTPState(self.probs(h), features)

    def select(self, states: MTPState, a: Tensor) -> MTPState:
        rows = _rows(a)
        return MTPState(states.q[rows, a], states.features[rows, a])

    def truncate(self, ends: Tensor | int) -> None:
        for c in self.caches:
            c.truncate(ends)

    def draft(self, state: MTPState, k: int, forced: Tensor | None, sample: Sampler) -> tuple[Tensor, Tensor]:
        """y_1 from head 1, y_j ~ head j at the same position (j = 2..k)."""
        q = torch.cat([state.q[:, None], self.probs(state.features[:, : k - 1])], 1)  # (B, k, V)
        y = torch.cat([_first(state, forced, sample)[:, None], sample(q[:, 1:])], 1)  # (B, k)
        return y, q


# --- MTP-seq: sequential modules --------------------------------------------------------------------
@dataclass
class MTPSeqState(State):
    h: Tensor  # (B, W, d) encoder states at slots s-D..s ((B, W + j, d): those and the pass's)
    x: Tensor  # (B, W) tokens at those slots ((B, W + j))


class MTPSeqDrafter(NextToken):
    def __init__(self, model, cfg: SamplingConfig) -> None:
        super().__init__(model, cfg)
        self.lead = model.horizon  # W = D + 1 slots of modules' window

    def allocate(self, batch: int, capacity: int, valid: Tensor | None) -> None:
        super().allocate(batch, capacity, valid)
        self.caches = self.model.encoder.new_cache(batch, capacity, layers=len(self.model.mtp))

    def _mask(self, t: int, device) -> Tensor | None:
        """The modules' attention mask for t new slots after what their caches hold (the run's `valid`
        always exists here: the W lead slots are padding)."""
        valid = self.valid[:, : self.caches[0].length + t]
        return self.model.encoder.attention_mask(valid.shape[0], t, self.caches, valid, device)

    def advance(self, prev: MTPSeqState | None, h: Tensor, idx: Tensor) -> MTPSeqState:
        W = self.lead
        if prev is not None:
            return self.select(self.states(prev, h, idx), torch.full_like(idx[:, 0], idx.shape[1] - 1))
        # The prompt (W pad slots first): the module caches take every slot but the last W.
        model, t = self.model, h.shape[1] - W
        mask, state = self._mask(t, h.device), h[:, :t]  # (B, t, d): h^0
        for k, (module, cache) in enumerate(zip(model.mtp, self.caches), start=1):
            state = module(state, model.encoder.wte(idx[:, k : k + t]), cache=cache, mask=mask)  # h^k, reads x_{t+k}
        return MTPSeqState(self.probs(h[:, -1]), h[:, -W:], idx[:, -W:])

    def states(self, prev: MTPSeqState, h: Tensor, idx: Tensor) -> MTPSeqState:
        return MTPSeqState(self.probs(h), torch.cat([prev.h, h], 1), torch.cat([prev.x, idx], 1))

    def select(self, states: MTPSeqState, a: Tensor) -> MTPSeqState:
        # Slot s' = s + 1 + a is column W + a of the window: its W slots end there.
        cols = (a + 1)[:, None] + torch.arange(self.lead, device=a.device)  # (B, W)
        h = states.h.gather(1, cols[..., None].expand(-1, -1, states.h.shape[2]))
        return MTPSeqState(states.q[_rows(a), a], h, states.x.gather(1, cols))

    def truncate(self, ends: Tensor | int) -> None:
        for c in self.caches:
            c.truncate(ends - self.lead)

    def draft(self, state: MTPSeqState, k: int, forced: Tensor | None, sample: Sampler) -> tuple[Tensor, Tensor]:
        """Modules 1..D over the window, module m drafting y_{m+1}. Every module runs, even past the
        draft's length: its cache must cover the slots the round keeps."""
        model, W = self.model, self.lead
        B = state.x.shape[0]
        tok = _first(state, forced, sample)
        tokens, dists = [tok], [state.q]
        x = torch.zeros(B, 2 * W, dtype=torch.long, device=tok.device)  # slots s-D .. s+D+1
        x[:, :W], x[:, W] = state.x, tok  # undrafted slots keep 0: only dropped cache slots read them
        mask, h = self._mask(W, tok.device), state.h  # h^0 at slots s-D..s
        for m, (module, cache) in enumerate(zip(model.mtp, self.caches), start=1):
            h = module(h, model.encoder.wte(x[:, m : m + W]), cache=cache, mask=mask)  # (B, W, d): h^m
            if m < k:  # module m at slot s predicts x_{s+m+1}
                q = self.probs(model.encoder.ln_f(h[:, -1]))  # (B, V)
                tok = sample(q)
                tokens.append(tok)
                dists.append(q)
                x[:, W + m] = tok
        return torch.stack(tokens, 1), torch.stack(dists, 1)


DRAFTERS = {"ftp": FTPDrafter, "mtp": MTPDrafter, "mtp_seq": MTPSeqDrafter}  # model types that draft


def drafter_for(model, strategy: str, cfg: SamplingConfig) -> NextToken:
    """The drafter of a model type for a strategy: `ar` only needs the next-token distribution, and so
    does a draft of one token (MTP and MTP-seq with horizon 1 have nothing beside the encoder), unless
    the next token itself comes from beside the encoder (FTP's decoder). A model type without a
    drafter generates with `ar` from its logits."""
    drafter = DRAFTERS.get(model.model_type)
    if drafter is not None and (drafter.next_token_beside_encoder or (strategy != "ar" and model.horizon > 1)):
        return drafter(model, cfg)
    return NextToken(model, cfg)
