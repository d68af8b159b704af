"""Text embeddings from the encoder's per-token state vectors h_t (after its final LayerNorm).

- Batching uses right padding. The encoder is causal, so pad tokens placed after a text
  cannot change any of its positions; mean pooling averages only the real tokens. A text's
  vector therefore does not depend on what else is in its batch (up to float rounding of
  differently shaped kernels, ~1e-6).
- Pooling: "mean" averages a text's vectors, "last" takes its last token's (the only one that
  has seen the whole text in a causal model), "weighted_mean" weights token i (1-based) by i,
  as SGPT does for causal models: later tokens have seen more of the text.
- A text longer than the window (default block_size) is encoded in overlapping windows of
  `window` tokens with stride window // 2, each window encoded from position 0. Every token
  takes its vector from the first window that contains it, i.e. the one where it has the
  most left context: tokens of the first window see the text from its start; every later
  token sees at least window - stride previous tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .text import tokenizer_of

POOLS = ("mean", "last", "weighted_mean", "tokens")


def embed(
    model,
    token_lists: Sequence[Sequence[int]] | Sequence[str],
    pool: str = "mean",
    batch_size: int = 32,
    window: int | None = None,
) -> np.ndarray | list[np.ndarray]:
    """Embed texts with the model's encoder: token-id lists, or strings (tokenised with `model.tokenizer`).

    pool: "mean" (average over the text's tokens), "last" (the last token's vector) or
        "weighted_mean" (token i weighted by i) -> float32 array (n, d); "tokens" -> a list of
        float32 arrays (len_i, d).
    batch_size: windows encoded per forward pass.
    window: tokens per encoder window for long texts, 2..block_size (default block_size).
    """
    window = _check_settings(model, pool, batch_size, window)
    texts = _token_arrays(model, token_lists)
    jobs = _window_jobs(texts, window, last_only=pool == "last")
    vectors = _encode_windows(model, texts, jobs, window, batch_size, last_only=pool == "last")
    return _pool(vectors, pool, model.config.n_embd)


def _check_settings(model, pool: str, batch_size: int, window: int | None) -> int:
    """The window to use (block_size by default); ValueError naming any setting that cannot work."""
    if pool not in POOLS:
        raise ValueError(f"pool={pool!r} is unknown; choose one of {', '.join(POOLS)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is invalid: give an integer >= 1")
    block = model.config.block_size
    window = block if window is None else window
    if isinstance(window, bool) or not isinstance(window, int) or not 2 <= window <= block:
        raise ValueError(
            f"window={window!r} is invalid: give an integer in 2..block_size={block} (the stride is window // 2)"
        )
    return window


def _token_arrays(model, token_lists: Sequence[Sequence[int]] | Sequence[str]) -> list[np.ndarray]:
    """Each text as a 1-D int64 array of ids the model knows (strings are tokenised first)."""
    V = model.config.vocab_size
    if token_lists and isinstance(token_lists[0], str):
        token_lists = tokenizer_of(model).encode_batch(list(token_lists))
    texts = [np.asarray(t, dtype=np.int64).reshape(-1) for t in token_lists]
    for i, t in enumerate(texts):
        if len(t) == 0:
            raise ValueError(f"text {i} is empty; every text needs at least one token")
        if t.min() < 0 or t.max() >= V:
            raise ValueError(f"text {i} has token ids outside [0, {V}): min {t.min()}, max {t.max()}")
    return texts


Job = tuple[int, int, int, int]  # (text index, window start, first kept offset in the window, kept count)


def _window_jobs(texts: list[np.ndarray], window: int, last_only: bool) -> list[Job]:
    """The encoder windows to run, longest first (similar lengths together: less padding, same
    results, since padding cannot leak; see the module docstring)."""
    stride = window // 2
    jobs: list[Job] = []
    for i, t in enumerate(texts):
        L = len(t)
        n_windows = 1 + max(0, -(-(L - window) // stride))  # starts 0, stride, ... until the end is covered
        for w in range(n_windows - 1 if last_only else 0, n_windows):  # "last" needs only the last window
            start = w * stride
            # Window w owns tokens (w-1)*stride + window .. w*stride + window - 1 (window 0 owns its first `window`).
            first = L - 1 if last_only else 0 if w == 0 else (w - 1) * stride + window
            jobs.append((i, start, first - start, min(L, start + window) - first))
    return sorted(jobs, key=lambda j: min(len(texts[j[0]]) - j[1], window), reverse=True)


def _encode_windows(model, texts: list[np.ndarray], jobs: list[Job], window: int, batch_size: int,
                    last_only: bool) -> list[np.ndarray]:
    """Every text's kept vectors, float32 (len_i or 1 when last_only, d), in eval mode."""
    out = [np.empty((1 if last_only else len(t), model.config.n_embd), dtype=np.float32) for t in texts]
    device = model.head_weight.device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for b in range(0, len(jobs), batch_size):
                chunk = jobs[b : b + batch_size]
                lengths = [min(len(texts[i]) - start, window) for i, start, _, _ in chunk]
                idx = np.zeros((len(chunk), max(lengths)), dtype=np.int64)  # pad id 0: any valid id works
                for r, ((i, start, _, _), n) in enumerate(zip(chunk, lengths)):
                    idx[r, :n] = texts[i][start : start + n]
                h = model.encoder(torch.from_numpy(idx).to(device)).float().cpu().numpy()  # (b, t, d)
                for r, (i, start, offset, count) in enumerate(chunk):
                    dest = 0 if last_only else start + offset
                    out[i][dest : dest + count] = h[r, offset : offset + count]
    finally:
        model.train(was_training)
    return out


def _pool(vectors: list[np.ndarray], pool: str, d: int) -> np.ndarray | list[np.ndarray]:
    if pool == "tokens":
        return vectors
    if not vectors:
        return np.zeros((0, d), np.float32)
    if pool == "last":
        return np.stack([v[0] for v in vectors])
    if pool == "weighted_mean":
        return np.stack([_position_weighted_mean(v) for v in vectors])
    return np.stack([v.mean(0) for v in vectors])  # (n, d)


def _position_weighted_mean(vectors: np.ndarray) -> np.ndarray:
    """(len, d) -> (d,): token i (1-based) weighted by i."""
    weights = np.arange(1, len(vectors) + 1, dtype=np.float32)
    return (weights @ vectors / weights.sum()).astype(np.float32)


def encode(
    model,
    texts: Sequence[str] | Sequence[Sequence[int]],
    normalize: bool = False,
    batch_size: int = 32,
    pool: str = "mean",
    window: int | None = None,
) -> np.ndarray:
    """One float32 vector per text (n, d), as embedding libraries return them.

    texts: strings (tokenised with `model.tokenizer`) or token-id lists.
    pool: "mean", "last" or "weighted_mean" (see the module docstring).
    normalize: scale every vector to unit L2 norm (cosine similarity becomes a dot product).
    """
    if pool == "tokens":
        raise ValueError("encode returns one vector per text: pool must be mean, last or weighted_mean "
                         "(embed(..., pool='tokens') gives every token's vector)")
    vectors = embed(model, texts, pool=pool, batch_size=batch_size, window=window)
    if normalize:
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors
