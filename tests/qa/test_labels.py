"""ECG-QA-schema questions from label tables (``ecgqa data labels``) on the shared real data."""

from __future__ import annotations

import ast
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ecgqa.cli import main
from ecgqa.qa import codes
from ecgqa.qa.ecgqa import EcgQaError, load_ecgqa
from ecgqa.qa.labelqa import (
    MEASUREMENT_ERROR_MS,
    TEMPLATES,
    build_label_qa,
    numeric_questions,
    safe_value,
)
from ecgqa.qa.labels import (
    LabelledRecord,
    SplitRule,
    assign_splits,
    present_answers,
    read_label_table,
)
from ecgqa.qa.numeric import NORMAL_RANGES, classify
from tests.conftest import ECGQA, REAL, SHARED_DATA

PTBXL = SHARED_DATA / "ptbxl-zscore-250hz" / "labels.csv"
CINC = REAL / "cinc2021"
ECGQA_ANSWERS = ECGQA / "ptbxl" / "answers.csv"
ECGQA_OPTIONS = ECGQA / "ptbxl" / "answers_for_each_template.csv"


def _ecgqa_vocab() -> set[str]:
    with open(ECGQA_ANSWERS, newline="", encoding="utf-8") as f:
        return {row["class"] for row in csv.DictReader(f)}


def _ecgqa_options() -> dict[int, set[str]]:
    with open(ECGQA_OPTIONS, newline="", encoding="utf-8") as f:
        return {int(r["template_id"]): set(ast.literal_eval(r["classes"]))
                for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def ptbxl_qa(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ptbxl") / "qa"
    build_label_qa(read_label_table(PTBXL), out, seed=0)
    return out


def _samples(folder: Path) -> list[dict]:
    return [s for p in sorted((folder / "template").glob("*/*.json"))
            for s in json.loads(p.read_text())]


def _labels(folder: Path) -> dict[int, dict]:
    rows = [json.loads(x) for x in (folder / "labels.jsonl").read_text().splitlines()]
    return {r["ecg_id"]: r for r in rows}


def test_every_code_of_the_tables_is_known_and_every_answer_is_ecgqa_s():
    vocab = _ecgqa_vocab()
    for table in codes.GROUPS.values():
        assert {a for a in table.values() if a} <= vocab
    assert {codes.scp_answer(c) for _, c in codes.SNOMED_TO_SCP.values()} <= vocab
    for overlaps in codes.SNOMED_OVERLAPS.values():
        assert all(codes.scp_answer(c) for c in overlaps)
    ptbxl = read_label_table(PTBXL)
    assert len(ptbxl.records) == 1625 and ptbxl.unknown == {}
    assert set(ptbxl.groups) == {"super_class", "sub_class", "form", "rhythm"}


def test_templates_use_ecgqa_ids_with_their_answer_options():
    """Every template's options are a subset of ECG-QA's own options for that id."""
    ecgqa = _ecgqa_options()
    from ecgqa.qa.labelqa import _options
    from ecgqa.qa.labels import group_answers

    table = read_label_table(PTBXL)
    mine = _options({g: group_answers(table.records, g) for g in table.groups})
    assert set(mine) == {t.template_id for t in TEMPLATES}
    for tid, options in mine.items():
        assert set(options) <= ecgqa[tid], tid


def test_ptbxl_dataset_loads_answers_are_in_vocabulary_and_agree_with_labels(ptbxl_qa):
    data = load_ecgqa(ptbxl_qa)
    vocab = _ecgqa_vocab()
    labels = _labels(ptbxl_qa)
    samples = _samples(ptbxl_qa)
    assert len(data.samples) == len(samples) > 10_000
    assert {a for s in samples for a in s["answer"]} <= vocab
    checked = 0
    for s in samples:
        row = labels[s["ecg_id"][0]]
        record = LabelledRecord(ecg_id=row["ecg_id"], path=Path("x"), patient_id="p",
                                codes={g: tuple(c) for g, c in row["codes"].items()})
        has = {a for g in row["codes"] for a in present_answers(record, g)}
        if s["template_id"] == 1:                              # verify: yes iff labelled
            assert (s["answer"] == ["yes"]) == (s["attribute"][0] in has), s
            checked += 1
        elif s["question_type"] == "single-choose":
            assert set(s["answer"]) - {"none"} == set(s["attribute"]) & has, s
            checked += 1
        elif s["template_id"] == 2:
            sup = set(row["codes"]["super_class"])
            assert sup == {"NORM"} or "NORM" not in sup, s      # contradictory: not asked
            assert s["answer"] == (["yes"] if sup == {"NORM"} else ["no"]), s
    assert checked > 5000
    # queries: the full set of the group's answers, never a partial one
    for s in samples:
        if s["template_id"] == 10:
            row = labels[s["ecg_id"][0]]
            rhythm = row["codes"]["rhythm"]
            assert all(codes.RHYTHM[c] for c in rhythm)
            assert s["answer"] == (sorted(codes.RHYTHM[c] for c in rhythm) or ["none"])


def test_splits_follow_folds_and_keep_patients_together(ptbxl_qa):
    labels = _labels(ptbxl_qa)
    for r in labels.values():
        assert r["split"] == ("valid" if r["fold"] == 9 else "train")
    split_of_patient: dict[str, set[str]] = {}
    for r in labels.values():
        split_of_patient.setdefault(r["patient_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in split_of_patient.values())
    for split in ("train", "valid"):
        listed = {int(line.split("\t")[1]) for line in
                  (ptbxl_qa / f"{split}_ecgs.tsv").read_text().splitlines()}
        assert listed == {k for k, r in labels.items() if r["split"] == split}
        asked = {s.ecg_ids[0] for s in load_ecgqa(ptbxl_qa).samples if s.split == split}
        assert asked <= listed


def _rec(ecg_id, patient, fold=None):
    return LabelledRecord(ecg_id=ecg_id, path=Path(f"r{ecg_id}"), patient_id=patient, fold=fold,
                          codes={"rhythm": ("SR",)})


def test_a_patient_spanning_folds_stays_in_one_split():
    records = [_rec(1, "a", 8), _rec(2, "a", 9), _rec(3, "b", 9), _rec(4, "c", 10)]
    split = assign_splits(records)
    assert split == {1: "train", 2: "train", 3: "valid", 4: "test"}


def test_hash_split_is_patient_level_stable_and_near_the_fractions():
    records = [_rec(i, f"p{i // 3}") for i in range(3000)]
    split = assign_splits(records, SplitRule(fractions=(0.2, 0.1)))
    assert split == assign_splits(list(reversed(records)), SplitRule(fractions=(0.2, 0.1)))
    for i in range(0, 3000, 3):
        assert split[i] == split[i + 1] == split[i + 2]
    n = 1000                                      # patients; binomial SD of a share ~0.013
    share = {s: sum(1 for v in list(split.values())[::3] if v == s) / n
             for s in ("valid", "test")}
    assert abs(share["valid"] - 0.2) < 5 * (0.2 * 0.8 / n) ** 0.5
    assert abs(share["test"] - 0.1) < 5 * (0.1 * 0.9 / n) ** 0.5


def test_challenge_headers_map_to_scp_answers_and_unsure_codes_are_never_negatives(tmp_path):
    folder = tmp_path / "cinc"
    folder.mkdir()
    for name, dx in (("A", "59118001,426783006"), ("B", "713427006,427084000"),
                     ("C", "426783006"), ("D", "999999,426177001")):
        for suffix in (".hea", ".mat"):
            src = CINC / f"E07500{suffix}"
            dst = folder / f"{name}{suffix}"
            if suffix == ".mat":
                shutil.copy(src, dst)
            else:
                text = src.read_text().replace("E07500", name)
                dst.write_text("\n".join(f"# Dx: {dx}" if line.startswith("# Dx") else line
                                         for line in text.splitlines()) + "\n")
    table = read_label_table(folder)
    by = {r.name: r for r in table.records}
    assert by["A"].codes["rhythm"] == ("SR",) and by["A"].codes["diagnostic"] == ()
    assert by["A"].unsure == {"complete right bundle branch block",
                              "incomplete right bundle branch block"}
    assert by["B"].codes["diagnostic"] == ("CRBBB",)
    assert by["D"].partial and not by["C"].partial
    out = tmp_path / "qa"
    build_label_qa(table, out, rule=SplitRule(fractions=(0.0, 0.0)))
    for seed in range(1, 6):                      # many draws of the negatives
        build_label_qa(table, tmp_path / f"qa{seed}", seed=seed,
                       rule=SplitRule(fractions=(0.0, 0.0)))
    samples = [s for k in range(6)
               for s in _samples(tmp_path / ("qa" if k == 0 else f"qa{k}"))]
    ids = {r.name: r.ecg_id for r in table.records}
    for s in samples:
        if s["ecg_id"][0] == ids["A"]:
            assert not (s["answer"] == ["no"] and "bundle branch" in s["attribute"][0])
            assert s["question_type"] != "single-query" or s["template_id"] != 8
        if s["ecg_id"][0] == ids["D"]:            # unknown code: only positives
            assert s["answer"] != ["no"] and "none" not in s["answer"]
            assert s["question_type"] != "single-query"
    assert any(s["ecg_id"][0] == ids["B"] and s["answer"] == ["yes"] and
               s["attribute"] == ["complete right bundle branch block"] for s in samples)


def test_numeric_questions_skip_values_near_a_bound_and_answer_by_range():
    rng = np.random.default_rng(0)
    low, high = NORMAL_RANGES["qrs duration"]
    margin = MEASUREMENT_ERROR_MS["qrs duration"]
    assert not safe_value("qrs duration", high + margin / 2)
    assert not safe_value("qrs duration", low - margin / 2)
    assert safe_value("qrs duration", high + 2 * margin)
    measured = {"qrs_ms": high + margin / 2, "rr_ms": 1200.0, "pr_ms": None, "qt_ms": 400.0,
                "qtc_ms": None}
    qs = numeric_questions(7, measured, rng)
    features = {q["attribute"][0] for q in qs}
    assert features == {"rr interval", "qt interval"}
    for q in qs:
        value = {"rr interval": 1200.0, "qt interval": 400.0}[q["attribute"][0]]
        truth = classify(q["attribute"][0], value)
        if q["template_id"] == 41:
            assert q["answer"] == [truth]
        elif q["template_id"] == 39:
            assert (q["answer"] == ["yes"]) == q["question"].endswith(f"fall {truth}?")
        else:
            assert q["answer"] == ([truth] if truth in q["question"] else ["none"])


def test_cli_builds_a_challenge_dataset_with_numeric_questions(tmp_path, capsys):
    out = tmp_path / "cinc"
    assert main(["data", "labels", "--labels", str(CINC), "--out", str(out), "--quiet"]) == 0
    samples = _samples(out)
    assert {a for s in samples for a in s["answer"]} <= _ecgqa_vocab()
    numeric = [s for s in samples if s["attribute_type"] == "numeric_feature"]
    assert numeric
    labels = _labels(out)
    for s in numeric:
        measured = labels[s["ecg_id"][0]]["measured"]
        if s["template_id"] == 41:
            key = {"rr interval": "rr_ms", "pr interval": "pr_ms", "qrs duration": "qrs_ms",
                   "qt interval": "qt_ms", "qt corrected": "qtc_ms"}[s["attribute"][0]]
            assert s["answer"] == [classify(s["attribute"][0], measured[key])]
    assert "50 records of 50 patients" in capsys.readouterr().out


@pytest.mark.parametrize("content, message", [
    ("id,path,form\n1,a,PVC\n", "needs columns ecg_id and path"),
    ("ecg_id,path\n1,a\n", "no code column"),
    ("ecg_id,path,form\nx,a,PVC\n", "ecg_id 'x' is not a whole number"),
    ("ecg_id,path,form\n1,a,PVC\n1,b,PAC\n", "ecg_id 1 appears twice"),
    ("ecg_id,path,form\n", "has no records"),
])
def test_bad_tables_are_one_line_errors_and_write_nothing(tmp_path, capsys, content, message):
    table = tmp_path / "labels.csv"
    table.write_text(content)
    out = tmp_path / "out"
    assert main(["data", "labels", "--labels", str(table), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()
    with pytest.raises(EcgQaError):
        read_label_table(table)


def test_cli_refuses_bad_options_before_reading(tmp_path, capsys):
    for argv in (["--valid-folds", "9", "--test-folds", "9"], ["--valid-fraction", "0.7",
                 "--test-fraction", "0.5"], ["--workers", "0"], ["--valid-folds", "x"]):
        assert main(["data", "labels", "--labels", str(PTBXL), "--out",
                     str(tmp_path / "o"), *argv]) == 2
        assert capsys.readouterr().err.startswith("ecgqa: error:")
    assert not (tmp_path / "o").exists()


def test_stats_counts_meta_test_episodes_from_the_valid_split(ptbxl_qa, capsys):
    """The shared PTB-XL folds have no test split: --test-split valid counts fold 9."""
    argv = ["data", "stats", "--qa", str(ptbxl_qa), "--n-way", "2", "--k-shot", "5",
            "--q-query", "1", "--json"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert all(r["samples_test"] == 0 and r["episodes_meta_test"] == 0 for r in rows)
    assert main(argv + ["--test-split", "valid"]) == 0
    rows = {r["question_type"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert rows["single-verify"]["episodes_meta_test"] > 0
    assert {"single-verify", "single-choose", "single-query"} <= set(rows)
