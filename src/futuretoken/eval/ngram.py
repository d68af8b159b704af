"""Count-based unigram and bigram language models: the floor a neural model must clear.

A model that does not beat a bigram table on the same targets has learnt nothing a lookup
table could not hold, and no claim about its "semantic state" can be made (validity gate 1).

- unigram: add-one smoothed token frequencies of the training split;
- bigram: interpolated Kneser-Ney (Chen & Goodman 1998), the strongest count-based bigram:
      p(w | v) = max(c(v, w) - D, 0) / c(v) + D * N1+(v .) / c(v) * p_cont(w)
  with p_cont(w) proportional to N1+(. w) + 1 (the number of distinct left neighbours of w,
  add-one so no token has probability 0) and D = n1 / (n1 + 2 n2) from the counts of
  bigrams seen once and twice. A history never seen in training falls back to p_cont.
Both are scored on exactly the (context, target) pairs the neural models are scored on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class NgramModel:
    vocab_size: int
    unigram_logp: np.ndarray  # (V,)
    cont_logp: np.ndarray  # (V,) Kneser-Ney continuation distribution
    history_count: np.ndarray  # (V,) c(v): bigrams starting with v
    history_types: np.ndarray  # (V,) N1+(v .): distinct successors of v
    pair_keys: np.ndarray  # sorted v * V + w of every seen bigram
    pair_counts: np.ndarray  # their counts
    discount: float

    @classmethod
    def fit(cls, tokens: np.ndarray, vocab_size: int) -> "NgramModel":
        """tokens: 1-D training split (documents separated by end-of-text, which is a token like any other)."""
        t = np.asarray(tokens, dtype=np.int64)
        V = vocab_size
        unigram = np.bincount(t, minlength=V).astype(np.float64)
        unigram_logp = np.log((unigram + 1.0) / (unigram.sum() + V))
        keys, counts = np.unique(t[:-1] * V + t[1:], return_counts=True)
        n1, n2 = np.sum(counts == 1), np.sum(counts == 2)
        discount = float(n1 / (n1 + 2 * n2)) if n1 + n2 > 0 else 0.75
        left, right = keys // V, keys % V
        history_count = np.bincount(left, weights=counts, minlength=V)
        history_types = np.bincount(left, minlength=V).astype(np.float64)
        continuation = np.bincount(right, minlength=V).astype(np.float64) + 1.0
        cont_logp = np.log(continuation / continuation.sum())
        return cls(V, unigram_logp, cont_logp, history_count, history_types, keys, counts.astype(np.float64),
                   discount)

    def bigram_logp(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """log p(nxt | prev), element-wise over arrays of token ids."""
        prev, nxt = np.asarray(prev, dtype=np.int64), np.asarray(nxt, dtype=np.int64)
        keys = prev * self.vocab_size + nxt
        where = np.clip(np.searchsorted(self.pair_keys, keys), 0, len(self.pair_keys) - 1)
        pair = np.where(self.pair_keys[where] == keys, self.pair_counts[where], 0.0)
        c_hist = self.history_count[prev]
        seen = c_hist > 0
        safe = np.where(seen, c_hist, 1.0)
        cont = np.exp(self.cont_logp[nxt])
        p = np.where(seen, np.maximum(pair - self.discount, 0.0) / safe
                     + self.discount * self.history_types[prev] / safe * cont, cont)
        return np.log(p)

    def cross_entropy(self, windows: np.ndarray) -> dict[str, float]:
        """Mean next-token CE (nats) of the unigram and bigram models over windows (n, T + 1):
        target windows[:, t + 1] given windows[:, t], the pairs a neural model is scored on."""
        w = np.asarray(windows, dtype=np.int64)
        prev, nxt = w[:, :-1].reshape(-1), w[:, 1:].reshape(-1)
        return {"unigram": float(-self.unigram_logp[nxt].mean()), "bigram": float(-self.bigram_logp(prev, nxt).mean())}
