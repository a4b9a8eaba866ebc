"""Linear-probe report of an encoder against a randomly initialised twin (Markdown table).

Two benchmarks, both on frozen mean-pooled features:

- synthetic: logistic regression fit on the ``train`` split of a synthetic dataset (use a
  seed the encoder was not pretrained on), macro AUROC on its ``test`` split, plus a few
  named labels;
- real: the labelled records of a folder (e.g. PhysioNet/CinC 2021 ``.hea`` + ``.mat``),
  SNOMED ``Dx`` codes present in at least ``min_count`` records, stratified 5-fold CV.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ecgqa.models.encoders.base import prepare
from ecgqa.models.encoders.checkpoint import build_encoder, load_encoder
from ecgqa.models.encoders.probe import ProbeResult, features, probe_cv, probe_split
from ecgqa.models.encoders.targets import LABELS, load_split

NAMED_LABELS = ("atrial fibrillation", "complete right bundle branch block",
                "complete left bundle branch block", "left axis deviation",
                "left ventricular hypertrophy", "qrs duration: above the normal range",
                "noise: baseline drift")


@dataclass
class RealLabels:
    """Signals of a folder of labelled records and their frequent SNOMED codes."""

    x: np.ndarray                 # (n, leads, t) mV
    mask: np.ndarray              # (n, leads) bool
    y: np.ndarray                 # (n, n_codes) 0/1
    codes: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)


def load_real(folder: str | os.PathLike, spec, min_count: int = 5) -> RealLabels:
    """Read every ``*.hea`` record of ``folder``; labels = Dx codes in >= ``min_count`` records."""
    from ecgqa.records.meta import SNOMED_NAMES
    from ecgqa.records.read import read_record

    headers = sorted(Path(folder).glob("*.hea"))
    if not headers:
        raise ValueError(f"{folder}: no .hea records")
    recs = [read_record(h) for h in headers]
    pairs = [prepare(r, spec) for r in recs]
    counts: dict[str, int] = {}
    for r in recs:
        for c in set(r.meta.dx_codes):
            counts[c] = counts.get(c, 0) + 1
    codes = sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: -counts[c])
    y = np.array([[float(c in r.meta.dx_codes) for c in codes] for r in recs])
    names = [SNOMED_NAMES.get(c, (f"SNOMED {c}",))[0] for c in codes]
    return RealLabels(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]), y,
                      codes, names)


def random_twin(encoder: nn.Module, seed: int = 0) -> nn.Module:
    """The same architecture and input spec, randomly initialised (the probe baseline)."""
    torch.manual_seed(seed)
    twin = build_encoder(encoder.encoder_name, input_spec=encoder.input_spec, **encoder.config)
    return twin.eval()


def synthetic_probe(encoder: nn.Module, data_dir, max_records: int = 0) -> ProbeResult:
    """Fit on the train split of ``data_dir``, AUROC on its test split."""
    spec = encoder.input_spec
    train = load_split(data_dir, "train", spec, max_records)
    test = load_split(data_dir, "test", spec, max_records)
    f_tr = features(encoder, train.x, train.mask)
    f_te = features(encoder, test.x, test.mask)
    return probe_split(f_tr, train.y, f_te, test.y, train.known, test.known)


def real_probe(encoder: nn.Module, real: RealLabels, folds: int = 5) -> ProbeResult:
    """Stratified ``folds``-fold CV logistic regression on the real records."""
    return probe_cv(features(encoder, real.x, real.mask), real.y, folds)


def probe_table(source: str = "default", synth_dir=None, real_dir=None,
                baseline: bool = True, max_records: int = 0) -> str:
    """Markdown table: linear-probe AUROC of the encoder (and of a random twin).

    Args:
        source: anything :func:`load_encoder` takes (``"default"``, a folder, ...).
        synth_dir: synthetic dataset (``ecgqa data synth``) or None to skip.
        real_dir: folder of labelled ``.hea`` records or None to skip.
        baseline: add a column for the randomly initialised twin.
        max_records: cap on ECGs per synthetic split (0 = all).
    """
    encoder = load_encoder(source)
    columns = {f"encoder `{source}`": encoder}
    if baseline:
        columns["random init (same arch)"] = random_twin(encoder)
    rows: dict[str, list[str]] = {}
    real = load_real(real_dir, encoder.input_spec) if real_dir else None
    for enc in columns.values():
        if synth_dir:
            res = synthetic_probe(enc, synth_dir, max_records)
            _add(rows, f"synthetic: macro AUROC ({res.n_labels} labels)", res.macro_auroc)
            for name in NAMED_LABELS:
                _add(rows, f"synthetic: {name}", res.per_label.get(LABELS.index(name)))
        if real is not None:
            res = real_probe(enc, real)
            _add(rows, f"real ({len(real.y)} records): macro AUROC ({res.n_labels} Dx codes, "
                 "5-fold CV)", res.macro_auroc)
            for j, name in enumerate(real.names):
                _add(rows, f"real: {name} ({int(real.y[:, j].sum())} pos)", res.per_label.get(j))
    head = "| probe | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns) + "\n"
    return head + "".join(f"| {k} | " + " | ".join(v) + " |\n" for k, v in rows.items())


def _add(rows: dict[str, list[str]], key: str, value: float | None) -> None:
    rows.setdefault(key, []).append("n/a" if value is None or np.isnan(value) else f"{value:.3f}")
