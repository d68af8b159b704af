"""E5: how well frozen, pooled state vectors represent a text's topic or sentiment.

Protocol:
- Texts: a labelled set from futuretoken.eval.labelled: BBC News (5 topics, all 2127 texts by
  default), Rotten Tomatoes (rotten/fresh, a stratified subsample of 4000 by default) and Brown
  (4 topic groups, all ~4400 passages of the corpus's probe part, grouped by document; the other
  part can be in the pretraining mix, builtin:prose+brown). DEFAULT_LIMITS holds these sizes;
  `limit` overrides them.
- Each text is tokenised with the model's tokenizer and truncated to its first `block_size`
  tokens, so it is encoded in one window from position 0 (no sliding windows). The model sees
  the same prefix under every pooling, and the bag-of-words baseline is scored on the decoded
  prefix, i.e. on exactly the text the model saw. (BBC articles are ~400 tokens; Brown
  passages ~110 words, ~250 tokens with bpe:1024; many exceed a small model's block:
  "truncated" counts them.) No end-of-text
  token is prepended: the vectors are what `ft.embed` gives.
- Features: the per-token vectors h_t after the encoder's final LayerNorm are computed once per
  model and text, then pooled: "mean" (average over the text; the primary result) and "last"
  (h of the last token). The model is frozen.
- Probe, nested cross-validation: outer StratifiedKFold(5, shuffle=True, random_state=seed), or
  StratifiedGroupKFold with the same arguments when the set has groups (Brown: no document has
  passages on both sides of any split, inner ones included). In each outer training fold a
  StandardScaler is fitted, then LogisticRegressionCV (multinomial, L2, lbfgs) picks C from
  CS = logspace(-3, 2, 6) by accuracy over 3 inner folds of that training fold (same splitter
  kind and seed; ties go to the smallest C) and refits on the whole training fold, which then
  predicts the outer test fold. Neither the scaler nor C ever sees the test fold; the inner
  folds share their outer fold's scaling (label-free), which lets one warm-started path over
  the Cs serve each inner fold.
- Reported per pooling: "accuracy" (out-of-fold accuracy over all n texts), "correct" (one bool
  per text, in the order of load_labelled: whether its out-of-fold prediction was right; two
  models probed on the same set can be compared text by text with the exact McNemar test,
  eval/stats.py `mcnemar_exact`), "folds" (accuracy per outer fold), "chosen_C" (per outer
  fold; a choice on an edge of the grid that beats its neighbour grows the grid by two decades
  on that side, up to 4 times, "C_at_edge" says where it still sits on one), and "above_chance": a one-sided exact binomial test of the correct count against the
  majority-class rate ("chance") at alpha 0.05, "passed" when p < alpha. (Out-of-fold
  predictions come from five fitted probes, not one, so the test treats them as independent
  trials: an approximation.)
- Baselines: bag of words (TF-IDF of words, sublinear tf, fitted on each outer training fold in
  place of the scaler, same nested CV) on the text the model saw; it depends only on that text
  (the tokenizer and block_size), so a process computes it once per set and reuses it for every
  model that sees the same text. The untrained floor is the same probe on
  `random_init_like(model, s)` for several init seeds s (eval/suite.measure_floor).
- Deterministic given `seed` (subsample and every split) and the model.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..infer.embed import embed
from .experiment import Claim, Experiment
from .labelled import LabelledSet, load_labelled

EXTRA_HINT = "pip install 'futuretoken[eval]'"
CS = tuple(float(c) for c in np.logspace(-3, 2, 6))
DEFAULT_LIMITS = {"bbc": None, "rotten_tomatoes": 4000, "brown": None}
POOLS = ("mean", "last")
ALPHA = 0.05
EMBED_CHUNK = 256  # texts whose per-token vectors are held at once (bounds memory for long blocks)


def _sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError as e:
        raise ImportError(f"the classification probe needs scikit-learn: {EXTRA_HINT}") from e


def _splitter(folds: int, grouped: bool, seed: int):
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    return (StratifiedGroupKFold if grouped else StratifiedKFold)(folds, shuffle=True, random_state=seed)


def _check_classes(y: np.ndarray, groups: np.ndarray | None, folds: int, inner_folds: int) -> np.ndarray:
    """Class sizes; ValueError when a class cannot be in every training fold."""
    if not 2 <= inner_folds < folds:
        raise ValueError(f"inner_folds={inner_folds} must be in 2..folds-1 (folds={folds})")
    _, counts = np.unique(y, return_counts=True)
    if len(counts) < 2:
        raise ValueError("the probe needs at least two classes")
    if counts.min() < folds:
        raise ValueError(f"the smallest class has {counts.min()} examples, fewer than folds={folds}: "
                         "use more texts (a larger limit) or fewer folds")
    if groups is not None:
        docs = min(len(np.unique(groups[y == c])) for c in np.unique(y))
        if docs < folds:
            raise ValueError(f"a class has texts from only {docs} documents, fewer than folds={folds}: "
                             "use more documents or fewer folds")
    return counts


def above_chance(correct: Sequence[bool], chance: float, alpha: float = ALPHA) -> dict:
    """Is an accuracy meaningfully above the majority-class rate? One-sided exact binomial test.

    Returns {"majority_rate", "accuracy", "p_value", "alpha", "passed": p_value < alpha}.
    """
    from scipy.stats import binomtest

    correct = np.asarray(correct, dtype=bool)
    p = binomtest(int(correct.sum()), len(correct), chance, alternative="greater").pvalue
    return {"majority_rate": float(chance), "accuracy": float(correct.mean()), "p_value": float(p),
            "alpha": alpha, "passed": bool(p < alpha)}


def _logistic_cv(Cs: Sequence[float], inner: list, max_iter: int):
    """Multinomial L2 logistic regression whose C is chosen by accuracy over the `inner` splits."""
    from sklearn.linear_model import LogisticRegressionCV

    params = LogisticRegressionCV().get_params()
    # scikit-learn 1.8 names the L2 penalty as l1_ratios=(0,) and 1.9 reshapes the fitted
    # attributes: say so where the arguments exist, so each version fits the same model quietly.
    new_api = {"l1_ratios": (0.0,)} if params.get("l1_ratios") == "warn" else {}
    if "use_legacy_attributes" in params:
        new_api["use_legacy_attributes"] = False
    return LogisticRegressionCV(Cs=list(Cs), cv=inner, scoring="accuracy", max_iter=max_iter, **new_api)


def nested_cv(make_features, X, labels: Sequence[int], groups: Sequence | None = None, folds: int = 5,
              inner_folds: int = 3, seed: int = 0, Cs: Sequence[float] = CS, max_iter: int = 1000) -> dict:
    """Out-of-fold accuracy of `make_features()` + logistic regression with C tuned by inner CV.

    make_features: a factory of the transformer that precedes the logistic regression (a scaler,
    a TF-IDF vectorizer), fitted on each outer training fold. X: (n, d) array or n texts.
    Returns {"accuracy", "folds", "chosen_C", "correct", "chance", "above_chance"} (see the module docstring).
    """
    _sklearn()
    from threadpoolctl import threadpool_limits

    y = np.asarray(labels)
    g = None if groups is None else np.asarray(groups)
    if len(X) != len(y) or (g is not None and len(g) != len(y)):
        raise ValueError(f"X, labels and groups must have one row per text: {len(X)}, {len(y)}, "
                         f"{None if g is None else len(g)}")
    counts = _check_classes(y, g, folds, inner_folds)
    correct = np.zeros(len(y), dtype=bool)
    fold_accuracy, chosen, edges, unconverged = [], [], [], []
    # These fits are small: BLAS / OpenMP threads cost more in synchronisation than they save
    # (lbfgs ran 10x slower with two threads on a busy 2-core machine), so they run on one.
    with threadpool_limits(1):
        for train, test in _splitter(folds, g is not None, seed).split(X, y, g):
            features = make_features()
            X_train, X_test = features.fit_transform(X[train]), features.transform(X[test])
            inner = list(_splitter(inner_folds, g is not None, seed).split(X_train, y[train],
                                                                            None if g is None else g[train]))
            probe, grid = _fit_off_the_edges(Cs, inner, max_iter, X_train, y[train])
            correct[test] = probe.predict(X_test) == y[test]
            fold_accuracy.append(float(correct[test].mean()))
            chosen.append(float(np.ravel(probe.C_)[0]))
            edges.append(chosen[-1] in (grid[0], grid[-1]))
            unconverged.append(probe.not_converged_)
    chance = float(counts.max() / counts.sum())
    return {"accuracy": float(correct.mean()), "folds": fold_accuracy, "chosen_C": chosen, "C_at_edge": edges,
            "not_converged": unconverged,  # per outer fold: inner fits lbfgs stopped at max_iter
            "correct": correct.tolist(), "chance": chance, "above_chance": above_chance(correct, chance)}


GRID_GROWTH = 4  # times the C grid may grow by two decades on the side its choice sits on


def _fit_off_the_edges(Cs: Sequence[float], inner: list, max_iter: int, X, y):
    """The inner-CV probe, its C grid grown by two decades on a side whenever the choice sits on that
    edge and scores strictly better than its neighbour (the best C may lie beyond the grid; a tie
    is a plateau, where C no longer matters). Returns (probe, final grid)."""
    grid = sorted(float(c) for c in Cs)
    for _ in range(GRID_GROWTH):
        probe = _fit_quietly(_logistic_cv(grid, inner, max_iter), X, y)
        scores = _inner_scores(probe, len(grid))
        c = float(np.ravel(probe.C_)[0])
        if c == grid[-1] and scores[-1] > scores[-2]:
            grid = grid + [grid[-1] * 10, grid[-1] * 100]
        elif c == grid[0] and scores[0] > scores[1]:
            grid = [grid[0] / 100, grid[0] / 10] + grid
        else:
            return probe, grid
    return _fit_quietly(_logistic_cv(grid, inner, max_iter), X, y), grid


def _fit_quietly(probe, X, y):
    """Fit, with lbfgs's non-convergence at the weakest regularisation (large C on near-separable
    features, where the grid grows) counted on the probe instead of printed once per fit."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        probe.fit(X, y)
    probe.not_converged_ = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    for w in caught:  # anything else is shown as usual
        if not issubclass(w.category, ConvergenceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return probe


def _inner_scores(probe, n_cs: int) -> np.ndarray:
    """(n_cs,) mean inner-fold accuracy of each C (scikit-learn keeps scores_ as a dict per class, or,
    from 1.9 without legacy attributes, as an array)."""
    scores = probe.scores_
    if isinstance(scores, dict):
        scores = next(iter(scores.values()))
    return np.asarray(scores, dtype=float).reshape(-1, n_cs).mean(0)


def probe_accuracy(features: np.ndarray, labels: Sequence[int], groups: Sequence | None = None,
                   folds: int = 5, inner_folds: int = 3, seed: int = 0, Cs: Sequence[float] = CS) -> dict:
    """Nested-CV accuracy of a standardised logistic-regression probe on fixed features (n, d)."""
    _sklearn()
    from sklearn.preprocessing import StandardScaler

    X = np.asarray(features, dtype=np.float64)
    if X.ndim != 2 or len(X) != len(labels):
        raise ValueError(f"features must be (n, d) with n = len(labels) = {len(labels)}, got {X.shape}")
    return nested_cv(StandardScaler, X, labels, groups, folds, inner_folds, seed, Cs)


def bag_of_words_baseline(texts: Sequence[str], labels: Sequence[int], groups: Sequence | None = None,
                          folds: int = 5, inner_folds: int = 3, seed: int = 0, Cs: Sequence[float] = CS) -> dict:
    """The same nested-CV probe on TF-IDF word features (vocabulary fitted inside each training fold)."""
    _sklearn()
    from sklearn.feature_extraction.text import TfidfVectorizer

    make = lambda: TfidfVectorizer(sublinear_tf=True)  # noqa: E731
    return nested_cv(make, np.asarray(list(texts), dtype=object), labels, groups, folds, inner_folds, seed, Cs)


_BAG_OF_WORDS: dict[str, dict] = {}  # sha256 of (texts, labels, groups, folds, seed) -> result


def _bag_of_words_once(texts: list[str], labels: list[int], groups: list[str] | None, folds: int, seed: int) -> dict:
    """bag_of_words_baseline, computed once per process for the same inputs (a copy each time)."""
    key = hashlib.sha256(json.dumps([list(texts), [int(y) for y in labels], None if groups is None else
                                     [str(g) for g in groups], folds, seed]).encode()).hexdigest()
    if key not in _BAG_OF_WORDS:
        _BAG_OF_WORDS[key] = bag_of_words_baseline(texts, labels, groups, folds=folds, seed=seed)
    return copy.deepcopy(_BAG_OF_WORDS[key])


def random_init_like(model, seed: int = 0):
    """A randomly initialised model of the same class, config, device and tokenizer (the untrained floor)."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG stream untouched
        torch.manual_seed(seed)
        fresh = type(model)(model.config)
    fresh.tokenizer = getattr(model, "tokenizer", None)
    return fresh.to(model.head_weight.device).eval()


def pooled_features(model, token_lists: Sequence[Sequence[int]], pools: Sequence[str] = POOLS) -> dict[str, np.ndarray]:
    """{pool: (n, d) float32} from one encoder pass per text ("mean" and/or "last").

    Texts are encoded in chunks of EMBED_CHUNK (longest first within the set, so a chunk pads
    little) and each chunk's per-token vectors are pooled before the next one is encoded.
    """
    unknown = set(pools) - set(POOLS)
    if unknown:
        raise ValueError(f"pool {sorted(unknown)} is unknown; choose from {', '.join(POOLS)}")
    order = sorted(range(len(token_lists)), key=lambda i: len(token_lists[i]), reverse=True)
    out = {p: np.empty((len(token_lists), model.config.n_embd), dtype=np.float32) for p in pools}
    for start in range(0, len(order), EMBED_CHUNK):
        rows = order[start : start + EMBED_CHUNK]
        for i, h in zip(rows, embed(model, [token_lists[i] for i in rows], pool="tokens")):
            if "mean" in out:
                out["mean"][i] = h.mean(0)
            if "last" in out:
                out["last"][i] = h[-1]
    return out


@dataclass(frozen=True)
class ProbeTexts:
    """A labelled set as one model family sees it: its texts cut to block_size tokens."""

    dataset: str
    data: LabelledSet
    ids: list[list[int]]  # token ids, at most max_tokens each
    max_tokens: int
    truncated: int  # texts longer than max_tokens


def probe_texts(model, dataset: str, limit: int | None | str = "default", seed: int = 0) -> ProbeTexts:
    """Load `dataset` (limit "default": DEFAULT_LIMITS) and tokenise and truncate it for `model`."""
    if getattr(model, "tokenizer", None) is None:
        raise ValueError("the model has no tokenizer attached; load it with futuretoken.load(run_dir)")
    if limit == "default":
        limit = DEFAULT_LIMITS.get(dataset)
    data = load_labelled(dataset, limit=limit, seed=seed)
    block = model.config.block_size
    ids = model.tokenizer.encode_batch(data.texts)
    return ProbeTexts(dataset, data, [t[:block] for t in ids], block, sum(len(t) > block for t in ids))


def _probe_pools(model, texts: ProbeTexts, pools: Sequence[str], folds: int, seed: int) -> dict:
    features = pooled_features(model, texts.ids, pools)
    return {p: probe_accuracy(features[p], texts.data.labels, texts.data.groups, folds=folds, seed=seed)
            for p in pools}


def _pools(pool: str | Sequence[str]) -> list[str]:
    return [pool] if isinstance(pool, str) else list(pool)


def classification_experiment(model, dataset: str = "bbc", pool: str | Sequence[str] = POOLS,
                              limit: int | None | str = "default", seed: int = 0, folds: int = 5,
                              bag_of_words: bool = True) -> dict:
    """E5 on one model: probe accuracy of its pooled vectors on a labelled set (protocol: module docstring).

    pool: one pooling or several ("mean", "last"); each gets its own probe, all from one encoder pass.
    limit: texts to draw (stratified); "default" uses DEFAULT_LIMITS, None all of them.
    Returns {"dataset", "n", "documents" (distinct groups, or None), "label_names", "chance",
    "folds", "seed", "max_tokens", "truncated", "probe": {pool: nested_cv result}, "bag_of_words":
    nested_cv result or None}; JSON-serialisable.
    """
    texts = probe_texts(model, dataset, limit, seed)
    labels, groups = texts.data.labels, texts.data.groups
    result = {"dataset": dataset, "n": len(labels), "documents": None if groups is None else len(set(groups)),
              "label_names": texts.data.label_names, "chance": float(np.bincount(labels).max() / len(labels)),
              "folds": folds, "seed": seed, "max_tokens": texts.max_tokens, "truncated": texts.truncated,
              "probe": _probe_pools(model, texts, _pools(pool), folds, seed), "bag_of_words": None}
    if bag_of_words:
        seen = [model.tokenizer.decode(t) for t in texts.ids]  # exactly the text the model saw
        result["bag_of_words"] = _bag_of_words_once(seen, labels, groups, folds, seed)
    return result


# --- E5 as the suite measures it ------------------------------------------------------------------
@dataclass
class ClassificationSettings:
    datasets: tuple[str, ...] = ("brown", "bbc", "rotten_tomatoes")  # labelled sets (empty: no E5)
    limit: int | None = None  # texts per set (None: each set's default, DEFAULT_LIMITS)
    pools: tuple[str, ...] = ("mean", "last")  # poolings probed ("mean" is the claims')


def measure(model, items: None, settings: ClassificationSettings, seed: int, bag_of_words: bool = True) -> dict:
    """{dataset: classification_experiment(...)} for each of settings.datasets."""
    limit = "default" if settings.limit is None else settings.limit
    return {ds: classification_experiment(model, ds, pool=settings.pools, limit=limit, seed=seed,
                                          bag_of_words=bag_of_words) for ds in settings.datasets}


def measure_floor(model, items: None, settings: ClassificationSettings, seed: int) -> dict:
    """The random-init floor: the probes only (a bag of words does not depend on the model)."""
    return measure(model, items, settings, seed, bag_of_words=False)


def _accuracy(dataset: str, pool: str = "mean"):
    return lambda r: r[dataset]["probe"][pool]["accuracy"]


def _correct(dataset: str, pool: str = "mean"):
    return lambda r: r[dataset]["probe"][pool]["correct"]


def _above_chance(dataset: str, pool: str = "mean"):
    def condition(arm: dict, baseline: dict) -> str | None:
        for name, r in (("the arm", arm), ("the baseline", baseline)):
            if not r[dataset]["probe"][pool]["above_chance"]["passed"]:
                return f"{name}'s {dataset} probe does not beat the majority class"
        return None

    return condition


def _probe_claim(key: str, label: str, dataset: str, primary: bool) -> Claim:
    return Claim(key, label, _accuracy(dataset), margin=0.02, primary=primary, condition=_above_chance(dataset),
                 items=_correct(dataset), binary_items=True)


EXPERIMENT = Experiment(
    "E5", "classification", ClassificationSettings, measure, floor=measure_floor, enabled=lambda s: bool(s.datasets),
    claims=(_probe_claim("topic_in_domain", "E5: in-domain topic probe accuracy (Brown genres, held-out documents)",
                         "brown", primary=True),
            _probe_claim("topic_bbc", "E5: topic probe accuracy (BBC News, out of domain)", "bbc", primary=True),
            _probe_claim("sentiment", "E5: sentiment probe accuracy (Rotten Tomatoes)", "rotten_tomatoes",
                         primary=False)))
