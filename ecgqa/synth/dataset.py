"""Write a synthetic ECG-QA dataset in the published layout (``ecgqa data synth``).

Output (``OUT``)::

    records/00000/00001.hea/.dat   WFDB, 12 leads, 500 Hz, 10 s, format 16, 1000/mV
    records_index.csv              ecg_id,path  (the loader's records index)
    facts.jsonl                    ground truth per ECG (labels, intended intervals, split)
    answers.csv, answers_for_each_template.csv
    train_ecgs.tsv valid_ecgs.tsv test_ecgs.tsv   patient-level splits
    template/{train,valid,test}/00000.json        ECG-QA-schema questions
    README.md                      how it was made (seed, counts, version)

Everything is written into a temporary folder beside ``OUT`` and renamed at the end,
so an interrupted run leaves no half-written dataset. ECG ``i`` depends only on
``(seed, i)``: the same seed gives byte-identical records and questions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ecgqa.assets import package_version
from ecgqa.outputs import atomic_folder
from ecgqa.qa.writer import write_shards, write_split_ecgs, write_vocab
from ecgqa.records.leads import STANDARD_LEADS
from ecgqa.synth import questions as Q
from ecgqa.workpool import ordered_map

SPLIT_FRACTIONS = {"train": 0.7, "valid": 0.15, "test": 0.15}
SINGLE_PER_ECG = 12


@dataclass(frozen=True)
class SynthSummary:
    out: Path
    n_ecgs: int
    n_patients: int
    n_questions: dict[str, int]


def plan_patients(n_ecgs: int, seed: int) -> tuple[list[int], dict[int, str], dict[int, tuple]]:
    """Patient of each ECG (1-3 consecutive ECGs each), each patient's split and (age, sex)."""
    rng = np.random.default_rng([seed, 0xB0B])
    patient_of, pid = [], 0
    while len(patient_of) < n_ecgs:
        count = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
        patient_of.extend([pid] * min(count, n_ecgs - len(patient_of)))
        pid += 1
    order = rng.permutation(pid)
    n_train = int(round(SPLIT_FRACTIONS["train"] * pid))
    n_valid = int(round(SPLIT_FRACTIONS["valid"] * pid))
    split_of = {}
    for rank, p in enumerate(order):
        split_of[int(p)] = ("train" if rank < n_train else
                            "valid" if rank < n_train + n_valid else "test")
    people = {p: (int(rng.integers(18, 90)), str(rng.choice(["male", "female"])))
              for p in range(pid)}
    return patient_of, split_of, people


def _make_ecg(args) -> dict:
    """Synthesize and write ECG ``ecg_id`` (runs in a worker process)."""
    import wfdb

    from ecgqa.synth.ecg import sample_facts, synthesize

    ecg_id, seed, patient, split, records_dir, (age, sex) = args
    rng = np.random.default_rng([seed, ecg_id])
    facts = sample_facts(rng)
    age = age + 2 * (ecg_id % 3) if age < 88 else age   # a later visit: a little older
    facts = replace(facts, age=age, sex=sex)
    signal = synthesize(facts, rng)                  # (12, 5000) mV
    folder = Path(records_dir) / f"{ecg_id // 1000 * 1000:05d}"
    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(f"{ecg_id:05d}", fs=500, units=["mV"] * 12, sig_name=list(STANDARD_LEADS),
                p_signal=signal.T.astype(np.float64), fmt=["16"] * 12,
                adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(folder),
                comments=[f"Age: {facts.age}", f"Sex: {facts.sex}",
                          f"Synthetic: ecgqa {package_version()} seed {seed}"])
    return dict(facts.to_dict(), ecg_id=ecg_id, patient_id=patient, split=split,
                path=f"records/{folder.name}/{ecg_id:05d}")


def write_synthetic(out: str | os.PathLike, n_ecgs: int, seed: int = 0, *,
                    workers: int | None = None,
                    progress: Callable[[int, int], None] | None = None) -> SynthSummary:
    """Generate ``n_ecgs`` labelled ECGs and their questions into ``out``.

    Args:
        out: output folder; must not exist or be empty.
        n_ecgs: number of ECG records (>= 10).
        seed: generation seed.
        workers: processes for synthesis (default: CPU count, at most 8).
        progress: called as ``progress(done, total)`` while ECGs are written.
    """
    out = Path(out)
    if n_ecgs < 10:
        raise ValueError(f"n_ecgs must be >= 10 (patient-level splits need patients), got {n_ecgs}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty folder")
    with atomic_folder(out) as tmp:
        facts_rows = _write_records(tmp, n_ecgs, seed, workers, progress)
        counts = _write_questions(tmp, facts_rows, seed)
        _write_readme(tmp, n_ecgs, seed, facts_rows, counts)
    n_pat = len({r["patient_id"] for r in facts_rows})
    return SynthSummary(out=out, n_ecgs=n_ecgs, n_patients=n_pat, n_questions=counts)


def _write_records(tmp: Path, n: int, seed: int, workers, progress) -> list[dict]:
    patient_of, split_of, people = plan_patients(n, seed)
    jobs = [(i, seed, p, split_of[p], str(tmp / "records"), people[p])
            for i, p in enumerate(patient_of, start=1)]
    workers = workers or min(8, os.cpu_count() or 1)
    rows: list[dict] = []
    for row in ordered_map(_make_ecg, jobs, workers, min_jobs=64, chunksize=16):
        rows.append(row)
        if progress:
            progress(len(rows), n)
    from ecgqa.qa.resolve import write_index

    write_index(tmp / "records_index.csv", {r["ecg_id"]: tmp / r["path"] for r in rows})
    with open(tmp / "facts.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, sort_keys=True) + "\n")
    write_split_ecgs(tmp, {split: [r["ecg_id"] for r in rows if r["split"] == split]
                           for split in SPLIT_FRACTIONS})
    return rows


class _Facts:
    """Attribute view of a facts.jsonl row, as the question templates expect."""

    def __init__(self, row: dict):
        self.scp_codes = tuple(row["scp_codes"])
        self.scp_leads = {k: tuple(v) for k, v in row["scp_leads"].items()}
        self.noise = {k: tuple(v) for k, v in row["noise"].items()}
        self.extra_systole = row["extra_systole"]
        self.heart_axis = row["heart_axis"]
        self.numeric_class = dict(row["numeric_class"])


def _write_questions(tmp: Path, rows: list[dict], seed: int) -> dict[str, int]:
    rng = np.random.default_rng([seed, 0x0A])
    facts = {r["ecg_id"]: _Facts(r) for r in rows}
    patient = {r["ecg_id"]: r["patient_id"] for r in rows}
    qids: dict[str, int] = {}
    per_split: dict[str, list[dict]] = {s: [] for s in SPLIT_FRACTIONS}
    single = Q.single_templates()
    for r in rows:
        for t in rng.choice(len(single), SINGLE_PER_ECG, replace=False):
            _add(per_split[r["split"]], single[t], rng, [r["ecg_id"]], facts, qids)
    for split in SPLIT_FRACTIONS:
        ids = [r for r in rows if r["split"] == split]
        by_patient: dict[int, list[int]] = {}
        for r in ids:
            by_patient.setdefault(r["patient_id"], []).append(r["ecg_id"])
        for ecgs in by_patient.values():          # consecutive: same patient, in order
            for a, b in zip(ecgs, ecgs[1:]):
                for t in Q.comparison_templates("consecutive"):
                    _add(per_split[split], t, rng, [a, b], facts, qids)
        pool = [r["ecg_id"] for r in ids]
        irrelevant = Q.comparison_templates("irrelevant")
        for _ in range(len(pool)):                # irrelevant: two different patients
            a, b = (int(x) for x in rng.choice(pool, 2, replace=False))
            if patient[a] != patient[b]:
                _add(per_split[split], irrelevant[int(rng.integers(len(irrelevant)))], rng,
                     [a, b], facts, qids)
    _write_vocab(tmp)
    return write_shards(tmp, per_split)


def _add(bucket: list[dict], t: Q.Template, rng, ecg_ids: list[int], facts,
         qids: dict[str, int]) -> None:
    res = Q.ask(t, rng, *(facts[i] for i in ecg_ids))
    if res is None:
        return
    question, answer, attribute = res
    bucket.append({
        "template_id": t.template_id, "question_id": qids.setdefault(question, len(qids)),
        "sample_id": -1, "question_type": t.question_type, "attribute_type": t.attribute_type,
        "question": question, "answer": answer, "ecg_id": ecg_ids,
        "attribute": attribute,
    })


def _write_vocab(tmp: Path) -> None:
    write_vocab(tmp, Q.all_answers(), {t.template_id: t.options for t in Q.TEMPLATES})


def _write_readme(tmp: Path, n: int, seed: int, rows: list[dict], counts: dict) -> None:
    n_pat = len({r["patient_id"] for r in rows})
    (tmp / "README.md").write_text(
        f"# Synthetic ECG-QA (ecgqa {package_version()})\n\n"
        f"Made by `ecgqa data synth --n-ecgs {n} --seed {seed}`: {n} synthetic 12-lead ECGs "
        f"(500 Hz, 10 s, WFDB) of {n_pat} synthetic patients, questions in the ECG-QA schema "
        f"(train {counts.get('train', 0)}, valid {counts.get('valid', 0)}, "
        f"test {counts.get('test', 0)}). Ground truth per ECG in facts.jsonl. Not patient "
        "data; for method development and tests.\n")
