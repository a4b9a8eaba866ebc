"""Per-record label tables: a PTB-XL-style CSV or a folder of Challenge ``# Dx:`` headers.

A label table names each record, its patient, optionally its stratified fold, and its codes
by group. Two sources are read:

- a CSV with columns ``ecg_id, path`` and any of ``patient_id``, ``strat_fold`` and the
  code groups ``super_class, sub_class, diagnostic, form, rhythm`` (``;``- or
  ``,``-separated PTB-XL SCP codes, as in ``../shared/data/ptbxl-zscore-250hz/labels.csv``);
  ``path`` is the record without extension, relative to the CSV or absolute;
- a folder of PhysioNet/CinC Challenge records whose headers carry ``# Dx:`` SNOMED-CT
  codes, mapped to SCP statements by :data:`ecgqa.qa.codes.SNOMED_TO_SCP`. Challenge headers
  name no patient, so each record is its own patient.

Splits (:func:`assign_splits`) keep every patient in one split: by ``strat_fold`` when the
table has one (PTB-XL's folds are patient-disjoint: 1-8 train, 9 valid, 10 test by
default), else by a hash of the patient id.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ecgqa.qa import codes
from ecgqa.qa.ecgqa import MAX_ID, EcgQaError, clean, is_dir, read_csv_rows, show, user_path

CODE_GROUPS: tuple[str, ...] = ("super_class", "sub_class", "diagnostic", "form", "rhythm")
_SPLIT_CODES = re.compile(r"[;,]")


@dataclass(frozen=True)
class LabelledRecord:
    """One record of a label table.

    Attributes:
        ecg_id: integer id (PTB-XL ``ecg_id``, or a running number for Challenge folders).
        path: record path without extension.
        patient_id: patient key (a string; records of one patient share it).
        fold: stratified fold or None.
        codes: group -> canonical codes of that group present in the record. A group
            absent from the source is absent from the dict (nothing is known about it),
            whereas an empty tuple means "none of this group".
        name: the record's name (Challenge record name, or the path's stem).
        unsure: answer strings the record may have although no code says so (a
            Challenge "bundle branch block" may be a complete one): never negatives.
        partial: True when the record has a code of unknown meaning; then no negative
            and no query (whose full answer is unknown) is asked of it.
    """

    ecg_id: int
    path: Path
    patient_id: str
    fold: int | None = None
    codes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    name: str = ""
    unsure: frozenset[str] = frozenset()
    partial: bool = False


@dataclass(frozen=True)
class LabelTable:
    """Records plus what was read: the source, the groups known and the unknown codes."""

    source: str
    records: tuple[LabelledRecord, ...]
    groups: tuple[str, ...]
    unknown: dict[str, int] = field(default_factory=dict)   # "group:code" -> count


def read_label_table(location: str | os.PathLike) -> LabelTable:
    """Read a label CSV or a folder of Challenge headers (see the module docstring).

    Raises:
        EcgQaError: one line naming the file and the row.
    """
    p = user_path(location)
    if is_dir(p):
        return read_challenge_folder(p)
    return read_label_csv(p)


def read_label_csv(path: str | os.PathLike) -> LabelTable:
    """Read a PTB-XL-style label CSV."""
    path = user_path(path)
    header, *body = read_csv_rows(path, "label table") or [[]]
    header = [h.strip() for h in header]
    missing = [c for c in ("ecg_id", "path") if c not in header]
    if missing:
        raise EcgQaError(f"{clean(path)}: label table needs columns ecg_id and path "
                         f"(missing {', '.join(missing)}); got {show(','.join(header))}")
    groups = tuple(g for g in CODE_GROUPS if g in header)
    if not groups:
        raise EcgQaError(f"{clean(path)}: no code column; expected one of "
                         f"{', '.join(CODE_GROUPS)}")
    base = path.parent
    records, seen, unknown = [], set(), {}
    for n, values in enumerate(body, start=2):
        if not values or not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            raise EcgQaError(f"{clean(path)}: line {n}: {len(values)} values for "
                             f"{len(header)} columns")
        row = dict(zip(header, (v.strip() for v in values)))
        where = f"{clean(path)}: line {n}"
        ecg_id = _int(row["ecg_id"], where, "ecg_id")
        if ecg_id in seen:
            raise EcgQaError(f"{where}: ecg_id {ecg_id} appears twice")
        seen.add(ecg_id)
        if not row["path"]:
            raise EcgQaError(f"{where}: empty path")
        rec_path = Path(row["path"])
        rec_path = rec_path if rec_path.is_absolute() else base / rec_path
        rec_path = rec_path.with_suffix("") if rec_path.suffix in (".hea", ".dat") else rec_path
        fold = _int(row["strat_fold"], where, "strat_fold") if row.get("strat_fold") else None
        before = sum(unknown.values())
        found = {g: _codes(g, row[g], unknown) for g in groups}
        records.append(LabelledRecord(
            ecg_id=ecg_id, path=rec_path, patient_id=row.get("patient_id") or f"ecg{ecg_id}",
            fold=fold, codes=found, name=rec_path.name,
            partial=sum(unknown.values()) > before))
    if not records:
        raise EcgQaError(f"{clean(path)}: the label table has no records")
    return LabelTable(source=str(path), records=tuple(records), groups=groups,
                      unknown=unknown)


def _int(text: str, where: str, key: str) -> int:
    try:
        value = int(float(text)) if re.fullmatch(r"\d+(\.0+)?", text) else int(text)
    except ValueError:
        raise EcgQaError(f"{where}: {key} {show(text)} is not a whole number") from None
    if not 0 <= value <= MAX_ID:
        raise EcgQaError(f"{where}: {key} {value} is out of range")
    return value


def _codes(group: str, text: str, unknown: dict[str, int]) -> tuple[str, ...]:
    out: list[str] = []
    for raw in _SPLIT_CODES.split(text):
        if not raw.strip():
            continue
        code = codes.canonical_code(group, raw)
        if code is None:
            key = f"{group}:{raw.strip()}"
            unknown[key] = unknown.get(key, 0) + 1
        elif code not in out:
            out.append(code)
    return tuple(out)


def read_challenge_folder(folder: str | os.PathLike) -> LabelTable:
    """Records under ``folder`` (recursively) whose headers carry ``# Dx:`` SNOMED codes.

    Each record becomes its own patient with groups ``diagnostic``, ``form`` and
    ``rhythm``; ecg_ids are 1..n in sorted path order.
    """
    from ecgqa.records.meta import parse_comments

    root = user_path(folder)
    records, unknown = [], {}
    for header in sorted(root.rglob("*.hea")):
        try:
            text = header.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        comments = [line for line in text.splitlines() if line.lstrip().startswith("#")]
        dx = parse_comments(comments).dx_codes
        if not dx:
            continue
        grouped: dict[str, list[str]] = {"diagnostic": [], "form": [], "rhythm": []}
        unsure: set[str] = set()
        partial = False
        for code in dx:
            hit = codes.SNOMED_TO_SCP.get(code)
            if hit is not None:
                if hit[1] not in grouped[hit[0]]:
                    grouped[hit[0]].append(hit[1])
                continue
            key = f"snomed:{code}"
            unknown[key] = unknown.get(key, 0) + 1
            if code in codes.SNOMED_OVERLAPS:
                unsure |= {a for c in codes.SNOMED_OVERLAPS[code] if (a := codes.scp_answer(c))}
            else:
                partial = True
        path = header.with_suffix("")
        records.append(LabelledRecord(
            ecg_id=len(records) + 1, path=path, patient_id=path.name, fold=None,
            codes={g: tuple(v) for g, v in grouped.items()}, name=path.name,
            unsure=frozenset(unsure), partial=partial))
    if not records:
        raise EcgQaError(f"{clean(root)}: no record header with a '# Dx:' line under this folder")
    return LabelTable(source=str(root), records=tuple(records),
                      groups=("diagnostic", "form", "rhythm"), unknown=unknown)


# --------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class SplitRule:
    """How records go to train / valid / test.

    Attributes:
        valid_folds, test_folds: ``strat_fold`` values of the valid and test splits (the
            rest is train) when the table has folds.
        fractions: (valid, test) shares of patients when it has none (by patient-id hash).
    """

    valid_folds: tuple[int, ...] = (9,)
    test_folds: tuple[int, ...] = (10,)
    fractions: tuple[float, float] = (0.1, 0.1)


def assign_splits(records: Sequence[LabelledRecord], rule: SplitRule | None = None
                  ) -> dict[int, str]:
    """ecg_id -> split, never one patient in two splits.

    With folds, a patient goes where the fold of their first record (by ecg_id) puts them;
    without, a patient's split comes from a hash of their id (stable across runs and
    table orderings).
    """
    rule = rule or SplitRule()
    by_patient: dict[str, list[LabelledRecord]] = {}
    for r in sorted(records, key=lambda r: r.ecg_id):
        by_patient.setdefault(r.patient_id, []).append(r)
    use_folds = all(r.fold is not None for r in records)
    out: dict[int, str] = {}
    for patient, recs in by_patient.items():
        split = (_fold_split(recs[0].fold, rule) if use_folds
                 else _hash_split(patient, rule.fractions))
        for r in recs:
            out[r.ecg_id] = split
    return out


def split_records(records: Sequence[LabelledRecord], rule: SplitRule | None = None
                  ) -> dict[str, list[LabelledRecord]]:
    """The records of each split (``train``, ``valid``, ``test``; :func:`assign_splits`),
    in the order of ``records``."""
    split_of = assign_splits(records, rule)
    out: dict[str, list[LabelledRecord]] = {"train": [], "valid": [], "test": []}
    for r in records:
        out[split_of[r.ecg_id]].append(r)
    return out


def _fold_split(fold: int, rule: SplitRule) -> str:
    if fold in rule.test_folds:
        return "test"
    return "valid" if fold in rule.valid_folds else "train"


def _hash_split(patient: str, fractions: tuple[float, float]) -> str:
    u = int.from_bytes(hashlib.sha256(patient.encode("utf-8")).digest()[:8], "big") / 2 ** 64
    if u < fractions[1]:
        return "test"
    return "valid" if u < fractions[0] + fractions[1] else "train"


def present_answers(record: LabelledRecord, group: str) -> list[str]:
    """ECG-QA answer strings of the record's codes in ``group`` (codes without one dropped)."""
    return [a for a in (codes.answer_of(group, c) for c in record.codes.get(group, ())) if a]


def group_answers(records: Iterable[LabelledRecord], group: str) -> list[str]:
    """Every answer string of ``group`` that some record has, sorted."""
    return sorted({a for r in records for a in present_answers(r, group)})
