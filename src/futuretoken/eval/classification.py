"""E5: how well frozen, pooled state vectors represent a text's topic or sentiment.

Protocol:
- Texts: a labelled set from futuretoken.eval.labelled (BBC News 5 topics, Rotten Tomatoes
  rotten/fresh), optionally a stratified subsample (`limit`; CPU runs use ~500 texts).
- Each text is tokenised with the model's tokenizer and truncated to its first `block_size`
  tokens, so it is encoded in one window from position 0 (no sliding windows). The model sees
  the same prefix under every pooling, and the bag-of-words baseline is scored on the decoded
  prefix, i.e. on exactly the text the model saw. (BBC articles are ~400 tokens; most exceed a
  small model's block.) No end-of-text token is prepended: the vectors are what `ft.embed` gives.
- Features: `ft.embed(model, ids, pool)` for pool "mean" (average of h_t over the text) and
  "last" (h of the last token), taken after the encoder's final LayerNorm; the model is frozen.
- Probe: StandardScaler + multinomial LogisticRegression (L2, C=1.0, lbfgs), fitted inside each
  fold (the scaler sees training folds only), StratifiedKFold(5, shuffle=True,
  random_state=seed). Reported: mean and std (ddof=0) of the fold accuracies, the folds, and the
  majority-class rate ("chance").
- Baselines: bag of words (TF-IDF of words, fitted inside each fold, same logistic regression)
  on the same texts; the untrained floor is the same experiment on `random_init_like(model)`,
  a randomly initialised model of the same class and shape with the same tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..infer.embed import embed
from .labelled import load_labelled

EXTRA_HINT = "pip install 'futuretoken[eval]'"


def _sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError as e:
        raise ImportError(f"the classification probe needs scikit-learn: {EXTRA_HINT}") from e


def _cross_validate(make_model, X, labels, folds: int, seed: int) -> dict:
    _sklearn()
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    y = np.asarray(labels)
    _, counts = np.unique(y, return_counts=True)
    if len(counts) < 2:
        raise ValueError("the probe needs at least two classes")
    if counts.min() < folds:
        raise ValueError(f"the smallest class has {counts.min()} examples, fewer than folds={folds}: "
                         "use more texts (a larger limit) or fewer folds")
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    scores = cross_val_score(make_model(), X, y, cv=cv, scoring="accuracy")
    return {"mean": float(scores.mean()), "std": float(scores.std()), "folds": [float(s) for s in scores],
            "chance": float(counts.max() / counts.sum())}


def _logistic(C: float, max_iter: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=max_iter)


def probe_accuracy(features: np.ndarray, labels: Sequence[int], folds: int = 5, seed: int = 0,
                   C: float = 1.0, max_iter: int = 2000) -> dict:
    """Cross-validated accuracy of a logistic-regression probe on fixed features (n, d).

    Returns {"mean", "std", "folds": [accuracy per fold], "chance": majority-class rate}.
    """
    _sklearn()
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.asarray(features, dtype=np.float64)
    if X.ndim != 2 or len(X) != len(labels):
        raise ValueError(f"features must be (n, d) with n = len(labels) = {len(labels)}, got {X.shape}")
    return _cross_validate(lambda: make_pipeline(StandardScaler(), _logistic(C, max_iter)), X, labels, folds, seed)


def bag_of_words_baseline(texts: Sequence[str], labels: Sequence[int], folds: int = 5, seed: int = 0,
                          C: float = 1.0, max_iter: int = 2000) -> dict:
    """The same probe on TF-IDF word features (vocabulary fitted inside each training fold)."""
    _sklearn()
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline

    make = lambda: make_pipeline(TfidfVectorizer(sublinear_tf=True), _logistic(C, max_iter))  # noqa: E731
    return _cross_validate(make, np.asarray(list(texts), dtype=object), labels, folds, seed)


def random_init_like(model, seed: int = 0):
    """A randomly initialised model of the same class, config, device and tokenizer (the untrained floor)."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG stream untouched
        torch.manual_seed(seed)
        fresh = type(model)(model.config)
    fresh.tokenizer = getattr(model, "tokenizer", None)
    return fresh.to(model.head_weight.device).eval()


def classification_experiment(model, dataset: str = "bbc", pool: str | Sequence[str] = ("mean", "last"),
                              limit: int | None = None, seed: int = 0, folds: int = 5,
                              bag_of_words: bool = True) -> dict:
    """E5 on one model: probe accuracy of its pooled vectors on a labelled set (protocol: module docstring).

    pool: one pooling or several ("mean", "last"); each gets its own probe.
    Returns {"dataset", "n", "label_names", "chance", "max_tokens", "truncated", "probe": {pool: probe
    result}, "bag_of_words": probe result or None}.
    """
    if model.tokenizer is None:
        raise ValueError("the model has no tokenizer attached; load it with futuretoken.load(run_dir)")
    pools = [pool] if isinstance(pool, str) else list(pool)
    texts, labels, label_names = load_labelled(dataset, limit=limit, seed=seed)
    block = model.config.block_size
    ids = model.tokenizer.encode_batch(texts)
    truncated = sum(len(t) > block for t in ids)
    ids = [t[:block] for t in ids]
    result = {"dataset": dataset, "n": len(texts), "label_names": label_names, "folds": folds, "seed": seed,
              "max_tokens": block, "truncated": truncated, "probe": {}, "bag_of_words": None}
    for p in pools:
        result["probe"][p] = probe_accuracy(embed(model, ids, pool=p), labels, folds=folds, seed=seed)
    result["chance"] = result["probe"][pools[0]]["chance"] if pools else None
    if bag_of_words:
        seen = [model.tokenizer.decode(t) for t in ids]  # exactly the text the model saw
        result["bag_of_words"] = bag_of_words_baseline(seen, labels, folds=folds, seed=seed)
        result["chance"] = result["bag_of_words"]["chance"]
    return result
