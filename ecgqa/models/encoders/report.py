"""Linear-probe report of encoders against a randomly initialised twin (Markdown table).

Three benchmarks, all on frozen mean-pooled features:

- label table (real PTB-XL): logistic regression per SCP code fit on the ``train`` split
  (PTB-XL folds 1-8), AUROC on the ``valid`` split (fold 9), macro AUROC per code group
  over the codes with at least ``min_train`` / ``min_valid`` positives; a record without
  any code of a group is left out of that group (not annotated for it);
- synthetic: logistic regression fit on the ``train`` split of a synthetic dataset (use a
  seed the encoder was not pretrained on), macro AUROC on its ``test`` split, plus a few
  named labels;
- real: the labelled records of a folder (e.g. PhysioNet/CinC 2021 ``.hea`` + ``.mat``),
  SNOMED ``Dx`` codes present in at least ``min_count`` records, stratified 5-fold CV;
- transfer (:func:`transfer_columns`): the label table's probe (fit on ``train``, e.g.
  PTB-XL in normalised units) scored without refit on its ``valid`` split and on the
  records of a Challenge folder (e.g. CinC 2021 in mV), over the codes of one group that
  both have (Challenge SNOMED codes mapped by ``ecgqa.qa.codes.SNOMED_TO_SCP``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ecgqa.models.encoders.base import InputSpec, prepare
from ecgqa.models.encoders.checkpoint import build_encoder, load_encoder
from ecgqa.models.encoders.probe import ProbeResult, features, probe_cv, probe_split
from ecgqa.models.encoders.targets import (
    LABELS,
    LabelledSignals,
    load_split,
    load_table_records,
    table_label_names,
)

TABLE_GROUPS = ("super_class", "rhythm", "form", "sub_class")

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


def with_spec(encoder: nn.Module, **changes) -> nn.Module:
    """The same weights behind another input spec (e.g. ``bandpass=None``), for ablations."""
    spec = InputSpec.from_dict({**encoder.input_spec.to_dict(), **changes})
    twin = build_encoder(encoder.encoder_name, input_spec=spec, **encoder.config)
    twin.load_state_dict(encoder.state_dict())
    return twin.eval()


def pipeline_variants(encoder: nn.Module) -> dict[str, nn.Module]:
    """Header -> the encoder as trained, without its band-pass, and without it with
    normalisation ``record`` (same weights, :func:`with_spec`)."""
    spec = encoder.input_spec
    return {f"as trained (band-pass {spec.bandpass}, {spec.normalisation})": encoder,
            "no band-pass": with_spec(encoder, bandpass=None),
            "no band-pass, normalisation record": with_spec(encoder, bandpass=None,
                                                            normalisation="record")}


@dataclass
class TableProbe:
    """A label table's train and valid signals for one input spec, and the probed codes."""

    train: LabelledSignals
    valid: LabelledSignals
    names: tuple[str, ...]          # "group:code" with enough positives in both parts

    def positives(self, j: int) -> tuple[int, int]:
        """Positives of column ``j`` among the known rows of (train, valid)."""
        return tuple(int(d.y[d.known[:, j], j].sum()) for d in (self.train, self.valid))


def load_table_probe(labels, spec: InputSpec, groups=TABLE_GROUPS, min_train: int = 10,
                     min_valid: int = 5) -> TableProbe:
    """Read a label table's ``train`` and ``valid`` records (:func:`split_records`).

    Args:
        labels: label CSV or Challenge folder (:func:`ecgqa.qa.labels.read_label_table`).
        spec: the encoder's input spec (leads, rate, duration).
        groups: code groups probed.
        min_train, min_valid: positives a code needs in each part to be probed.
    """
    from ecgqa.qa.labels import read_label_table, split_records

    parts = split_records(read_label_table(labels).records)
    train, valid = parts["train"], parts["valid"]
    in_valid = set(table_label_names(valid, groups, min_valid))
    names = tuple(n for n in table_label_names(train, groups, min_train) if n in in_valid)
    if not names:
        raise ValueError(f"{labels}: no code has {min_train} train and {min_valid} valid "
                         "positives")
    return TableProbe(load_table_records(train, names, spec),
                      load_table_records(valid, names, spec), names)


def table_probe(encoder: nn.Module, data: TableProbe) -> ProbeResult:
    """Logistic regression per code on train features, AUROC on the valid split."""
    f_tr = features(encoder, data.train.x, data.train.mask)
    f_va = features(encoder, data.valid.x, data.valid.mask)
    return probe_split(f_tr, data.train.y, f_va, data.valid.y, data.train.known,
                       data.valid.known)


def group_macro(res: ProbeResult, names, group: str) -> tuple[float, int]:
    """Macro AUROC over the evaluated codes of ``group``, and how many there are."""
    aucs = [a for j, a in res.per_label.items() if names[j].split(":", 1)[0] == group]
    return (float(np.mean(aucs)) if aucs else float("nan")), len(aucs)


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


def probe_table(source="default", synth_dir=None, real_dir=None, baseline: bool = True,
                max_records: int = 0, *, labels=None, compare=(), **kwargs) -> str:
    """Markdown table: linear-probe AUROC of an encoder, others, and a random twin.

    Args:
        source: anything :func:`load_encoder` takes (``"default"``, a folder, ...).
        synth_dir: synthetic dataset (``ecgqa data synth``) or None to skip.
        real_dir: folder of labelled ``.hea`` records (CinC) or None to skip.
        baseline: add a column for the randomly initialised twin of ``source``.
        max_records: cap on ECGs per synthetic split (0 = all).
        labels: label table (PTB-XL ``labels.csv``) or None to skip.
        compare: more encoders (``load_encoder`` sources) as columns after ``source``.
        **kwargs: ``per_code``, ``min_train``, ``min_valid`` of :func:`probe_columns`.
    """
    encoder = load_encoder(source)
    columns = {f"encoder `{source}`": encoder}
    columns.update({f"encoder `{c}`": load_encoder(c) for c in compare})
    if baseline:
        columns["random init (same arch)"] = random_twin(encoder)
    return probe_columns(columns, labels=labels, synth_dir=synth_dir, real_dir=real_dir,
                         max_records=max_records, **kwargs)


def probe_columns(columns: dict[str, nn.Module], *, labels=None, synth_dir=None, real_dir=None,
                  max_records: int = 0, per_code: bool = True, min_train: int = 10,
                  min_valid: int = 5) -> str:
    """Markdown table with one column per encoder (see :func:`probe_table`).

    Args:
        columns: header -> encoder.
        per_code: add a row per probed code besides the macro rows.
        min_train, min_valid: positives a label-table code needs in train and valid.
    """
    rows: dict[str, list[str]] = {}
    cache: dict = {}
    for enc in columns.values():
        spec = enc.input_spec
        if labels:
            data = _cached(cache, "table", spec, lambda s: load_table_probe(
                labels, s, min_train=min_train, min_valid=min_valid))
            _table_rows(rows, enc, data, per_code)
        if synth_dir:
            res = synthetic_probe(enc, synth_dir, max_records)
            _add(rows, f"synthetic: macro AUROC ({res.n_labels} labels)", res.macro_auroc)
            for name in NAMED_LABELS if per_code else ():
                _add(rows, f"synthetic: {name}", res.per_label.get(LABELS.index(name)))
        if real_dir:
            real = _cached(cache, "real", spec, lambda s: load_real(real_dir, s))
            res = real_probe(enc, real)
            _add(rows, f"CinC 2021 ({len(real.y)} records): macro AUROC ({res.n_labels} Dx "
                 "codes, 5-fold CV)", res.macro_auroc)
            for j, name in enumerate(real.names if per_code else ()):
                _add(rows, f"CinC: {name} ({int(real.y[:, j].sum())} pos)", res.per_label.get(j))
    return _markdown(columns, rows)


def _markdown(columns: dict, rows: dict[str, list[str]]) -> str:
    head = "| probe | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns) + "\n"
    return head + "".join(f"| {k} | " + " | ".join(v) + " |\n" for k, v in rows.items())


def _cached(cache: dict, kind: str, spec: InputSpec, make):
    key = (kind, spec.leads, spec.fs, spec.duration_s)   # the signals depend on these only
    if key not in cache:
        cache[key] = make(spec)
    return cache[key]


def _table_rows(rows: dict, enc: nn.Module, data: TableProbe, per_code: bool) -> None:
    res = table_probe(enc, data)
    n_valid = {g: int(data.valid.known[:, [j for j, n in enumerate(data.names)
                                           if n.startswith(g + ":")]].any(1).sum())
               for g in TABLE_GROUPS}
    for group in TABLE_GROUPS:
        macro, n = group_macro(res, data.names, group)
        if n:
            _add(rows, f"PTB-XL fold 9: {group} macro AUROC ({n} codes, {n_valid[group]} "
                 "records)", macro)
    for j, name in enumerate(data.names if per_code else ()):
        tr, va = data.positives(j)
        _add(rows, f"PTB-XL: {name} ({tr}/{va} pos)", res.per_label.get(j))


def _add(rows: dict[str, list[str]], key: str, value: float | None) -> None:
    rows.setdefault(key, []).append("n/a" if value is None or np.isnan(value) else f"{value:.3f}")


# --------------------------------------------------------------------------- transfer


@dataclass
class TransferProbe:
    """A label table's ``train`` and ``valid`` signals and another source's records (e.g.
    CinC 2021 in mV) for one input spec, over the codes both sources have."""

    train: LabelledSignals
    valid: LabelledSignals
    other: LabelledSignals
    names: tuple[str, ...]          # "group:code" with enough positives in train and other

    def positives(self, j: int) -> tuple[int, int, int]:
        """Positives of column ``j`` among the known rows of (train, valid, other)."""
        return tuple(int(d.y[d.known[:, j], j].sum())
                     for d in (self.train, self.valid, self.other))


def transfer_names(train, other, group: str = "rhythm", min_train: int = 10,
                   min_other: int = 3) -> tuple[str, ...]:
    """``"group:code"`` targets with >= ``min_train`` positives among the ``train`` records
    and >= ``min_other`` among the ``other`` records (both :class:`LabelledRecord` lists)."""
    shared = set(table_label_names(other, (group,), min_other))
    return tuple(n for n in table_label_names(train, (group,), min_train) if n in shared)


def load_transfer_probe(labels, other, spec: InputSpec, group: str = "rhythm",
                        min_train: int = 10, min_other: int = 3) -> TransferProbe:
    """Read a label table's ``train`` / ``valid`` records and another table's records.

    Args:
        labels: label CSV (PTB-XL ``labels.csv``, :func:`ecgqa.qa.labels.read_label_table`).
        other: a second label table, e.g. a folder of Challenge ``.hea`` records, whose
            SNOMED ``Dx`` codes ``read_label_table`` maps to SCP codes (``ecgqa.qa.codes``).
        spec: the encoder's input spec (leads, rate, duration).
        group: code group probed.
        min_train, min_other: positives a code needs in ``train`` and in ``other``.
    """
    from ecgqa.qa.labels import read_label_table, split_records

    parts = split_records(read_label_table(labels).records)
    train, valid = parts["train"], parts["valid"]
    records = list(read_label_table(other).records)
    names = transfer_names(train, records, group, min_train, min_other)
    if not names:
        raise ValueError(f"{labels} / {other}: no {group} code has {min_train} train and "
                         f"{min_other} positives in the other records")
    return TransferProbe(*(load_table_records(r, names, spec) for r in (train, valid, records)),
                         names)


def transfer_probe(encoder: nn.Module, data: TransferProbe) -> tuple[ProbeResult, ProbeResult]:
    """Logistic regression per code on train features; AUROC on valid and on the other
    records, with no refit (lbfgs is deterministic: both use the same fitted probe)."""
    f_tr = features(encoder, data.train.x, data.train.mask)
    return tuple(probe_split(f_tr, data.train.y, features(encoder, d.x, d.mask), d.y,
                             data.train.known, d.known) for d in (data.valid, data.other))


def transfer_columns(columns: dict[str, nn.Module], *, labels, other, group: str = "rhythm",
                     min_train: int = 10, min_other: int = 3, per_code: bool = True) -> str:
    """Markdown table: a label table's probe on its valid split and on other records.

    Args:
        columns: header -> encoder.
        labels, other, group, min_train, min_other: as :func:`load_transfer_probe`.
        per_code: add a row per probed code besides the macro rows.
    """
    rows: dict[str, list[str]] = {}
    cache: dict = {}
    for enc in columns.values():
        data = _cached(cache, "transfer", enc.input_spec, lambda s: load_transfer_probe(
            labels, other, s, group, min_train, min_other))
        _transfer_rows(rows, enc, data, group, per_code)
    return _markdown(columns, rows)


def _transfer_rows(rows: dict, enc: nn.Module, data: TransferProbe, group: str,
                   per_code: bool) -> None:
    valid, other = transfer_probe(enc, data)
    n_valid, n_other = (int(d.known.any(1).sum()) for d in (data.valid, data.other))
    _add(rows, f"PTB-XL fold 9: {group} macro AUROC ({valid.n_labels} codes, {n_valid} "
         "records)", valid.macro_auroc)
    for j, name in enumerate(data.names if per_code else ()):
        tr, va, _ = data.positives(j)
        _add(rows, f"PTB-XL: {name} ({tr}/{va} pos)", valid.per_label.get(j))
    _add(rows, f"CinC 2021: {group} macro AUROC ({other.n_labels} codes, {n_other} records)",
         other.macro_auroc)
    for j, name in enumerate(data.names if per_code else ()):
        _add(rows, f"CinC: {_snomed_label(name)} ({data.positives(j)[2]} pos)",
             other.per_label.get(j))


def _snomed_label(name: str) -> str:
    """``"rhythm:SR"`` -> ``"SR = SNOMED 426783006 NSR"`` (codes.SNOMED_TO_SCP, reversed)."""
    from ecgqa.qa.codes import SNOMED_TO_SCP
    from ecgqa.records.meta import SNOMED_NAMES

    group, code = name.split(":", 1)
    snomed = [s for s, hit in SNOMED_TO_SCP.items() if hit == (group, code)]
    return f"{code} = " + ", ".join(f"SNOMED {s} {SNOMED_NAMES.get(s, ('',))[0]}".rstrip()
                                    for s in snomed)
