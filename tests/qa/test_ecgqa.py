"""The ECG-QA loader on the real shards in ../shared/data/ecgqa, resolvers and the cache."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ecgqa.qa.cache import SignalCache
from ecgqa.qa.ecgqa import QUESTION_TYPES, EcgQaError, load_ecgqa
from ecgqa.qa.resolve import (
    MimicIvEcgLayout,
    PtbxlLayout,
    RecordsIndex,
    make_resolver,
    write_index,
)
from tests.conftest import ECGQA, REAL, write_real_index


@pytest.fixture(scope="module")
def real_qa():
    return load_ecgqa(ECGQA)


def test_real_shards_load_with_schema_vocab_and_official_splits(real_qa):
    assert real_qa.root.name == "ptbxl"
    by = {(s.split, s.question_type) for s in real_qa.samples}
    assert ("train", "single-verify") in by
    assert ("valid", "comparison_irrelevant-query") in by
    assert len(real_qa.select(split="train")) == 10000
    assert len(real_qa.vocab.answers) == 104 and "none" in real_qa.vocab.answers
    assert real_qa.vocab.options(26) == ("no", "yes")
    assert len(real_qa.vocab.options(4)) == 37
    for s in real_qa.samples:                 # every ECG sits in its split's official list
        assert all(i in real_qa.split_ecgs[s.split] for i in s.ecg_ids)
        assert s.question_type in QUESTION_TYPES
        assert (s.attribute is None) == s.is_comparison
        assert len(s.ecg_ids) == (2 if s.is_comparison else 1)
    first = real_qa.samples[0]
    assert first.to_json()["ecg_id"] == list(first.ecg_ids)


def test_only_requested_splits_and_types(real_qa):
    qa = load_ecgqa(ECGQA / "ptbxl", splits=["valid"],
                    question_types=["comparison_irrelevant-query"])
    assert len(qa) == len(real_qa.select(split="valid"))
    assert {s.split for s in qa.samples} == {"valid"}


def test_records_index_over_real_records_resolves_and_reads(tmp_path, real_qa):
    index = RecordsIndex(write_real_index(tmp_path / "index.csv"))
    have = index.available(real_qa.ecg_ids())
    assert have == {2, 6001, 6002, 6003, 6007, 6008, 6009}
    usable = real_qa.select(available=have)
    assert usable and all(set(s.ecg_ids) <= have for s in usable)
    cache = SignalCache(index, cache_dir=tmp_path / "cache")
    sig, mask = cache.get(6002)
    assert sig.shape == (12, 5000) and sig.dtype == np.float32 and mask.all()
    again, _ = cache.get(6002)
    assert again is sig and cache.reads == 1
    fresh = SignalCache(index, cache_dir=tmp_path / "cache")       # from the .npz on disk
    np.testing.assert_array_equal(fresh.get(6002)[0], sig)
    assert fresh.reads == 0
    low = SignalCache(index).get(1)[0]                              # 100 Hz record -> 500 Hz
    assert low.shape == (12, 5000)


def test_missing_ecg_names_the_file_entry_id_and_index(tmp_path, real_qa):
    index = RecordsIndex(write_real_index(tmp_path / "index.csv"))
    with pytest.raises(EcgQaError, match=r"120000\.json#0 \(sample_id 120000\): ecg_id 3637 "
                       r"not found in records index .*index\.csv"):
        real_qa.require_records(index)


def test_ptbxl_layout(tmp_path):
    folder = tmp_path / "ptbxl" / "records100" / "00000"
    folder.mkdir(parents=True)
    for ext in (".hea", ".dat"):
        shutil.copy(REAL / "ptbxl" / f"00001_lr{ext}", folder / f"00001_lr{ext}")
    res = make_resolver(tmp_path / "ptbxl")
    assert isinstance(res, PtbxlLayout)
    assert res.path(1) == folder / "00001_lr" and res.path(2) is None
    hr = tmp_path / "ptbxl" / "records500" / "00000"
    hr.mkdir(parents=True)
    for ext in (".hea", ".mat"):
        shutil.copy(REAL / "cinc2020" / f"HR00001{ext}", hr / f"00001_hr{ext}")
    (hr / "00001_hr.hea").write_text((hr / "00001_hr.hea").read_text()
                                     .replace("HR00001", "00001_hr"))
    assert PtbxlLayout(tmp_path / "ptbxl").path(1) == hr / "00001_hr"   # records500 preferred


def test_mimic_layout(tmp_path):
    rec = tmp_path / "mimic" / "files" / "p1000" / "p10000032" / "s40689238"
    rec.mkdir(parents=True)
    for ext in (".hea", ".mat"):
        shutil.copy(REAL / "cinc2021" / f"E07500{ext}", rec / f"40689238{ext}")
    (rec / "40689238.hea").write_text((rec / "40689238.hea").read_text()
                                      .replace("E07500", "40689238"))
    (tmp_path / "mimic" / "record_list.csv").write_text(
        "subject_id,study_id,file_name,ecg_time,path\n"
        "10000032,40689238,40689238,2180-07-23 08:44:00,"
        "files/p1000/p10000032/s40689238/40689238\n")
    res = make_resolver(tmp_path / "mimic")
    assert isinstance(res, MimicIvEcgLayout) and res.path(40689238) == rec / "40689238"
    assert SignalCache(res).get(40689238)[0].shape == (12, 5000)


def _qa_folder(tmp_path, samples, answers=("no", "yes")):
    root = tmp_path / "qa"
    (root / "template" / "train").mkdir(parents=True)
    (root / "answers.csv").write_text("index,class\n" + "".join(
        f"{i},{a}\n" for i, a in enumerate(answers)))
    (root / "template" / "train" / "00000.json").write_text(
        samples if isinstance(samples, str) else json.dumps(samples))
    return root


GOOD = {"template_id": 26, "question_id": 0, "sample_id": 7, "question_type": "single-verify",
        "attribute_type": "noise", "question": "Does this ECG show static noise?",
        "answer": ["no"], "ecg_id": [1], "attribute": ["static noise"]}


@pytest.mark.parametrize("broken,match", [
    ('[{"template_id": 1,', r"00000\.json: malformed JSON at line 1"),
    ('{"a": 1}', "expected a JSON list"),
    ([dict(GOOD, answer=["maybe"])], r"entry 0 \(sample_id 7\): unknown answer 'maybe'"),
    ([GOOD, {k: v for k, v in GOOD.items() if k != "ecg_id"}], r"entry 1: missing field.*ecg_id"),
    ([dict(GOOD, ecg_id=[1, 2])], "needs 1 ecg_id"),
    ([dict(GOOD, question_type="single-guess")], "unknown question_type"),
    ([dict(GOOD, ecg_id=["x"])], "bad field value"),
    ([dict(GOOD, answer=[])], "empty answer"),
    ([dict(GOOD, answer="no")], "bad field value"),
])
def test_malformed_qa_files_name_file_and_entry(tmp_path, broken, match):
    root = _qa_folder(tmp_path, broken)
    with pytest.raises(EcgQaError, match=match) as err:
        load_ecgqa(root)
    assert "00000.json" in str(err.value)


def test_a_good_minimal_file_loads_and_converts_to_hf(tmp_path):
    qa = load_ecgqa(_qa_folder(tmp_path, [GOOD]))
    assert len(qa) == 1 and qa.samples[0].answer == ("no",)
    ds = qa.to_hf_dataset()
    assert ds.num_rows == 1 and ds[0]["question"] == GOOD["question"]


@pytest.mark.parametrize("content,match", [
    ("id,file\n1,x\n", "starts with the header 'ecg_id,path'"),
    ("ecg_id,path\nabc,x\n", "line 2: ecg_id 'abc' is not an integer"),
    ("ecg_id,path\n1,a\n1,b\n", "line 3: ecg_id 1 listed twice"),
    ("ecg_id,path\n1\n", "line 2: expected 'ecg_id,path'"),
])
def test_bad_records_index(tmp_path, content, match):
    (tmp_path / "i.csv").write_text(content)
    with pytest.raises(EcgQaError, match=match):
        RecordsIndex(tmp_path / "i.csv")


def test_not_an_ecgqa_folder_or_resolver(tmp_path):
    with pytest.raises(EcgQaError, match="not an ECG-QA folder"):
        load_ecgqa(tmp_path)
    with pytest.raises(EcgQaError, match="not a records index"):
        make_resolver(tmp_path)


def test_index_paths_relative_to_the_csv(tmp_path):
    rec = tmp_path / "data" / "r1"
    rec.parent.mkdir()
    for ext in (".hea", ".dat"):
        shutil.copy(REAL / "ptbxl" / f"00001_lr{ext}", rec.parent / f"r1{ext}")
    (rec.parent / "r1.hea").write_text((rec.parent / "r1.hea").read_text()
                                       .replace("00001_lr", "r1"))
    idx = write_index(tmp_path / "index.csv", {5: rec})
    assert idx.read_text().splitlines() == ["ecg_id,path", "5,data/r1"]
    moved = tmp_path.parent / (tmp_path.name + "-moved")
    shutil.copytree(tmp_path, moved)
    assert RecordsIndex(moved / "index.csv").path(5) == moved / "data" / "r1"


def test_release_root_with_both_versions_needs_a_source(tmp_path):
    (tmp_path / "release").mkdir()
    for version, ecg in (("ptbxl", 1), ("mimic-iv-ecg", 40689238)):
        folder = _qa_folder(tmp_path / version, [dict(GOOD, ecg_id=[ecg])])
        folder.rename(tmp_path / "release" / version)
    with pytest.raises(EcgQaError, match="holds both"):
        load_ecgqa(tmp_path / "release")
    mimic = load_ecgqa(tmp_path / "release", source="mimic-iv-ecg")
    assert mimic.root.name == "mimic-iv-ecg" and mimic.samples[0].ecg_ids == (40689238,)
