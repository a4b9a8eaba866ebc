"""Attribute targets of synthetic ECGs and their signals, for pretraining and probing.

The target list (:data:`LABELS`, 49 binary labels) is built from ``facts.jsonl``:

- every SCP code string of the synthesiser (``SCP_CODES``, 21: rhythms, conduction,
  hypertrophy, QT, ST/T, premature complexes, PR),
- ``noise: <type>`` for each noise type (4),
- each extra-systole type (2),
- the 4 heart-axis classes,
- ``<feature>: <range class>`` for each numeric feature (6) and each of its 3 range
  classes (below / within / above the normal range): 18.

A numeric feature a record does not define (P duration and PR interval in atrial
fibrillation or flutter) is *unknown* for its three labels (``known`` False), not negative.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgqa.models.encoders.base import InputSpec
from ecgqa.records.read import read_record
from ecgqa.synth.ecg import (
    AXIS_CLASSES,
    EXTRA_SYSTOLES,
    NOISE_TYPES,
    NUMERIC_CLASSES,
    NUMERIC_FEATURES,
    SCP_CODES,
)

LABELS: tuple[str, ...] = (
    SCP_CODES
    + tuple(f"noise: {n}" for n in NOISE_TYPES)
    + EXTRA_SYSTOLES
    + AXIS_CLASSES
    + tuple(f"{f}: {c}" for f in NUMERIC_FEATURES for c in NUMERIC_CLASSES)
)
_INDEX = {name: i for i, name in enumerate(LABELS)}


def targets_from_facts(row: dict) -> tuple[np.ndarray, np.ndarray]:
    """One ``facts.jsonl`` row -> ``(y, known)``, float32 and bool ``(len(LABELS),)``."""
    y = np.zeros(len(LABELS), dtype=np.float32)
    known = np.ones(len(LABELS), dtype=bool)
    names = list(row.get("scp_codes", [])) + [f"noise: {n}" for n in row.get("noise", {})]
    names += [row["extra_systole"]] if row.get("extra_systole") else []
    names += [row["heart_axis"]] if row.get("heart_axis") else []
    classes = row.get("numeric_class", {})
    for feature in NUMERIC_FEATURES:
        if feature in classes:
            names.append(f"{feature}: {classes[feature]}")
        else:
            for c in NUMERIC_CLASSES:
                known[_INDEX[f"{feature}: {c}"]] = False
    for name in names:
        if name in _INDEX:
            y[_INDEX[name]] = 1.0
    return y, known


@dataclass
class LabelledSignals:
    """Signals of one split with their targets.

    Attributes:
        x: float32 ``(n, leads, t)`` in mV.
        mask: bool ``(n, leads)`` lead mask.
        y: float32 ``(n, len(LABELS))`` 0/1 targets.
        known: bool ``(n, len(LABELS))``, False where a target is undefined.
        ecg_ids: ``(n,)`` int.
        patient_ids: ``(n,)`` int.
    """

    x: np.ndarray
    mask: np.ndarray
    y: np.ndarray
    known: np.ndarray
    ecg_ids: np.ndarray
    patient_ids: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, idx: np.ndarray) -> LabelledSignals:
        return LabelledSignals(self.x[idx], self.mask[idx], self.y[idx], self.known[idx],
                               self.ecg_ids[idx], self.patient_ids[idx])


def read_facts(data_dir: str | os.PathLike) -> list[dict]:
    """Rows of ``DATA/facts.jsonl`` (written by ``ecgqa data synth``)."""
    path = Path(data_dir) / "facts.jsonl"
    if not path.is_file():
        raise ValueError(f"{path} not found: give a folder written by `ecgqa data synth`")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_split(data_dir: str | os.PathLike, split: str, spec: InputSpec | None = None,
               max_records: int = 0, progress: bool = False) -> LabelledSignals:
    """Read every ECG of ``split`` of a synthetic dataset into memory.

    Args:
        data_dir: folder with ``facts.jsonl`` and ``records_index.csv``.
        split: ``"train"``, ``"valid"`` or ``"test"``.
        spec: signals are brought to this input spec (default 12 leads, 500 Hz, 10 s).
        max_records: keep only the first this many (0 = all).
        progress: show a tqdm bar.

    Returns:
        LabelledSignals, signals float32 ``(n, leads, t)``.
    """
    from tqdm import tqdm

    from ecgqa.qa.resolve import RecordsIndex

    spec = spec or InputSpec()
    rows = [r for r in read_facts(data_dir) if r.get("split") == split]
    if max_records > 0:
        rows = rows[:max_records]
    if not rows:
        raise ValueError(f"{data_dir}: no ECGs in split {split!r}")
    index = RecordsIndex(Path(data_dir) / "records_index.csv")
    x = np.zeros((len(rows), spec.n_leads, spec.n_samples), dtype=np.float32)   # (n, leads, t)
    mask = np.zeros((len(rows), spec.n_leads), dtype=bool)
    for i, row in enumerate(tqdm(rows, desc=f"reading {split}", unit="ecg", disable=not progress,
                                 leave=False)):
        rec = read_record(index.require(row["ecg_id"], str(data_dir)), fs=spec.fs,
                          duration_s=spec.duration_s, leads=spec.leads)
        x[i], mask[i] = rec.signal, rec.lead_mask
        x[i][~mask[i]] = 0.0
    ys, ks = zip(*(targets_from_facts(r) for r in rows))
    return LabelledSignals(x, mask, np.stack(ys), np.stack(ks),
                           np.array([r["ecg_id"] for r in rows]),
                           np.array([r.get("patient_id", -1) for r in rows]))
