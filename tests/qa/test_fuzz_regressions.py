"""Regression tests for the crash classes the QA fuzz kinds found (tests/fuzz/kinds_qa.py).

Each input gives a correct result or one ``EcgQaError`` (``ChatError`` for ``--shots``) whose
message is one line naming the file; never RecursionError, OverflowError, OSError,
RuntimeError, TypeError, UnicodeDecodeError, BadZipFile, or a half-written file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import signal
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecgqa.chat import ChatError, load_shots
from ecgqa.errors import EcgqaError
from ecgqa.qa.cache import SignalCache
from ecgqa.qa.ecgqa import EcgQaError, QaSample, load_ecgqa, load_qa_file
from ecgqa.qa.resolve import MimicIvEcgLayout, RecordsIndex, make_resolver, write_index
from tests.conftest import ECGQA, REAL

GOOD = {"template_id": 26, "question_id": 0, "sample_id": 7, "question_type": "single-verify",
        "attribute_type": "noise", "question": "Does this ECG show static noise?",
        "answer": ["no"], "ecg_id": [1], "attribute": ["static noise"]}
LONG_NAME = "n" * 300                    # over the 255-byte limit of a file name


def refused(call, error=EcgQaError, match: str | None = None) -> str:
    """The one-line message of the error ``call()`` raises."""
    with pytest.raises(EcgqaError) as ex:
        call()
    msg = str(ex.value)
    assert type(ex.value) is error, f"{type(ex.value).__name__}: {msg}"
    assert msg.strip() and "\n" not in msg.strip(), repr(msg)
    if match is not None:
        assert match in msg, msg
    return msg


def qa_folder(root: Path, train, *, answers_csv: str | None = None) -> Path:
    """A version folder with the real answers.csv and one train shard (list or raw text)."""
    (root / "template" / "train").mkdir(parents=True)
    if answers_csv is None:
        shutil.copy(ECGQA / "ptbxl" / "answers.csv", root)
    else:
        (root / "answers.csv").write_text(answers_csv)
    data = train if isinstance(train, (str, bytes)) else json.dumps(train)
    shard = root / "template" / "train" / "00000.json"
    shard.write_bytes(data.encode() if isinstance(data, str) else data)
    return root


def link_record(folder: Path, src: str = "cinc2021/E07500", name: str | None = None) -> Path:
    """A real record under ``folder`` (symlinks to its files), as ``folder/name``."""
    folder.mkdir(parents=True, exist_ok=True)
    name = name or Path(src).name
    for f in (REAL / src).parent.glob(Path(src).name + ".*"):
        os.symlink(f, folder / (name + f.suffix))
    return folder / name


# --------------------------------------------------------------------------- JSON shards


@pytest.mark.parametrize("text,match", [
    ("[" * 100_000, "nested too deeply"),                                # RecursionError
    (json.dumps([dict(GOOD, question="__X__")]).replace('"__X__"', "[" * 50_000 + "]" * 50_000),
     "nested too deeply"),
    ('[{"sample_id": ' + "9" * 5000 + "}]", "unreadable JSON value"),   # int digit limit
    (b"\xef\xbb\xbf[{", "malformed JSON"),
    (b'[{"question": "\xff"}]', "not UTF-8 text"),                      # UnicodeDecodeError
])
def test_unreadable_json_is_one_error_naming_the_file(tmp_path, text, match):
    root = qa_folder(tmp_path / "qa", text)
    assert "00000.json" in refused(lambda: load_ecgqa(root), match=match)
    assert "00000.json" in refused(lambda: load_qa_file(root / "template/train/00000.json"),
                                   match=match)


def test_a_utf8_bom_is_read(tmp_path):
    root = qa_folder(tmp_path / "qa", b"\xef\xbb\xbf" + json.dumps([GOOD]).encode())
    assert load_ecgqa(root).samples[0].sample_id == 7


@pytest.mark.parametrize("field,value", [
    ("sample_id", math.inf), ("sample_id", -math.inf), ("sample_id", math.nan),  # OverflowError
    ("sample_id", 1.5), ("sample_id", 7.0), ("sample_id", True), ("sample_id", "7"),
    ("question_id", -1), ("template_id", 2 ** 63), ("question_id", 1e308),
    ("ecg_id", [1.0]), ("ecg_id", [True]), ("ecg_id", [-3]),
    ("question", {"text": "x"}), ("question", None), ("question_type", ["single-verify"]),
    ("answer", ["no", 1]), ("answer", [None]), ("attribute", "static noise"),
    ("attribute", [{"a": 1}]), ("question", "\ud800 lone surrogate"),
])
def test_a_field_of_the_wrong_type_is_refused_not_coerced(tmp_path, field, value):
    root = qa_folder(tmp_path / "qa", [dict(GOOD, **{field: value})])
    msg = refused(lambda: load_ecgqa(root), match="bad field value")
    assert "00000.json: entry 0" in msg and field in msg


def test_a_sample_id_with_a_line_break_keeps_the_message_on_one_line(tmp_path):
    root = qa_folder(tmp_path / "qa", [dict(GOOD, sample_id="7\n8\u2028")])
    refused(lambda: load_ecgqa(root), match="00000.json: entry 0 (sample_id '7\\n8")


def test_a_huge_field_value_is_shortened_in_the_message(tmp_path):
    root = qa_folder(tmp_path / "qa", [dict(GOOD, question_type=list(range(100_000)))])
    assert len(refused(lambda: load_ecgqa(root))) < 400


def test_duplicate_sample_ids_are_refused_within_a_split(tmp_path):
    root = qa_folder(tmp_path / "qa", [GOOD, dict(GOOD, question_id=1)])
    refused(lambda: load_ecgqa(root), match="entry 1: sample_id 7 repeats entry 0")
    refused(lambda: load_qa_file(root / "template/train/00000.json"), match="repeats")
    root = qa_folder(tmp_path / "qa2", [GOOD])                      # across shards
    (root / "template/train/00001.json").write_text(json.dumps([GOOD]))
    refused(lambda: load_ecgqa(root), match="sample_id 7 repeats 00000.json#0 (train split)")
    (root / "template/train/00001.json").unlink()                   # across splits: fine
    (root / "template/test").mkdir()
    (root / "template/test/00000.json").write_text(json.dumps([GOOD]))
    assert len(load_ecgqa(root)) == 2


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(sorted(GOOD)),
       value=st.recursive(st.none() | st.booleans() | st.integers() | st.floats()
                          | st.text(max_size=20), lambda c: st.lists(c, max_size=3)
                          | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=8))
def test_any_json_value_in_any_field_gives_a_sample_or_one_error(field, value):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "qa.json")
        path.write_text(json.dumps([dict(GOOD, **{field: value})]))
        try:
            data = load_qa_file(path)
        except EcgQaError as err:
            assert "\n" not in str(err) and "qa.json: entry 0" in str(err)
            return
    s = data.samples[0]
    assert isinstance(s, QaSample)
    assert json.dumps(s.to_json()[field]) == json.dumps(value)     # taken as is, not coerced
    assert all(type(i) is int and i >= 0 for i in s.ecg_ids)


# --------------------------------------------------------------------------- side files


@pytest.mark.parametrize("row,match", [
    ('1,"None"', "classes must be a list of strings"),          # TypeError: not iterable
    ("1,1", "classes must be a list of strings"),
    ("1,'abc'", "classes must be a list of strings"),           # a str is not a list of str
    ('1,"(1+2j)"', "classes must be a list of strings"),
    ('1,"[1, 2]"', "classes must be a list of strings"),
    ('1,"__import__(\'os\')"', "cannot parse classes"),
    ('1,"' + "[" * 1000 + '"', "cannot parse classes"),
    (",\"['no']\"", "template_id '' is not"),
    ("x,\"['no']\"", "template_id 'x' is not"),
    ("1", "expected a value for each of template_id, classes"),   # TypeError: int(None)
])
def test_bad_answers_for_each_template_rows(tmp_path, row, match):
    root = qa_folder(tmp_path / "qa", [GOOD])
    (root / "answers_for_each_template.csv").write_text(f"template_id,classes\n{row}\n")
    assert "answers_for_each_template.csv" in refused(lambda: load_ecgqa(root), match=match)


@pytest.mark.parametrize("answers,match", [
    ("index,class\n0,no\n1\n", "answers.csv: row 2: expected a value"),   # None in the vocab
    ("", "expected columns class"),
    ("index,class\n", "no answers"),
    ("index,class\n0," + "x" * 200_000 + "\n", "field larger than field limit"),
])
def test_bad_answers_csv(tmp_path, answers, match):
    root = qa_folder(tmp_path / "qa", [GOOD], answers_csv=answers)
    refused(lambda: load_ecgqa(root), match=match)


def test_side_files_with_a_bom_are_read(tmp_path):
    root = qa_folder(tmp_path / "qa", [GOOD], answers_csv="\ufeffindex,class\n0,no\n1,yes\n")
    (root / "answers_for_each_template.csv").write_text(
        "\ufefftemplate_id,classes\n26,\"['no', 'yes']\"\n", encoding="utf-8")
    assert load_ecgqa(root).vocab.options(26) == ("no", "yes")


def test_a_split_list_that_is_not_utf8_is_refused(tmp_path):
    root = qa_folder(tmp_path / "qa", [GOOD])
    (root / "train_ecgs.tsv").write_bytes(b"0\t1\n1\t\xed\xa0\x80\n")
    refused(lambda: load_ecgqa(root), match="train_ecgs.tsv: not UTF-8 text")
    (root / "train_ecgs.tsv").write_bytes(b"0\t1\n1\t" + b"9" * 5000 + b"\n")
    refused(lambda: load_ecgqa(root), match="train_ecgs.tsv: line 2")


# --------------------------------------------------------------------------- paths


def test_an_unknown_home_folder_is_an_error_not_runtime_error(tmp_path):
    bad = "~no_such_user_ecgqa_test/x"
    refused(lambda: load_qa_file(bad + ".json"), match="cannot expand '~'")
    refused(lambda: load_ecgqa(bad), match="cannot expand '~'")
    refused(lambda: make_resolver(bad + ".csv"), match="cannot expand '~'")
    refused(lambda: load_shots(bad + ".json", tmp_path), ChatError, "cannot expand '~'")


def test_a_file_name_too_long_is_an_error_not_oserror(tmp_path):
    long = tmp_path / (LONG_NAME + ".json")
    refused(lambda: load_qa_file(long), match="File name too long")
    refused(lambda: make_resolver(tmp_path / LONG_NAME), match="not a records index")
    refused(lambda: load_shots(long, tmp_path), ChatError, "no such file or folder")
    refused(lambda: load_shots(tmp_path / "s.json", tmp_path / LONG_NAME), ChatError)
    (tmp_path / "i.csv").write_text(f"ecg_id,path\n1,{LONG_NAME}\n")
    index = RecordsIndex(tmp_path / "i.csv")
    assert index.path(1) is None and index.available([1]) == set()
    refused(lambda: index.require(1), match="ecg_id 1 not found in records index")


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "qa.json"
    os.mkfifo(fifo)

    def hang(signum, frame):
        raise TimeoutError("blocked reading a FIFO")

    old = signal.signal(signal.SIGALRM, hang)
    signal.setitimer(signal.ITIMER_REAL, 5.0)
    try:
        refused(lambda: load_qa_file(fifo), match="not a regular file")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# --------------------------------------------------------------------------- records index


def test_index_paths_may_not_climb_out_of_the_index_folder(tmp_path):
    rec = link_record(tmp_path / "outside")
    (tmp_path / "qa").mkdir()
    for bad in ("../outside/E07500", "records/../../outside/E07500", "..", "../../etc/passwd",
                ".", "x/.."):                     # "." would read the folder's own NAME.hea
        (tmp_path / "qa" / "i.csv").write_text(f"ecg_id,path\n1,{bad}\n")
        refused(lambda: RecordsIndex(tmp_path / "qa" / "i.csv"), match="leaves the folder")
    (tmp_path / "qa" / "i.csv").write_text(f"ecg_id,path\n1,{rec}\n2,./x/../E\n")
    index = RecordsIndex(tmp_path / "qa" / "i.csv")               # absolute: the contract
    assert index.path(1) == rec and index.path(2) is None


def test_index_entries_that_are_links_loops_or_nul_are_not_found_or_refused(tmp_path):
    link_record(tmp_path / "records")
    rec = tmp_path / "records"
    (rec / "loop.hea").symlink_to("loop2.hea")
    (rec / "loop2.hea").symlink_to("loop.hea")
    (rec / "dangling.hea").symlink_to("nowhere.hea")
    (tmp_path / "i.csv").write_text("\ufeffecg_id,path\r\n1,records/E07500\r\n"
                                    "2,records/loop\r\n3,records/dangling\r\n4,~name/x\r\n")
    index = RecordsIndex(tmp_path / "i.csv")                      # a BOM and CRLF are fine
    assert index.available([1, 2, 3, 4]) == {1}
    (tmp_path / "i.csv").write_text("ecg_id,path\n1,records/E\x00\n")
    refused(lambda: RecordsIndex(tmp_path / "i.csv"), match="contains a NUL byte")


@pytest.mark.parametrize("ecg_id", ["-5", "1.0", "\u0661", "1_000", "9" * 5000, "0x10", ""])
def test_index_ids_are_plain_non_negative_integers(tmp_path, ecg_id):
    (tmp_path / "i.csv").write_text(f"ecg_id,path\n{ecg_id},x\n")
    assert len(refused(lambda: RecordsIndex(tmp_path / "i.csv"))) < 300


@pytest.mark.parametrize("listing,match", [
    ("study_id,path\nx,files/a\n", "study_id 'x' is not an integer"),      # ValueError
    ("subject_id,study_id,path\n1,2\n", "line 2: expected 3 columns"),     # TypeError
    (b"study_id,path\n1,files/\xbe\n", "record_list.csv: not UTF-8 text"),   # UnicodeDecodeError
    ('study_id,path\n1,"' + "x" * 200_000 + '"\n', "field larger than field limit"),
    ("study_id,path\n1,../../etc/passwd\n", "leaves the folder"),
])
def test_bad_mimic_record_lists(tmp_path, listing, match):
    f = tmp_path / "record_list.csv"
    f.write_bytes(listing if isinstance(listing, bytes) else listing.encode())
    refused(lambda: MimicIvEcgLayout(tmp_path), match=match)


def test_write_index_leaves_nothing_behind_when_it_fails(tmp_path):
    out = tmp_path / "i.csv"
    with pytest.raises(ValueError):                     # a programming error stays one
        write_index(out, {1: tmp_path / "a", 2: "b\x00c"})
    assert list(tmp_path.iterdir()) == []


_NAME = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
                min_size=1, max_size=40).filter(
    lambda n: n == n.strip() and n not in (".", "..") and not n.startswith("~")
    and Path(n).suffix.lower() not in (".hea", ".dat", ".mat") and len(n.encode()) < 200)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.integers(0, 2 ** 63 - 1), _NAME, min_size=1, max_size=5))
def test_write_index_round_trips_any_names(records):
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp).resolve()
        write_index(base / "i.csv", {k: base / v for k, v in records.items()})
        index = RecordsIndex(base / "i.csv")
        assert {k: index._paths[k] for k in index.ids()} == \
            {k: base / v for k, v in records.items()}


def _csv(rows: list[tuple[str, str]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue().encode("utf-8", "surrogatepass")


_TRICKY = ["..", "../a", "a/../..", ".", "a/..", "~", "~/a", "~a/x", "/abs", "a\x00", " a ",
           "a.hea", ""]
_ROWS = st.lists(st.tuples(st.integers(0, 99).map(str) | st.text("0123456789 -_.x", max_size=6),
                           st.sampled_from(_TRICKY) | st.text("./a~ \x00\"\n,", max_size=12)
                           | st.text(max_size=12)),
                 max_size=5).map(_csv)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | _ROWS)
def test_any_records_index_bytes_give_an_index_or_one_error(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "i.csv")
        path.write_bytes(b"ecg_id,path\n" + data)
        try:
            index = RecordsIndex(path)
        except EcgQaError as err:
            assert "\n" not in str(err).strip()
            return
        for i in index.ids():
            assert type(i) is int and i >= 0 and index.path(i) is None  # nothing exists there
            p = str(index._paths[i])                 # a relative entry stays in the folder
            assert not p.startswith(tmp) or os.path.normpath(p).startswith(tmp + os.sep), p


# --------------------------------------------------------------------------- signal cache


def _index(tmp_path: Path, name: str = "E07500") -> RecordsIndex:
    link_record(tmp_path / "records", name=name)
    if name != "E07500":                              # the header names E07500.mat
        os.symlink(REAL / "cinc2021/E07500.mat", tmp_path / "records/E07500.mat")
    with open(tmp_path / "i.csv", "w", newline="") as f:
        csv.writer(f).writerows([["ecg_id", "path"], [7500, f"records/{name}"]])
    return RecordsIndex(tmp_path / "i.csv")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong-shape", "wrong-dtype"])
def test_a_damaged_cache_entry_is_read_again(tmp_path, damage):
    index = _index(tmp_path)
    first = SignalCache(index, cache_dir=tmp_path / "cache").get(7500)[0]
    (entry,) = (tmp_path / "cache").rglob("*.npz")
    data = entry.read_bytes()
    if damage == "truncate":                          # zipfile.BadZipFile before
        entry.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        entry.write_bytes(data[:200] + b"\0" * 64 + data[264:])
    else:
        sig = np.zeros((3, 7), np.float32) if damage == "wrong-shape" else first.astype(np.float64)
        with open(entry, "wb") as f:
            np.savez(f, signal=sig, mask=np.ones(sig.shape[0], bool))
    again = SignalCache(index, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(again.get(7500)[0], first)
    assert again.reads == 1


def test_a_record_name_with_glob_characters_is_cached(tmp_path):
    index = _index(tmp_path, name="a**b[1]")         # pathlib glob: ValueError before
    sig = SignalCache(index, cache_dir=tmp_path / "cache").get(7500)[0]
    again = SignalCache(index, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(again.get(7500)[0], sig)
    assert again.reads == 0


def test_an_unwritable_cache_folder_costs_only_the_disk_copy(tmp_path):
    (tmp_path / "cache").write_text("a file where the folder should be")
    cache = SignalCache(_index(tmp_path), cache_dir=tmp_path / "cache")
    assert cache.get(7500)[0].shape == (12, 5000)


# --------------------------------------------------------------------------- shots


def _shots(tmp_path: Path) -> Path:
    link_record(tmp_path / "records")
    (tmp_path / "records_index.csv").write_text("ecg_id,path\n7500,records/E07500\n")
    path = tmp_path / "shots.json"
    path.write_text(json.dumps([dict(GOOD, ecg_id=[7500]), dict(GOOD, sample_id=8,
                                                                 ecg_id=[7500])]))
    return path


@pytest.mark.parametrize("limit", [0, -1, 1.5, True])
def test_shots_limit_must_be_a_positive_integer(tmp_path, limit):
    path = _shots(tmp_path)
    refused(lambda: load_shots(path, limit=limit), ChatError, "--max-shots")
    samples, _ = load_shots(path, limit=1)
    assert len(samples) == 1


def test_shots_errors_are_chat_errors_on_one_line(tmp_path):
    path = _shots(tmp_path)
    path.write_text("[" * 100_000)
    refused(lambda: load_shots(path), ChatError, "--shots: ")
    path.write_text(json.dumps([dict(GOOD, sample_id="a\nb", ecg_id=[7500])]))
    refused(lambda: load_shots(path), ChatError, "bad field value")
    (tmp_path / "records_index.csv").write_text("ecg_id,path\n7500,../x\n")
    path.write_text(json.dumps([dict(GOOD, ecg_id=[7500])]))
    refused(lambda: load_shots(path), ChatError, "leaves the folder")
