"""`ecgqa data synth`: the synthetic dataset reads back through the real-data loader."""

from __future__ import annotations

import json

import pytest

from ecgqa.cli import main
from ecgqa.qa.ecgqa import QUESTION_TYPES, load_ecgqa
from ecgqa.qa.episodes import EpisodeSampler, split_classes
from ecgqa.qa.resolve import make_resolver
from ecgqa.records.leads import STANDARD_LEADS
from ecgqa.records.read import read_record
from ecgqa.synth.dataset import write_synthetic


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "ds"
    summary = write_synthetic(out, 60, seed=3, workers=1)
    return out, summary


def _facts(out):
    lines = (out / "facts.jsonl").read_text().splitlines()
    return {r["ecg_id"]: r for r in map(json.loads, lines)}


def test_reads_back_through_the_ecgqa_loader_and_records_index(synth):
    out, summary = synth
    qa = load_ecgqa(out)                                  # checks answers against answers.csv
    assert len(qa) == sum(summary.n_questions.values()) > 60 * 8
    assert {s.question_type for s in qa.samples} == set(QUESTION_TYPES)
    resolver = make_resolver(out / "records_index.csv")
    assert resolver.available(qa.ecg_ids()) == qa.ecg_ids() == set(range(1, 61))
    rec = read_record(resolver.path(7))
    assert rec.leads == STANDARD_LEADS and rec.fs == 500 and rec.signal.shape == (12, 5000)
    assert rec.meta.age is not None and rec.meta.sex in ("male", "female")


def test_patient_level_splits(synth):
    out, _ = synth
    facts = _facts(out)
    split_of_patient = {}
    for r in facts.values():
        assert split_of_patient.setdefault(r["patient_id"], r["split"]) == r["split"]
    qa = load_ecgqa(out)
    for s in qa.samples:
        assert all(facts[i]["split"] == s.split for i in s.ecg_ids)
        assert all(i in qa.split_ecgs[s.split] for i in s.ecg_ids)
        if s.question_type.startswith("comparison_consecutive"):
            a, b = s.ecg_ids
            assert facts[a]["patient_id"] == facts[b]["patient_id"] and a < b
        if s.question_type.startswith("comparison_irrelevant"):
            a, b = s.ecg_ids
            assert facts[a]["patient_id"] != facts[b]["patient_id"]
    assert set(split_of_patient.values()) == {"train", "valid", "test"}


def test_answers_agree_with_the_ground_truth(synth):
    out, _ = synth
    facts = _facts(out)
    checked = 0
    for s in load_ecgqa(out).samples:
        f = facts[s.ecg_ids[0]]
        if s.template_id == 125:
            assert s.answer == (f["heart_axis"],)
        elif s.template_id == 121:
            rhythms = [c for c in f["scp_codes"] if c in s.answer]
            assert rhythms and set(s.answer) <= set(f["scp_codes"])
        elif s.template_id == 101:
            assert (s.answer == ("yes",)) == (s.attribute[0] in f["scp_codes"])
        elif s.template_id == 26:
            lead = s.question.rsplit("lead ", 1)[1].rstrip("?")
            assert (s.answer == ("yes",)) == (lead in f["noise"].get(s.attribute[0], []))
        elif s.template_id == 38:
            assert s.answer == (f["extra_systole"] or "none",)
        else:
            continue
        checked += 1
    assert checked >= 20


def test_same_seed_same_bytes_other_seed_differs(tmp_path, synth):
    out, _ = synth
    again = write_synthetic(tmp_path / "again", 60, seed=3, workers=2).out
    other = write_synthetic(tmp_path / "other", 60, seed=4, workers=1).out
    for rel in ("template/train/00000.json", "records/00000/00007.dat", "records_index.csv"):
        assert (again / rel).read_bytes() == (out / rel).read_bytes()
    assert (other / "records/00000/00007.dat").read_bytes() != \
        (out / "records/00000/00007.dat").read_bytes()


def test_nothing_half_written(tmp_path):
    def boom(done, total):
        if done == 5:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        write_synthetic(tmp_path / "ds", 20, seed=0, workers=1, progress=boom)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        write_synthetic(tmp_path / "busy", 20, seed=0, workers=1)
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["keep.txt"]


def test_episodes_on_synthetic_data(synth):
    out, _ = synth
    qa = load_ecgqa(out)
    cs = split_classes(qa.samples, seed=0)
    sampler = EpisodeSampler(qa.samples, 2, 2, 2, "single-verify", "train",
                             classes=cs.meta_train, seed=0)
    ep = sampler.episode(0)
    assert not ep.records("support") & ep.records("query")
    signals = make_resolver(out / "records_index.csv")
    assert all(signals.path(i) is not None for s in ep.support for i in s.ecg_ids)


def test_cli_synth_and_stats(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["data", "synth", "--out", str(out), "--n-ecgs", "20", "--seed", "1",
                 "--workers", "1", "--quiet"]) == 0
    assert "20 ECGs" in capsys.readouterr().out
    assert main(["data", "synth", "--out", str(out), "--n-ecgs", "20", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists" in err
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--n-ecgs", "3"]) == 2
    assert ">= 10" in capsys.readouterr().err
    assert main(["data", "stats", "--qa", str(out), "--n-way", "2", "--k-shot", "1",
                 "--q-query", "1", "--records", str(out / "records_index.csv"), "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert {r["question_type"] for r in table["rows"]} <= set(QUESTION_TYPES)
    assert sum(r["samples_train"] + r["samples_valid"] + r["samples_test"]
               for r in table["rows"]) == len(load_ecgqa(out))
