"""Benchmark metrics, each with a 95% confidence interval over episodes.

- Per-episode metrics (option accuracy, exact match, BLEU, ROUGE-L, METEOR, token accuracy)
  are averaged within an episode; the interval is the normal approximation over episodes
  (:func:`ecgqa.intervals.mean_ci`).
- Pooled metrics (macro-F1 over answer classes, expected calibration error) are computed
  over all queries of a cell; the interval is a percentile bootstrap that resamples whole
  episodes (queries of one episode share a support set, so they are not independent).

Text metrics come from established implementations that run offline: BLEU (NLTK, sentence
level, smoothing method 1), ROUGE-L (Google's ``rouge-score``), METEOR (NLTK). NLTK's METEOR
matches synonyms through WordNet, which is a separate download; without it METEOR uses exact
and stem matches only, and the results say which was used.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import numpy as np

from ecgqa.intervals import mean_ci


def macro_f1(truths: Sequence, preds: Sequence) -> float:
    """Macro-averaged F1 over the classes that occur as truth or prediction.

    Per class ``F1 = 2 TP / (2 TP + FP + FN)`` (0 without a true positive), as scikit-learn's
    ``f1_score(average="macro", zero_division=0)`` over those labels, without its input
    checks (the bootstrap calls this thousands of times).
    """
    pairs = list(zip(truths, preds, strict=True))
    labels = {*truths, *preds}
    if not labels:
        return math.nan
    total = 0.0
    for c in labels:
        tp = sum(t == c and p == c for t, p in pairs)
        wrong = sum((t == c) != (p == c) for t, p in pairs)          # FP + FN
        total += 2 * tp / (2 * tp + wrong) if tp else 0.0
    return total / len(labels)


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool],
                               bins: int = 10) -> float:
    """ECE: the bin-size-weighted mean |accuracy - confidence| over equal-width bins of the
    top option's probability."""
    conf = np.asarray(confidence, dtype=float)
    hit = np.asarray(correct, dtype=float)
    if conf.size == 0:
        return math.nan
    which = np.minimum((conf * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.sum() * abs(hit[sel].mean() - conf[sel].mean())
    return float(total / conf.size)


def reliability(confidence: Sequence[float], correct: Sequence[bool], bins: int = 10
                ) -> list[dict]:
    """Per bin: its range, count, mean confidence and accuracy (the reliability diagram)."""
    conf = np.asarray(confidence, dtype=float)
    hit = np.asarray(correct, dtype=float)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        sel = which == b
        out.append({"low": b / bins, "high": (b + 1) / bins, "count": int(sel.sum()),
                    "confidence": float(conf[sel].mean()) if sel.any() else None,
                    "accuracy": float(hit[sel].mean()) if sel.any() else None})
    return out


def bootstrap_ci(groups: Sequence[Sequence], statistic: Callable[[list], float],
                 n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """``statistic`` over all items of ``groups`` and the half-width of its 95% percentile
    bootstrap interval, resampling whole groups (episodes) with replacement."""
    flat = [x for g in groups for x in g]
    value = statistic(flat) if flat else math.nan
    if len(groups) < 2 or not flat:
        return value, math.nan
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(groups), len(groups))
        sample = [x for i in pick for x in groups[i]]
        s = statistic(sample)
        if not math.isnan(s):
            stats.append(s)
    if not stats:
        return value, math.nan
    low, high = np.percentile(stats, [2.5, 97.5])
    return value, float((high - low) / 2)


class _NoWordNet:
    """Stand-in for NLTK's WordNet when it is not downloaded: no synonyms."""

    @staticmethod
    def synsets(*_args, **_kwargs) -> list:
        return []


@functools.cache
def _wordnet():
    try:
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
        return wordnet, True
    except (LookupError, OSError):
        return _NoWordNet(), False


def text_scores(hypothesis: str, reference: str) -> dict[str, float]:
    """BLEU (0-1), ROUGE-L F1 and METEOR of one generated answer against the reference
    (computed once per distinct pair: answers repeat across a benchmark's queries)."""
    return dict(_text_scores(hypothesis, reference))


@functools.lru_cache(maxsize=65536)
def _text_scores(hypothesis: str, reference: str) -> tuple[tuple[str, float], ...]:
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from nltk.translate.meteor_score import meteor_score

    hyp, ref = hypothesis.lower().split(), reference.lower().split()
    if not hyp or not ref:
        return (("bleu", 0.0), ("rouge_l", 0.0), ("meteor", 0.0))
    order = min(4, len(ref), len(hyp))
    weights = tuple([1.0 / order] * order)
    bleu = sentence_bleu([ref], hyp, weights=weights,
                         smoothing_function=SmoothingFunction().method1)
    wordnet, _ = _wordnet()
    return (("bleu", float(bleu)),
            ("rouge_l", float(_rouge().score(reference, hypothesis)["rougeL"].fmeasure)),
            ("meteor", float(meteor_score([ref], hyp, wordnet=wordnet))))


def meteor_uses_synonyms() -> bool:
    """Whether METEOR had WordNet synonyms (False: exact and stem matches only)."""
    return _wordnet()[1]


@functools.cache
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"])


def summarise_cell(episodes: list[dict], bins: int = 10) -> dict:
    """Every metric of one method in one cell, with 95% intervals.

    Args:
        episodes: per episode ``{"queries": [query dicts], "seconds": float,
            "token_accuracy": float | None}``; a query dict has ``truth``, ``pred``,
            ``correct`` and optionally ``confidence``, ``exact_match`` and ``text``.

    Returns:
        ``{metric: {"mean": m, "ci95": half-width}}`` plus ``episodes``, ``queries``,
        ``seconds_per_episode`` and ``answers_per_second``.
    """
    out: dict = {"episodes": len(episodes), "queries": sum(len(e["queries"]) for e in episodes)}
    per_episode = {
        "option_accuracy": lambda q: float(q["correct"]),
        "exact_match": lambda q: None if q.get("exact_match") is None else float(q["exact_match"]),
        **{m: (lambda q, m=m: q.get("text_scores", {}).get(m)) for m in ("bleu", "rouge_l",
                                                                         "meteor")},
    }
    for name, get in per_episode.items():
        vals = [_mean([get(q) for q in e["queries"]]) for e in episodes]
        vals = [v for v in vals if v is not None]
        if vals:
            out[name] = _mc(mean_ci(vals))
    tok = [e["token_accuracy"] for e in episodes if e.get("token_accuracy") is not None]
    if tok:
        out["token_accuracy_side_metric"] = _mc(mean_ci(tok))
    groups = [e["queries"] for e in episodes]
    out["macro_f1"] = _mc(bootstrap_ci(groups, lambda qs: macro_f1(
        [tuple(q["truth"]) for q in qs], [tuple(q["pred"]) for q in qs])))
    if all(q.get("confidence") is not None for g in groups for q in g):
        out["ece"] = _mc(bootstrap_ci(groups, lambda qs: expected_calibration_error(
            [q["confidence"] for q in qs], [q["correct"] for q in qs], bins)))
        flat = [q for g in groups for q in g]
        out["reliability"] = reliability([q["confidence"] for q in flat],
                                         [q["correct"] for q in flat], bins)
    seconds = sum(e["seconds"] for e in episodes)
    out["seconds_per_episode"] = seconds / max(1, len(episodes))
    out["answers_per_second"] = out["queries"] / seconds if seconds > 0 else math.nan
    return out


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _mc(pair: tuple[float, float]) -> dict:
    return {"mean": pair[0], "ci95": pair[1]}
