"""``ecgqa data merge``: real PTB-XL label questions and synthetic ones in one QA folder."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from ecgqa.cli import main
from ecgqa.qa.ecgqa import load_ecgqa
from ecgqa.qa.merge import MergeError, id_offset, merge_qa
from ecgqa.qa.resolve import RecordsIndex
from tests.conftest import SHARED_DATA

PTBXL = SHARED_DATA / "ptbxl-zscore-250hz"


@pytest.fixture(scope="module")
def ptbxl_small(tmp_path_factory) -> Path:
    """Label questions of the first 120 shared PTB-XL records (no measuring)."""
    from ecgqa.qa.labelqa import build_label_qa
    from ecgqa.qa.labels import read_label_table

    folder = tmp_path_factory.mktemp("labels")
    with open(PTBXL / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:120]
    for r in rows:
        r["path"] = str(PTBXL / r["path"])
    table = folder / "labels.csv"
    with open(table, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = folder / "qa"
    build_label_qa(read_label_table(table), out, seed=0)
    return out


@pytest.mark.parametrize("max_id, offset", [(0, 10), (9, 10), (10, 100), (300, 1000),
                                            (21837, 100000), (99999, 100000),
                                            (100000, 1000000)])
def test_id_offset_is_past_the_largest_id(max_id, offset):
    assert id_offset(max_id) == offset > max_id


def test_merged_folder_holds_both_sources_with_their_records(ptbxl_small, synth_qa, tmp_path):
    """Every question of both sources, with its ECG ids shifted for the second source only,
    each id still naming the same record file and the same split; classes of both."""
    out = merge_qa([ptbxl_small, synth_qa], tmp_path / "mixed").out
    merged = load_ecgqa(out)
    real, synth = load_ecgqa(ptbxl_small), load_ecgqa(synth_qa)
    assert len(merged) == len(real) + len(synth)
    offset = json.loads((out / "sources.json").read_text())[1]["ecg_id_offset"]
    index = RecordsIndex(ptbxl_small / "records_index.csv")
    assert offset > max(index.ids())

    def key(s, shift=0):
        return s.split, s.template_id, s.question, s.answer, tuple(e + shift for e in s.ecg_ids)

    assert sorted(map(key, merged.samples)) == sorted([*map(key, real.samples),
                                                       *(key(s, offset) for s in synth.samples)])
    index_m = RecordsIndex(out / "records_index.csv")
    index_s = RecordsIndex(synth_qa / "records_index.csv")
    assert len(index_m) == len(index) + len(index_s)
    for i in index.ids()[:5]:
        assert index_m.path(i) == index.path(i).resolve()
    for i in index_s.ids()[:5]:
        assert index_m.path(i + offset) == index_s.path(i).resolve()
    for split, ids in synth.split_ecgs.items():
        assert {i + offset for i in ids} <= merged.split_ecgs[split]
    assert set(real.vocab.answers) | set(synth.vocab.answers) == set(merged.vocab.answers)
    moved = shutil.move(out, tmp_path / "elsewhere")          # absolute paths: movable
    assert RecordsIndex(Path(moved) / "records_index.csv").path(index.ids()[0]) is not None


def test_one_template_id_of_two_kinds_is_refused(synth_qa, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(synth_qa, other, ignore=shutil.ignore_patterns("records"))
    shard = sorted((other / "template" / "train").glob("*.json"))[0]
    rows = json.loads(shard.read_text())
    rows[0]["question_type"] = ("single-query" if rows[0]["question_type"] != "single-query"
                                else "single-verify")
    for r in rows:
        if r["template_id"] == rows[0]["template_id"]:
            r["question_type"] = rows[0]["question_type"]
    shard.write_text(json.dumps(rows))
    with pytest.raises(MergeError, match=f"template {rows[0]['template_id']} is a"):
        merge_qa([synth_qa, other], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_errors_are_one_line_and_write_nothing(synth_qa, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(synth_qa, bare, ignore=shutil.ignore_patterns("records"))
    (bare / "records_index.csv").unlink()
    assert main(["data", "merge", str(synth_qa), str(bare), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no records_index.csv" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()
    assert main(["data", "merge", str(synth_qa), "--out", str(tmp_path / "o")]) == 2
    assert "two or more" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert main(["data", "merge", str(synth_qa), str(synth_qa), "--out",
                 str(tmp_path / "full")]) == 2
    assert "not an empty folder" in capsys.readouterr().err


def test_cli_merges_and_says_what(synth_qa, ptbxl_small, tmp_path, capsys):
    assert main(["data", "merge", str(synth_qa), str(ptbxl_small), "--out",
                 str(tmp_path / "m")]) == 0
    said = capsys.readouterr().out
    assert "questions train" in said and f"+{id_offset(300)}" in said
