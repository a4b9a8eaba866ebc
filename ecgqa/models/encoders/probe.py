"""Linear probes of a frozen encoder: mean-pooled tokens -> one logistic regression per label.

Reported metric: macro AUROC over the labels that have both classes in the training and
the test part (the others are skipped, and counted in ``n_labels``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class ProbeResult:
    """Macro AUROC of a probe and the AUROC of each evaluated label (by column index)."""

    macro_auroc: float
    per_label: dict[int, float]

    @property
    def n_labels(self) -> int:
        return len(self.per_label)


@torch.no_grad()
def features(encoder: nn.Module, x: np.ndarray | torch.Tensor,
             lead_mask: np.ndarray | torch.Tensor | None = None,
             batch_size: int = 64) -> np.ndarray:
    """Mean-pooled tokens of a frozen encoder (run in ``eval()`` mode).

    Args:
        encoder: any registered encoder.
        x: ``(n, leads, t)`` signals in mV.
        lead_mask: ``(n, leads)`` bool or None.
        batch_size: ECGs per forward pass.

    Returns:
        float64 ``(n, out_dim)``.
    """
    was_training = encoder.training
    encoder.eval()
    x = torch.as_tensor(x)
    mask = None if lead_mask is None else torch.as_tensor(lead_mask)
    out = []
    for s in range(0, x.shape[0], batch_size):
        m = None if mask is None else mask[s:s + batch_size]
        out.append(encoder(x[s:s + batch_size], m).mean(dim=1))        # (b, d)
    encoder.train(was_training)
    return torch.cat(out).double().numpy()


def macro_auroc(y: np.ndarray, scores: np.ndarray,
                known: np.ndarray | None = None) -> tuple[float, dict[int, float]]:
    """Macro AUROC over the columns of ``(n, L)`` targets that have both classes.

    Returns:
        ``(macro, {column: auroc})``; macro is NaN when no column qualifies.
    """
    from sklearn.metrics import roc_auc_score

    per = {}
    for j in range(y.shape[1]):
        rows = np.ones(len(y), bool) if known is None else known[:, j].astype(bool)
        yj = y[rows, j]
        if yj.size and 0 < yj.sum() < yj.size:
            per[j] = float(roc_auc_score(yj, scores[rows, j]))
    return (float(np.mean(list(per.values()))) if per else float("nan")), per


def _logreg(c: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))


def probe_split(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray,
                y_test: np.ndarray, known_train: np.ndarray | None = None,
                known_test: np.ndarray | None = None, c: float = 1.0) -> ProbeResult:
    """One-vs-rest logistic regression on train features, AUROC on test features.

    Args:
        f_train, f_test: ``(n, d)`` features; y_train, y_test: ``(n, L)`` 0/1 targets.
        known_train, known_test: ``(n, L)`` bool, False where a target is undefined.
        c: inverse L2 regularisation strength.
    """
    scores = np.zeros(y_test.shape, dtype=np.float64)
    evaluated = np.zeros(y_test.shape[1], dtype=bool)
    for j in range(y_train.shape[1]):
        tr = np.ones(len(y_train), bool) if known_train is None else known_train[:, j]
        yj = y_train[tr, j]
        if yj.size == 0 or yj.min() == yj.max():
            continue
        scores[:, j] = _logreg(c).fit(f_train[tr], yj).decision_function(f_test)
        evaluated[j] = True
    known = np.ones(y_test.shape, bool) if known_test is None else known_test.astype(bool)
    macro, per = macro_auroc(y_test, scores, known & evaluated[None, :])
    return ProbeResult(macro, per)


def probe_cv(f: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0,
             c: float = 1.0) -> ProbeResult:
    """Stratified k-fold logistic regression per label; AUROC of the pooled out-of-fold scores.

    A label needs at least ``folds`` positives and ``folds`` negatives to be evaluated.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    per = {}
    for j in range(y.shape[1]):
        yj = y[:, j].astype(int)
        if min(yj.sum(), len(yj) - yj.sum()) < folds:
            continue
        cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
        s = cross_val_predict(_logreg(c), f, yj, cv=cv, method="decision_function")
        per[j] = macro_auroc(yj[:, None], s[:, None])[0]
    return ProbeResult(float(np.mean(list(per.values()))) if per else float("nan"), per)


def linear_probe(encoder: nn.Module, x_signals: np.ndarray, y_multilabel: np.ndarray, *,
                 test: tuple | None = None, lead_mask=None,
                 known: np.ndarray | None = None, folds: int = 5, c: float = 1.0,
                 seed: int = 0) -> ProbeResult:
    """Probe a frozen encoder: features of ``x_signals``, then logistic regression per label.

    Args:
        encoder: the frozen encoder.
        x_signals: ``(n, leads, t)`` in mV; y_multilabel: ``(n, L)`` 0/1.
        test: ``(x_test, y_test)`` or ``(x_test, y_test, lead_mask_test, known_test)`` to
            train on all of ``x_signals`` and test there; None = ``folds``-fold
            cross-validation on ``x_signals``.
        lead_mask: ``(n, leads)`` lead mask of ``x_signals`` (None = all present).
        known: ``(n, L)`` bool, False where a training target is undefined (split mode).
        folds, c, seed: cross-validation folds, regularisation, fold shuffling seed.

    Example:
        >>> linear_probe(load_encoder(), X, Y).macro_auroc
    """
    f = features(encoder, x_signals, lead_mask)                      # (n, d)
    if test is None:
        return probe_cv(f, np.asarray(y_multilabel), folds, seed, c)
    x_test, y_test, mask_test, known_test = (tuple(test) + (None, None))[:4]
    f_test = features(encoder, x_test, mask_test)
    return probe_split(f, np.asarray(y_multilabel), f_test, np.asarray(y_test), known,
                       known_test, c)
