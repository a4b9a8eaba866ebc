"""ECG-QA-schema questions from a label table (``ecgqa data labels``).

For every record, over each code group the table has (:mod:`ecgqa.qa.labels`):

- **single-verify**: one question about a code the record has (answer "yes") and one
  about a code of the same group it lacks ("no"), so the data are answer-balanced;
  negatives only come from the same group, and only from codes some record of the table
  has (a code nobody has would be a give-away "no");
- **single-choose**: two codes of the group, one of them present half the time; the
  answer is the present ones, or "none";
- **single-query**: every code of the group the record has, or "none".

With measurements (``numeric=True``), the record's own RR, PR, QRS, QT and QTc from
:func:`ecgqa.records.measure.measure` give numeric-feature questions (is the value below,
within or above ECG-QA's normal range). A value closer to a range bound than the
measurement's error (:data:`MEASUREMENT_ERROR_MS`) asks nothing: its class could be wrong.

Wording and answer strings are ECG-QA's (:data:`TEMPLATES`); every answer is in ECG-QA's
``answers.csv``. Records are never in two splits, and neither are patients.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgqa.outputs import atomic_folder
from ecgqa.qa.ecgqa import EcgQaError, clean, user_path
from ecgqa.qa.labels import (
    LabelledRecord,
    LabelTable,
    SplitRule,
    assign_splits,
    group_answers,
    present_answers,
)
from ecgqa.qa.numeric import NORMAL_RANGES, NUMERIC_CLASSES, classify
from ecgqa.qa.writer import write_shards, write_split_ecgs, write_vocab
from ecgqa.workpool import ordered_map

SV, SC, SQ = "single-verify", "single-choose", "single-query"
YES_NO = ("no", "yes")

# The measurement error of measure() (ms, mean absolute error it is held to; see
# docs/records.md): a value within this distance of a normal-range bound asks nothing.
MEASUREMENT_ERROR_MS: dict[str, float] = {
    "rr interval": 5.0, "pr interval": 10.0, "qrs duration": 8.0, "qt interval": 15.0,
    "qt corrected": 20.0,
}
_MEASURED_KEY = {"rr interval": "rr_ms", "pr interval": "pr_ms", "qrs duration": "qrs_ms",
                 "qt interval": "qt_ms", "qt corrected": "qtc_ms"}


@dataclass(frozen=True)
class LabelTemplate:
    """One question template.

    Attributes:
        template_id: ECG-QA's id.
        question_type: single-verify / single-choose / single-query.
        attribute_type: ``scp_code`` or ``numeric_feature``.
        text: wording; ``{code}``, ``{a}``/``{b}`` (choose), ``{feature}``, ``{range}``.
        groups: code groups it asks about (empty for numeric templates).
    """

    template_id: int
    question_type: str
    attribute_type: str
    text: str
    groups: tuple[str, ...] = ()


_STATEMENTS = ("sub_class", "diagnostic")
# ECG-QA's own wording (template version, ids as in the release). Without likelihoods,
# every labelled statement counts, so the diagnostic templates are the "including
# uncertain symptoms" ones (4, 8), never "excluding" (5, 9).
TEMPLATES: tuple[LabelTemplate, ...] = (
    LabelTemplate(1, SV, "scp_code", "Does this ECG show symptoms of {code}?",
                  ("super_class",) + _STATEMENTS + ("form", "rhythm")),
    LabelTemplate(2, SV, "scp_code", "Is this a normal ECG?", ("super_class",)),
    LabelTemplate(3, SC, "scp_code", "Which symptom does this ECG show, {a} or {b}?",
                  ("super_class",)),
    LabelTemplate(4, SC, "scp_code", "Which diagnostic symptom does this ECG show, {a} or {b}, "
                  "including uncertain symptoms?", _STATEMENTS),
    LabelTemplate(6, SC, "scp_code", "Which form-related symptom does this ECG show, {a} or "
                  "{b}?", ("form",)),
    LabelTemplate(7, SC, "scp_code", "Which rhythm-related symptom does this ECG show, {a} or "
                  "{b}?", ("rhythm",)),
    LabelTemplate(8, SQ, "scp_code", "What diagnostic symptoms does this ECG show, including "
                  "uncertain symptoms?", _STATEMENTS),
    LabelTemplate(10, SQ, "scp_code", "What rhythm-related symptoms does this ECG show?",
                  ("rhythm",)),
    LabelTemplate(11, SQ, "scp_code", "What form-related symptoms does this ECG show?",
                  ("form",)),
    LabelTemplate(39, SV, "numeric_feature", "Does the {feature} of this ECG fall {range}?"),
    LabelTemplate(40, SC, "numeric_feature", "Which range does the {feature} of this ECG fall "
                  "in, {a} or {b}?"),
    LabelTemplate(41, SQ, "numeric_feature", "What range does the {feature} of this ECG fall "
                  "in?"),
)
BY_ID = {t.template_id: t for t in TEMPLATES}


def templates_for(group: str, question_type: str) -> LabelTemplate | None:
    """The template asking ``question_type`` questions about ``group`` (None: no such one)."""
    for t in TEMPLATES:
        if t.question_type == question_type and group in t.groups:
            return t
    return None


# --------------------------------------------------------------------------- questions


def _sample(t: LabelTemplate, ecg_id: int, question: str, answer: list[str],
            attribute: list[str] | None) -> dict:
    return {"template_id": t.template_id, "question_id": -1, "sample_id": -1,
            "question_type": t.question_type, "attribute_type": t.attribute_type,
            "question": question, "answer": answer, "ecg_id": [ecg_id], "attribute": attribute}


def code_questions(record: LabelledRecord, group: str, vocabulary: Sequence[str],
                   rng: np.random.Generator) -> list[dict]:
    """Verify, choose and query questions of one record about one code group.

    A query ("What ... symptoms does this ECG show?") is asked only when every code the
    record has in ``group`` has an ECG-QA answer string and none of the group's answers is
    unsure for it: otherwise the full answer is unknown and a shorter one would be wrong.
    Negatives (and the options of a choose question) never include unsure answers.

    Args:
        record: the record.
        group: a code group the record's table has.
        vocabulary: answer strings of ``group`` that some record of the table has.
        rng: the record's generator.
    """
    if group not in record.codes:
        return []
    present = present_answers(record, group)
    absent = [] if record.partial else [a for a in vocabulary
                                        if a not in present and a not in record.unsure]
    complete = not record.partial and not (record.unsure & set(vocabulary))
    out: list[dict] = []
    verify = templates_for(group, SV)
    if verify is not None:
        if present:
            code = str(rng.choice(present))
            out.append(_sample(verify, record.ecg_id, verify.text.format(code=code), ["yes"],
                               [code]))
        if absent:
            code = str(rng.choice(absent))
            out.append(_sample(verify, record.ecg_id, verify.text.format(code=code), ["no"],
                               [code]))
    if group == "super_class":
        out += _normal_question(record)
    choose = templates_for(group, SC)
    if choose is not None and len(present) + len(absent) >= 2:
        pair = _pair(rng, present, absent, present + absent)
        answer = [a for a in pair if a in present] or ["none"]
        out.append(_sample(choose, record.ecg_id, choose.text.format(a=pair[0], b=pair[1]),
                           answer, list(pair)))
    query = templates_for(group, SQ)
    if query is not None and complete and len(present) == len(record.codes[group]):
        answer = sorted(present) or ["none"]
        out.append(_sample(query, record.ecg_id, query.text, answer, answer))
    return out


def _pair(rng, present: Sequence[str], absent: Sequence[str], pool: Sequence[str]
          ) -> tuple[str, str]:
    """Two options: the first present half the time (when possible), the second any other."""
    first = str(rng.choice(present if present and (rng.random() < 0.5 or not absent)
                           else absent))
    second = str(rng.choice([a for a in pool if a != first]))
    return (first, second) if rng.random() < 0.5 else (second, first)


def _normal_question(record: LabelledRecord) -> list[dict]:
    """"Is this a normal ECG?": yes for NORM alone, no without NORM; NORM with another
    superclass asks nothing (the label is contradictory)."""
    sup = set(record.codes.get("super_class", ()))
    if not sup or ("NORM" in sup and len(sup) > 1) or record.partial:
        return []
    t = BY_ID[2]
    return [_sample(t, record.ecg_id, t.text, ["yes" if sup == {"NORM"} else "no"], None)]


def numeric_questions(ecg_id: int, measured: dict, rng: np.random.Generator) -> list[dict]:
    """Range questions from one record's measurements (``Measurements.as_dict()``).

    A feature is asked about only when measured and farther than
    :data:`MEASUREMENT_ERROR_MS` from both bounds of its normal range. Which numeric
    features fall in a range (ECG-QA template 42) is never asked: P duration is not
    measured, so the full answer is unknown.
    """
    verify, choose, query = BY_ID[39], BY_ID[40], BY_ID[41]
    out = []
    for feature, key in _MEASURED_KEY.items():
        value = measured.get(key)
        if value is None or not safe_value(feature, float(value)):
            continue
        truth = classify(feature, float(value))
        others = [c for c in NUMERIC_CLASSES if c != truth]
        asked = truth if rng.random() < 0.5 else str(rng.choice(others))
        out.append(_sample(verify, ecg_id, verify.text.format(feature=feature, range=asked),
                           ["yes" if asked == truth else "no"], [feature]))
        pair = _pair(rng, [truth], others, NUMERIC_CLASSES)
        out.append(_sample(choose, ecg_id, choose.text.format(feature=feature, a=pair[0],
                                                              b=pair[1]),
                           [a for a in pair if a == truth] or ["none"], [feature]))
        out.append(_sample(query, ecg_id, query.text.format(feature=feature), [truth],
                           [feature]))
    return out


def safe_value(feature: str, value_ms: float) -> bool:
    """True when ``value_ms`` is farther than the measurement error from both range bounds."""
    margin = MEASUREMENT_ERROR_MS[feature]
    return all(abs(value_ms - bound) > margin for bound in NORMAL_RANGES[feature])


# --------------------------------------------------------------------------- measuring


def _measure_one(path: str) -> dict:
    from ecgqa.errors import EcgqaError
    from ecgqa.records.measure import measure
    from ecgqa.records.read import read_record

    try:
        return measure(read_record(path)).as_dict()
    except (EcgqaError, OSError, ValueError) as err:
        return {"note": f"not read: {' '.join(str(err).split())}"}


def measure_records(records: Sequence[LabelledRecord], workers: int = 1,
                    progress: Callable[[int, int], None] | None = None) -> dict[int, dict]:
    """ecg_id -> ``Measurements.as_dict()`` (or ``{"note": why}`` for an unreadable record)."""
    paths = [str(r.path) for r in records]
    out: dict[int, dict] = {}
    for r, m in zip(records, ordered_map(_measure_one, paths, workers)):
        out[r.ecg_id] = m
        if progress:
            progress(len(out), len(paths))
    return out


# --------------------------------------------------------------------------- the dataset


@dataclass(frozen=True)
class LabelsSummary:
    out: Path
    n_records: int
    n_patients: int
    questions: dict[str, int]          # split -> samples
    records_per_split: dict[str, int]


def build_label_qa(table: LabelTable, out: str | os.PathLike, *, seed: int = 0,
                   rule: SplitRule | None = None, measurements: dict[int, dict] | None = None
                   ) -> LabelsSummary:
    """Write ``table``'s questions in ECG-QA's layout into ``out`` (atomically).

    Args:
        table: from :func:`ecgqa.qa.labels.read_label_table`.
        out: a folder that does not exist or is empty.
        seed: question seed; record ``ecg_id``'s questions depend only on ``(seed, ecg_id)``.
        rule: how records are split (folds or patient hash).
        measurements: ecg_id -> measurements, for numeric-feature questions (None: none).
    """
    out = user_path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EcgQaError(f"{clean(out)}: exists and is not an empty folder")
    split_of = assign_splits(table.records, rule or SplitRule())
    vocab = {g: group_answers(table.records, g) for g in table.groups}
    per_split: dict[str, list[dict]] = {"train": [], "valid": [], "test": []}
    records = sorted(table.records, key=lambda r: r.ecg_id)
    for r in records:
        rng = np.random.default_rng([seed, r.ecg_id])
        rows = [q for g in table.groups for q in code_questions(r, g, vocab[g], rng)]
        if measurements is not None and r.ecg_id in measurements:
            rows += numeric_questions(r.ecg_id, measurements[r.ecg_id], rng)
        per_split[split_of[r.ecg_id]].extend(rows)
    qids: dict[str, int] = {}
    for rows in per_split.values():
        for s in rows:
            s["question_id"] = qids.setdefault(s["question"], len(qids))
    with atomic_folder(out) as tmp:
        from ecgqa.qa.resolve import write_index

        write_index(tmp / "records_index.csv", {r.ecg_id: r.path.resolve() for r in records})
        write_split_ecgs(tmp, {s: [r.ecg_id for r in records if split_of[r.ecg_id] == s]
                               for s in per_split})
        counts = write_shards(tmp, per_split)
        write_vocab(tmp, _answers(vocab), _options(vocab))
        _write_labels(tmp, records, split_of, measurements)
        _write_readme(tmp, table, counts)
    per_rec = {s: sum(1 for r in records if split_of[r.ecg_id] == s) for s in per_split}
    return LabelsSummary(out=out, n_records=len(records),
                         n_patients=len({r.patient_id for r in records}), questions=counts,
                         records_per_split=per_rec)


def _answers(vocab: dict[str, list[str]]) -> list[str]:
    out = list(YES_NO) + ["none"]
    for g in vocab:
        out += vocab[g]
    return out + list(NUMERIC_CLASSES)


def _options(vocab: dict[str, list[str]]) -> dict[int, list[str]]:
    options: dict[int, set[str]] = {}
    for t in TEMPLATES:
        if t.question_type == SV:
            options[t.template_id] = set(YES_NO)
        elif t.attribute_type == "numeric_feature":
            options[t.template_id] = set(NUMERIC_CLASSES) | ({"none"} if t.question_type == SC
                                                              else set())
        else:
            have = [a for g in t.groups if g in vocab for a in vocab[g]]
            options[t.template_id] = set(have) | {"none"}
    return {k: sorted(v) for k, v in options.items()}


def _write_labels(tmp: Path, records, split_of, measurements) -> None:
    with open(tmp / "labels.jsonl", "w", encoding="utf-8") as f:
        for r in records:
            row = {"ecg_id": r.ecg_id, "name": r.name, "patient_id": r.patient_id,
                   "fold": r.fold, "split": split_of[r.ecg_id],
                   "codes": {g: list(c) for g, c in r.codes.items()}}
            if measurements is not None and r.ecg_id in measurements:
                row["measured"] = measurements[r.ecg_id]
            f.write(json.dumps(row, sort_keys=True) + "\n")


def _write_readme(tmp: Path, table: LabelTable, counts: dict[str, int]) -> None:
    from ecgqa.assets import package_version

    unknown = ", ".join(f"{k} ({n})" for k, n in sorted(table.unknown.items())) or "none"
    (tmp / "README.md").write_text(
        f"# ECG-QA-schema questions from a label table (ecgqa {package_version()})\n\n"
        f"Source: `{table.source}` ({len(table.records)} records; groups "
        f"{', '.join(table.groups)}). Questions: train {counts['train']}, valid "
        f"{counts['valid']}, test {counts['test']}. Per-record codes, split and "
        f"measurements: labels.jsonl. Codes without an ECG-QA answer string ask nothing "
        f"(see docs/data.md). Codes the reader did not know: {unknown}.\n")
