"""The ``combined`` method: the adapted LLM's option scores and a prototype classifier's,
weighted by two numbers fitted per cell on calibration episodes.

For one query with options ``o_1..o_k``::

    logit_j = w_llm * log p_adapted(o_j) + w_proto * score_protonet(o_j) / scale
    p(o_j)  = softmax(logit)_j

``score_protonet`` is minus the squared distance of the query's encoder features to the
option's support prototype (:func:`ecgqa.bench.methods.protonet`); an option the support
set does not show has no prototype and is ruled out, as the prototype classifier rules it
out (with answer-balanced episodes the support shows every way). The weights are a
product of experts' exponents; they are fitted (``w >= 0``, minimum negative
log-likelihood of the true option) on *calibration* episodes: the cell's shape, drawn from
classes the cell never asks (the adapter's meta-training classes) with a different
episode seed. Nothing is fitted on the episodes that are scored, so the method is honest
as the others are; the fit both combines and calibrates (a weight is a temperature).

The calibration classes are ones the adapter meta-trained on, where its LLM scores are
better than on held-out classes: the fitted ``w_llm`` can lean towards the LLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

PARTS = ("adapted", "protonet")
"""The methods whose answers the combined method weighs (run on the same episodes)."""

_TINY = 1e-300


@dataclass(frozen=True)
class Weights:
    """Fitted combination: the two exponents, the prototype scores' scale, the fit."""

    llm: float
    proto: float
    scale: float
    nll: float          # mean negative log-likelihood on the calibration queries
    episodes: int
    queries: int

    def to_dict(self) -> dict:
        return asdict(self)


def _pairs(llm: Sequence[dict], proto: Sequence[dict]):
    """(log p_llm, prototype scores, true option index) of each calibration query whose
    truth is among its options and has a prototype; both methods must list the same
    options."""
    out = []
    for a, b in zip(llm, proto, strict=True):
        check_same_options(a, b)
        truth = [list(o) for o in a["options"]]
        if a["truth"] not in truth:
            continue
        scores, t = _scores(b), truth.index(a["truth"])
        if np.isfinite(scores[t]):           # else no weights could give the truth a chance
            out.append((_log(a["probs"]), scores, t))
    return out


def _scores(proto: dict) -> np.ndarray:
    """The prototype scores of a record, -inf where an option has no prototype (None)."""
    return np.array([-np.inf if v is None else v for v in proto["scores"]], dtype=np.float64)


def check_same_options(a: dict, b: dict) -> None:
    if a["options"] != b["options"]:
        raise ValueError(f"combined: the methods scored different options for one query "
                         f"({a['options']} vs {b['options']})")


def _log(probs) -> np.ndarray:
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), _TINY, None))


def _scale(pairs) -> float:
    """Mean spread (max - min) of the finite prototype scores: O(1) after dividing by it."""
    spread = [float(f.max() - f.min()) for _, s, _ in pairs
              for f in [s[np.isfinite(s)]] if len(f) > 1]
    value = float(np.mean(spread)) if spread else 0.0
    return value if value > 0 else 1.0


def _nll(w: np.ndarray, pairs, scale: float) -> float:
    total = 0.0
    for lp, s, t in pairs:
        total -= _log_softmax(_combine(lp, s, w[0], w[1], scale))[t]
    return total / len(pairs)


def _combine(lp: np.ndarray, s: np.ndarray, w_llm: float, w_proto: float, scale: float
             ) -> np.ndarray:
    """The combined logits; options without a prototype are -inf."""
    z = np.full(len(s), -np.inf)
    has = np.isfinite(s)
    z[has] = w_llm * lp[has] + w_proto * s[has] / scale
    return z


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max()
    return z - np.log(np.exp(z).sum())


def fit(llm: Sequence[dict], proto: Sequence[dict], episodes: int) -> Weights:
    """The weights minimising the calibration queries' mean NLL (L-BFGS-B, ``w >= 0``; the
    NLL is convex in ``w``, as the logits are linear in it).

    Args:
        llm: the adapted method's query records (``options``, ``probs``, ``truth``).
        proto: the protonet's records of the same queries (``scores``).
        episodes: how many calibration episodes they come from (reported).

    Raises:
        ValueError: no calibration query has its truth among its options, or the two
            methods scored different options.
    """
    from scipy.optimize import minimize

    pairs = _pairs(llm, proto)
    if not pairs:
        raise ValueError("combined: no calibration query has its answer among its options")
    scale = _scale(pairs)
    res = minimize(_nll, np.ones(2), args=(pairs, scale), method="L-BFGS-B",
                   bounds=[(0.0, 100.0), (0.0, 100.0)])
    return Weights(float(res.x[0]), float(res.x[1]), scale, float(res.fun), episodes,
                   len(pairs))


def answer(llm: dict, proto: dict, w: Weights) -> dict:
    """The combined method's record of one query from the two methods' records."""
    check_same_options(llm, proto)
    probs = np.exp(_log_softmax(_combine(_log(llm["probs"]), _scores(proto), w.llm, w.proto,
                                         w.scale)))
    j = int(np.argmax(probs))
    pred = list(llm["options"][j])
    return {"truth": llm["truth"], "options": llm["options"], "probs": [float(p) for p in probs],
            "pred": pred, "correct": pred == list(llm["truth"]),
            "confidence": float(probs[j]), "text": None, "exact_match": None}
