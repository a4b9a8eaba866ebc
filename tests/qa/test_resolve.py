"""ecg_id -> record path: records index CSV, PTB-XL and MIMIC-IV-ECG layouts, on real records
from ../shared/data/real (linked, not copied)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ecgqa.qa.ecgqa import EcgQaError
from ecgqa.qa.resolve import (
    MimicIvEcgLayout,
    PtbxlLayout,
    RecordsIndex,
    find_ptbxl_records,
    make_resolver,
    write_index,
)
from ecgqa.records.read import read_record
from tests.conftest import REAL, REAL_PTBXL_RECORDS, write_real_index


def _link(src: str, folder: Path, name: str | None = None) -> Path:
    """The real record ``src`` (``cinc2021/E07500``) as ``folder/name`` (links to its files)."""
    folder.mkdir(parents=True, exist_ok=True)
    name = name or Path(src).name
    for f in (REAL / src).parent.glob(Path(src).name + ".*"):
        (folder / (name + f.suffix)).symlink_to(f)
    return folder / name


def _index(tmp_path: Path, body: str, name: str = "i.csv") -> Path:
    f = tmp_path / name
    f.write_text("ecg_id,path\n" + body)
    return f


# --------------------------------------------------------------------------- records index


def test_an_index_of_the_real_ptbxl_records_finds_and_reads_them(tmp_path):
    index = RecordsIndex(write_real_index(tmp_path / "index.csv"))
    assert index.ids() == sorted(REAL_PTBXL_RECORDS) and len(index) == len(REAL_PTBXL_RECORDS)
    for ecg_id, rel in REAL_PTBXL_RECORDS.items():
        assert index.path(ecg_id) == REAL / rel == index.require(ecg_id)
    assert index.available([1, 2, 4, 6009, 99999]) == {1, 2, 6009}
    rec = read_record(index.path(6003))
    assert rec.signal.shape[0] == 12 and rec.fs == 500


def test_write_index_writes_paths_under_its_folder_relative_and_others_absolute(tmp_path):
    inside = _link("cinc2021/E07500", tmp_path / "qa" / "records")
    path = write_index(tmp_path / "qa" / "i.csv", {7: REAL / "cinc2021" / "E07501", 3: inside})
    lines = path.read_text().splitlines()
    assert lines == ["ecg_id,path", "3,records/E07500", f"7,{(REAL / 'cinc2021/E07501').resolve()}"]
    assert sorted(os.listdir(path.parent)) == ["i.csv", "records"]      # no temporary left
    index = RecordsIndex(path)
    assert index.path(3) == inside and index.path(7) == (REAL / "cinc2021/E07501").resolve()


def test_relative_paths_are_read_against_the_index_folder_not_the_working_folder(
        tmp_path, monkeypatch):
    _link("cinc2021/E07500", tmp_path / "qa" / "records")
    f = _index(tmp_path / "qa", "1,records/E07500\n")
    monkeypatch.chdir(tmp_path)
    index = RecordsIndex(Path("qa") / "i.csv")
    assert index.path(1) == Path("qa") / "records" / "E07500"
    assert read_record(index.path(1)).signal.shape == (12, 5000)
    assert RecordsIndex(f).path(1) == tmp_path / "qa" / "records" / "E07500"


@pytest.mark.parametrize("spelling", ["records/E07500.hea", "records/E07500.mat",
                                      "records/E07500.HEA", " records/E07500 "])
def test_a_path_given_with_its_extension_or_spaces_names_the_record(tmp_path, spelling):
    rec = _link("cinc2021/E07500", tmp_path / "records")
    assert RecordsIndex(_index(tmp_path, f"7500,{spelling}\n")).path(7500) == rec


def test_a_listed_record_that_is_not_there_is_not_available(tmp_path):
    (tmp_path / "records" / "folder.hea").mkdir(parents=True)          # not a file
    index = RecordsIndex(_index(tmp_path, "1,records/missing\n2,records/folder\n"))
    assert index.ids() == [1, 2] and index.available([1, 2]) == set()
    assert index.path(1) is None and index.raw_path(1) == tmp_path / "records" / "missing"
    with pytest.raises(EcgQaError, match=r"^train/00000\.json#4: ecg_id 2 not found in records "
                       r"index .*i\.csv$"):
        index.require(2, "train/00000.json#4")
    with pytest.raises(EcgQaError, match="^ecg_id 3 not found in records index"):
        index.require(3)
    with pytest.raises(KeyError):
        index.raw_path(3)


def test_the_header_may_have_spaces_and_more_columns_and_blank_lines_are_skipped(tmp_path):
    rec = _link("cinc2021/E07500", tmp_path / "records")
    f = tmp_path / "i.csv"
    f.write_text(" ecg_id , path ,note\n\n1,records/E07500,first\n,\n")
    assert RecordsIndex(f).ids() == [1] and RecordsIndex(f).path(1) == rec


@pytest.mark.parametrize("text,match", [
    ("", "starts with the header 'ecg_id,path'"),
    ("path,ecg_id\nx,1\n", "starts with the header 'ecg_id,path'"),
    ("1,records/a\n", "starts with the header 'ecg_id,path'"),            # no header at all
    ("ecg_id,path\n\n1,a\n1,b\n", "line 4: ecg_id 1 listed twice"),
    ("ecg_id,path\n1,a\n2\n", "line 3: expected 'ecg_id,path'"),
    ("ecg_id,path\n1,  \n", "line 2: expected 'ecg_id,path'"),
    ("ecg_id,path\nabc,a\n", "line 2: ecg_id 'abc' is not an integer (0 or more)"),
    ("ecg_id,path\n1,../a\n", "line 2: path '../a' leaves the folder"),
])
def test_a_malformed_index_names_the_file_and_line(tmp_path, text, match):
    f = tmp_path / "i.csv"
    f.write_text(text)
    with pytest.raises(EcgQaError) as err:
        RecordsIndex(f)
    assert match in str(err.value) and str(err.value).startswith(str(f))


def test_a_missing_index_is_an_error(tmp_path):
    with pytest.raises(EcgQaError, match="records index not found"):
        RecordsIndex(tmp_path / "none.csv")


def test_write_index_replaces_an_old_index_whole_or_not_at_all(tmp_path):
    path = write_index(tmp_path / "i.csv", {1: tmp_path / "a", 2: tmp_path / "b"})
    before = path.read_text()
    with pytest.raises(ValueError):                          # a NUL in a path: half-way
        write_index(path, {1: tmp_path / "c", 2: "d\x00e"})
    assert path.read_text() == before and os.listdir(tmp_path) == ["i.csv"]
    write_index(path, {5: tmp_path / "e"})
    assert RecordsIndex(path).ids() == [5]


def test_write_index_leaves_no_temporary_file_when_the_rename_fails(tmp_path):
    (tmp_path / "i.csv").mkdir()
    with pytest.raises(OSError):
        write_index(tmp_path / "i.csv", {1: tmp_path / "a"})
    assert os.listdir(tmp_path) == ["i.csv"]


# --------------------------------------------------------------------------- PTB-XL layout


def _ptbxl(tmp_path: Path) -> Path:
    """A PTB-XL download of 00001 (100 and 500 Hz, the latter a Challenge copy) and 06000."""
    root = tmp_path / "ptbxl"
    _link("ptbxl/00001_lr", root / "records100" / "00000")
    _link("cinc2020/HR00001", root / "records500" / "00000", "00001_hr")
    _link("cinc2021/HR06000", root / "records500" / "06000", "06000_hr")
    return root


def test_ptbxl_layout_prefers_500_hz_and_falls_back_to_100_hz(tmp_path):
    root = _ptbxl(tmp_path)
    res = make_resolver(root)
    assert isinstance(res, PtbxlLayout) and res.folders == ["records500", "records100"]
    assert res.path(1) == root / "records500" / "00000" / "00001_hr"
    assert res.path(6000) == root / "records500" / "06000" / "06000_hr"   # thousands folder
    assert res.path(2) is None and res.available([1, 2, 6000]) == {1, 6000}
    low = PtbxlLayout(root, prefer="records100")
    assert low.path(1) == root / "records100" / "00000" / "00001_lr"
    assert low.path(6000) == root / "records500" / "06000" / "06000_hr"
    with pytest.raises(EcgQaError, match=r"ecg_id 2 not found in PTB-XL folder .*ptbxl"):
        res.require(2)


def test_a_folder_without_records_folders_is_not_ptbxl(tmp_path):
    with pytest.raises(EcgQaError, match="not a PTB-XL folder"):
        PtbxlLayout(tmp_path)


# --------------------------------------------------------------------------- MIMIC-IV-ECG


def test_mimic_layout_maps_study_ids_through_the_record_list(tmp_path):
    root = tmp_path / "mimic"
    rec = _link("cinc2021/E07500", root / "files" / "p1000" / "p10000032" / "s40689238",
                "40689238")
    (root / "record_list.csv").write_text(
        "subject_id,study_id,file_name,ecg_time,path\n"
        "10000032,40689238,40689238,2180-07-23 08:44:00,files/p1000/p10000032/s40689238/40689238\n"
        "\n"
        "10000032,40689239,40689239,2180-07-24 08:44:00,files/p1000/p10000032/s40689239/40689239\n")
    res = MimicIvEcgLayout(root)
    assert res.path(40689238) == rec and res.path(40689239) is None
    assert res.available([40689238, 40689239, 1]) == {40689238}
    with pytest.raises(EcgQaError, match="ecg_id 40689239 not found in MIMIC-IV-ECG folder"):
        res.require(40689239)


@pytest.mark.parametrize("listing,match", [
    (None, "not a MIMIC-IV-ECG folder (no record_list.csv)"),
    ("", "expected columns study_id and path"),
    ("subject_id,file_name,path\n1,a,files/a\n", "expected columns study_id and path"),
    ("study_id,path\n1,\n", "line 2: expected 2 columns (study_id, path)"),
])
def test_a_bad_mimic_folder_is_an_error(tmp_path, listing, match):
    if listing is not None:
        (tmp_path / "record_list.csv").write_text(listing)
    with pytest.raises(EcgQaError) as err:
        MimicIvEcgLayout(tmp_path)
    assert match in str(err.value)


# --------------------------------------------------------------------------- make_resolver


def test_make_resolver_picks_the_layout_from_the_path(tmp_path):
    index = write_real_index(tmp_path / "qa" / "records_index.csv")
    assert isinstance(make_resolver(index), RecordsIndex)
    inside = make_resolver(tmp_path / "qa")                 # a folder holding the index
    assert isinstance(inside, RecordsIndex) and inside.csv_path == index
    assert isinstance(make_resolver(_ptbxl(tmp_path)), PtbxlLayout)
    (tmp_path / "mimic").mkdir()
    (tmp_path / "mimic" / "record_list.csv").write_text("study_id,path\n")
    assert isinstance(make_resolver(tmp_path / "mimic"), MimicIvEcgLayout)


@pytest.mark.parametrize("where", ["empty", "missing"])
def test_make_resolver_names_what_it_looked_for(tmp_path, where):
    target = tmp_path / where
    if where == "empty":
        target.mkdir()
    with pytest.raises(EcgQaError, match="not a records index CSV, PTB-XL folder .* or "
                       r"MIMIC-IV-ECG folder \(record_list.csv\)"):
        make_resolver(target)


# --------------------------------------------------------------------------- finding PTB-XL


def test_find_ptbxl_records_in_the_real_folders_gives_the_known_ecg_ids():
    """PTB-XL's 00001_lr and the Challenge copies HR00001-3 and HR06000-9: ecg_id 1 is
    PTB-XL's own record, not its copy; E/A/Q/S/JS records carry no ecg_id."""
    want = {k: REAL / v for k, v in REAL_PTBXL_RECORDS.items()}
    folders = [REAL / "ptbxl", REAL / "cinc2020", REAL / "cinc2021", REAL / "code15"]
    assert find_ptbxl_records(folders) == want
    assert find_ptbxl_records(reversed(folders)) == want        # the rank, not the order
    assert list(find_ptbxl_records(folders)) == sorted(want)


def test_find_ptbxl_records_searches_sub_folders_and_takes_the_first_sorted_copy(tmp_path):
    _link("cinc2021/HR06001", tmp_path / "b", "HR06001")
    _link("cinc2021/HR06001", tmp_path / "a" / "deep", "HR06001")
    _link("cinc2021/HR06002", tmp_path / "c", "06002_hr")
    _link("cinc2021/HR06002", tmp_path / "a", "HR06002")
    found = find_ptbxl_records([tmp_path])
    assert found == {6001: tmp_path / "a" / "deep" / "HR06001",
                     6002: tmp_path / "c" / "06002_hr"}           # PTB-XL's name wins


@pytest.mark.parametrize("name", ["HR0600", "HR060001", "06000_xx", "06000", "x06000_hr",
                                  "hr06000"])
def test_find_ptbxl_records_ignores_other_names(tmp_path, name):
    _link("cinc2021/HR06000", tmp_path, name)
    assert find_ptbxl_records([tmp_path]) == {}


def test_find_ptbxl_records_refuses_a_path_that_is_not_a_folder(tmp_path):
    with pytest.raises(EcgQaError, match="not a folder"):
        find_ptbxl_records([tmp_path / "missing"])
    with pytest.raises(EcgQaError, match="not a folder"):
        find_ptbxl_records([REAL / "ptbxl" / "00001_lr.hea"])
