"""Targets of ECGs and their signals, for pretraining and probing.

Two sources:

- a synthetic dataset (``ecgqa data synth``): :data:`LABELS`, below;
- a label table (:func:`ecgqa.qa.labels.read_label_table`, e.g. the real PTB-XL records'
  ``labels.csv``): one target ``"group:code"`` per code of the chosen groups
  (``super_class``, ``sub_class``, ``form``, ``rhythm``) with enough positives among the
  training records (:func:`table_label_names`). A record without any code of a group was
  not annotated for that group (PTB-XL annotates form statements for ~40% of its records):
  its targets of that group are *unknown*, not negative, as in the PTB-XL benchmark
  (Strodthoff et al. 2021), which leaves such records out of a group's task.

The synthetic target list (:data:`LABELS`, 49 binary labels) is built from ``facts.jsonl``:

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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgqa.models.encoders.base import InputSpec
from ecgqa.qa.labels import LabelledRecord
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
        x: float32 ``(n, leads, t)`` in the records' units (mV, or NU).
        mask: bool ``(n, leads)`` lead mask.
        y: float32 ``(n, n_labels)`` 0/1 targets.
        known: bool ``(n, n_labels)``, False where a target is undefined.
        ecg_ids: ``(n,)`` int.
        patient_ids: ``(n,)`` patient keys (int or str).
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


def read_signals(paths, spec: InputSpec, progress: bool = False, desc: str = "reading"
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Records brought to ``spec`` (leads, rate, duration) in memory: float32
    ``(n, leads, t)`` in the records' units, missing leads zero, and the bool lead mask
    ``(n, leads)``."""
    from tqdm import tqdm

    x = np.zeros((len(paths), spec.n_leads, spec.n_samples), dtype=np.float32)  # (n, leads, t)
    mask = np.zeros((len(paths), spec.n_leads), dtype=bool)
    for i, path in enumerate(tqdm(paths, desc=desc, unit="ecg", disable=not progress,
                                  leave=False)):
        rec = read_record(path, fs=spec.fs, duration_s=spec.duration_s, leads=spec.leads)
        x[i], mask[i] = rec.signal, rec.lead_mask
        x[i][~mask[i]] = 0.0
    return x, mask


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
    from ecgqa.qa.resolve import RecordsIndex

    spec = spec or InputSpec()
    rows = [r for r in read_facts(data_dir) if r.get("split") == split]
    if max_records > 0:
        rows = rows[:max_records]
    if not rows:
        raise ValueError(f"{data_dir}: no ECGs in split {split!r}")
    index = RecordsIndex(Path(data_dir) / "records_index.csv")
    x, mask = read_signals([index.require(r["ecg_id"], str(data_dir)) for r in rows], spec,
                           progress, f"reading {split}")
    ys, ks = zip(*(targets_from_facts(r) for r in rows))
    return LabelledSignals(x, mask, np.stack(ys), np.stack(ks),
                           np.array([r["ecg_id"] for r in rows]),
                           np.array([r.get("patient_id", -1) for r in rows]))


def concat(parts: Sequence[LabelledSignals]) -> LabelledSignals:
    """Rows of several LabelledSignals with the same label columns, in order."""
    return LabelledSignals(*(np.concatenate([getattr(p, k) for p in parts])
                             for k in ("x", "mask", "y", "known", "ecg_ids", "patient_ids")))


def side_by_side(a: LabelledSignals, b: LabelledSignals) -> LabelledSignals:
    """The rows of ``a`` then ``b`` over the label columns of ``a`` then those of ``b``; each
    part's targets of the other part's columns are unknown."""
    def widen(d: LabelledSignals, before: int, after: int) -> LabelledSignals:
        n = len(d)
        y = np.zeros((n, before + d.y.shape[1] + after), dtype=np.float32)
        known = np.zeros(y.shape, dtype=bool)
        y[:, before:before + d.y.shape[1]] = d.y
        known[:, before:before + d.y.shape[1]] = d.known
        return LabelledSignals(d.x, d.mask, y, known, d.ecg_ids, d.patient_ids.astype(str))

    return concat([widen(a, 0, b.y.shape[1]), widen(b, a.y.shape[1], 0)])


# --------------------------------------------------------------------------- label tables


def table_label_names(records: Sequence[LabelledRecord], groups: Sequence[str],
                      min_positives: int) -> tuple[str, ...]:
    """``"group:code"`` targets with at least ``min_positives`` positives in ``records``.

    Args:
        records: the training records of a label table.
        groups: code groups to use, in this order (a group the table lacks gives none).
        min_positives: fewer positives than this and a code is left out.

    Returns:
        Names sorted by group (in ``groups`` order), then by descending count, then code.
    """
    names = []
    for group in groups:
        counts: dict[str, int] = {}
        for r in records:
            for code in r.codes.get(group, ()):
                counts[code] = counts.get(code, 0) + 1
        names += [f"{group}:{c}" for c in sorted(counts, key=lambda c: (-counts[c], c))
                  if counts[c] >= min_positives]
    return tuple(names)


def table_targets(record: LabelledRecord, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(y, known)`` float32 / bool ``(len(names),)`` of one record: a ``"group:code"``
    target is known when the record has some code of that group."""
    y = np.zeros(len(names), dtype=np.float32)
    known = np.zeros(len(names), dtype=bool)
    for j, name in enumerate(names):
        group, code = name.split(":", 1)
        present = record.codes.get(group, ())
        known[j] = bool(present)
        y[j] = float(code in present)
    return y, known


def load_table_records(records: Sequence[LabelledRecord], names: Sequence[str],
                       spec: InputSpec | None = None, progress: bool = False,
                       desc: str = "reading") -> LabelledSignals:
    """Read the signals of label-table records into memory with their targets.

    Args:
        records: from :func:`ecgqa.qa.labels.read_label_table` (e.g. one split).
        names: ``"group:code"`` targets (:func:`table_label_names`).
        spec: signals are brought to this input spec (leads, rate, duration).
        progress: show a tqdm bar.
        desc: label of the bar.

    Returns:
        LabelledSignals, signals float32 ``(n, leads, t)`` in the records' units.
    """
    if not records:
        raise ValueError("no records to read")
    x, mask = read_signals([r.path for r in records], spec or InputSpec(), progress, desc)
    ys, ks = zip(*(table_targets(r, names) for r in records))
    return LabelledSignals(x, mask, np.stack(ys), np.stack(ks),
                           np.array([r.ecg_id for r in records]),
                           np.array([r.patient_id for r in records], dtype=str))


# --------------------------------------------------------------------------- beat targets

# Ordinal thresholds of the beat targets: heart rate (bpm), the RR intervals' coefficient
# of variation and their RMS successive difference relative to the mean RR. Sinus rhythm
# has an RR CV of ~0.02, sinus arrhythmia ~0.1, atrial fibrillation ~0.2 (PTB-XL records).
RATE_BPM = (50, 60, 70, 80, 90, 100, 120)
RR_CV = (0.03, 0.05, 0.08, 0.12, 0.2)
RR_RMSSD = (0.03, 0.06, 0.1, 0.2)
BEAT_LABELS: tuple[str, ...] = (
    tuple(f"beats:rate>={v}" for v in RATE_BPM)
    + tuple(f"beats:rr_cv>={v}" for v in RR_CV)
    + tuple(f"beats:rr_rmssd>={v}" for v in RR_RMSSD))
MIN_TARGET_BEATS = 4


def beat_targets(x: np.ndarray, mask: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """``(y, known)`` of :data:`BEAT_LABELS` from the R peaks the signal itself shows.

    Self-supervised targets (no annotation): rate and beat-to-beat irregularity, as ordinal
    binary labels, so that mean-pooled features learn to carry them linearly (what a
    linear probe of rhythm codes needs). Unknown when fewer than
    :data:`MIN_TARGET_BEATS` beats are found.

    Args:
        x: ``(leads, t)`` one ECG (mV or NU; the detector is scale-free).
        mask: ``(leads,)`` present leads.
        fs: sampling rate in Hz.
    """
    from ecgqa.records.measure import detect_beats

    y = np.zeros(len(BEAT_LABELS), dtype=np.float32)
    peaks = detect_beats(x[mask], fs).peaks if mask.any() else np.zeros(0)
    if len(peaks) < MIN_TARGET_BEATS:
        return y, np.zeros(len(BEAT_LABELS), dtype=bool)
    rr = np.diff(peaks) / fs                                              # (beats - 1,) s
    values = ([60.0 / float(np.median(rr))] * len(RATE_BPM)
              + [float(rr.std() / rr.mean())] * len(RR_CV)
              + [float(np.sqrt(np.mean(np.diff(rr) ** 2)) / rr.mean())] * len(RR_RMSSD))
    y[:] = np.array(values) >= np.array(RATE_BPM + RR_CV + RR_RMSSD)
    return y, np.ones(len(BEAT_LABELS), dtype=bool)


def with_beat_targets(data: LabelledSignals, fs: float, progress: bool = False
                      ) -> LabelledSignals:
    """``data`` with the :data:`BEAT_LABELS` columns appended to its targets."""
    from tqdm import tqdm

    pairs = [beat_targets(x, m, fs) for x, m in tqdm(zip(data.x, data.mask), total=len(data),
                                                     desc="beats", unit="ecg", leave=False,
                                                     disable=not progress)]
    ys, ks = zip(*pairs)
    return LabelledSignals(data.x, data.mask, np.concatenate([data.y, np.stack(ys)], 1),
                           np.concatenate([data.known, np.stack(ks)], 1), data.ecg_ids,
                           data.patient_ids)
