"""Crashes the record fuzzer (eval/fuzz.py, tests/fuzz/kinds_records.py) found, one test per
crash class, plus a hypothesis property over every field of a real header's signal lines.

Each broken record must give one EcgRecordError line (the library's user error) and never
another exception or a multi-GB allocation.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecgqa.cli import main
from ecgqa.errors import EcgqaError
from ecgqa.records.read import EcgRecordError, read_record
from tests.conftest import REAL
from tests.fuzz.harness import address_space_cap

BASE = REAL / "ptbxl" / "00001_lr.hea"           # WFDB format 16, 12 leads, 100 Hz


def _copy(tmp: Path, src: Path = BASE) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    for f in src.parent.glob(src.stem + ".*"):
        shutil.copy(f, tmp / f.name)
    return tmp / src.name


def _edit_signal_lines(hea: Path, index: int, value: str) -> Path:
    lines = hea.read_text().splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        f = line.split()
        if not line.startswith("#") and len(f) > index:
            f[index] = value
            line = " ".join(f)
        out.append(line)
    hea.write_text("\n".join(out) + "\n")
    return hea


def _refused(path, **kw) -> str:
    with pytest.raises(EcgRecordError) as err:
        read_record(path, **kw)
    msg = str(err.value)
    assert "\n" not in msg and msg.strip()
    return msg


def test_a_signal_file_name_too_long_for_the_system_is_refused(tmp_path):
    # was OSError: [Errno 36] File name too long (Path.is_file on the 300-character name)
    hea = _edit_signal_lines(_copy(tmp_path), 0, "x" * 300 + ".dat")
    assert "signal file" in _refused(hea)


def test_a_record_path_too_long_for_the_system_is_refused(tmp_path):
    msg = _refused(tmp_path / ("y" * 300 + ".hea"))
    assert "cannot look up" in msg or "no such" in msg


@pytest.mark.parametrize("name", ["../00001_lr.dat", "/etc/passwd", ".", ".."])
def test_a_signal_file_outside_the_header_folder_is_refused(tmp_path, name):
    hea = _copy(tmp_path / "in")
    shutil.copy(tmp_path / "in" / "00001_lr.dat", tmp_path / "00001_lr.dat")
    msg = _refused(_edit_signal_lines(hea, 0, name))       # wfdb's header syntax or ours
    assert "beside the header" in msg or "invalid syntax in signal line" in msg, msg


@pytest.mark.parametrize("fs", ["1.6", "1e-9", "0.5", "49"])
def test_a_sampling_rate_too_low_for_an_ecg_is_refused(tmp_path, fs):
    # was scipy's ValueError: Wn[0] must be less than Wn[1] (no room for the band-pass)
    hea = _copy(tmp_path)
    lines = hea.read_text().splitlines()
    f = lines[0].split()
    f[2] = fs
    hea.write_text("\n".join([" ".join(f), *lines[1:]]) + "\n")
    assert "too low" in _refused(hea, fs=100, duration_s=5)


def test_the_lowest_accepted_rate_still_reads(tmp_path):
    hea = _copy(tmp_path)
    lines = hea.read_text().splitlines()
    f = lines[0].split()
    f[2] = "50"
    hea.write_text("\n".join([" ".join(f), *lines[1:]]) + "\n")
    rec = read_record(hea)
    assert rec.fs == 50 and np.isfinite(rec.signal).all()


def test_a_lead_selection_with_no_recorded_lead_is_refused(tmp_path):
    # was accepted as an all-zero record: every requested lead missing, nothing to read
    hea = _edit_signal_lines(_copy(tmp_path), 8, "Resp")      # every channel renamed
    msg = _refused(hea, leads="12-lead")
    assert "none of the requested leads" in msg
    only_v1 = read_record(BASE, leads="V1")                    # one lead that is there: read
    assert only_v1.lead_mask.tolist() == [True]


def _multisegment(d: Path, master_first_line: str | None = None,
                  segments: list[str] | None = None) -> Path:
    import wfdb

    d.mkdir(parents=True, exist_ok=True)
    t = np.arange(1000) / 250
    sig = np.stack([np.sin(2 * np.pi * 1.1 * t + k) for k in range(3)], axis=1)
    for s in (1, 2):
        wfdb.wrsamp(f"m_{s}", fs=250, units=["mV"] * 3, sig_name=["I", "II", "V1"],
                    p_signal=sig[(s - 1) * 500: s * 500], fmt=["16"] * 3, write_dir=str(d))
    (d / "m_layout.hea").write_text("m_layout 3 250 0\n" + "".join(
        f"~ 0 200/mV 16 0 0 0 0 {lead}\n" for lead in ("I", "II", "V1")))
    lines = [master_first_line or "m/3 3 250 1000", "m_layout 0",
             *(segments or ["m_1 500", "m_2 500"])]
    (d / "m.hea").write_text("\n".join(lines) + "\n")
    return d / "m.hea"


def test_a_valid_multi_segment_record_reads(tmp_path):
    # its adc_gain is None: was TypeError in the known-gain check
    rec = read_record(_multisegment(tmp_path), fs=500, duration_s=4, leads="12-lead")
    assert rec.signal.shape == (12, 2000)
    assert rec.lead_mask.sum() == 3


@pytest.mark.parametrize("first,segments,expect", [
    # was a 22 GB allocation (OOM kill): 2^31 signals declared
    ("m/3 2147483648 250 1000", None, "signals declared"),
    # was IndexError in the amplitude check (a 0.0001 Hz record has no sample in 5 minutes)
    ("m/3 3 0.0001 1000", None, "too low"),
    ("m/3 3 250 999999", None, "mismatch"),
    ("m/3 3 250 1000", ["m 500", "m_2 500"], "record itself"),
    ("m/3 3 250 1000", ["m_1 500", "m_9 500"], "m_9.hea is missing"),
    ("m/9 3 250 1000", None, "segments declared"),
])
def test_broken_multi_segment_records_are_refused(tmp_path, first, segments, expect):
    hea = _multisegment(tmp_path, first, segments)
    with address_space_cap(2):           # a regression to the allocation fails, not OOM-kills
        msg = _refused(hea)
    assert expect in msg, msg


def test_the_cli_turns_each_into_one_line_and_exit_2(tmp_path, capsys):
    hea = _edit_signal_lines(_copy(tmp_path), 0, "x" * 300 + ".dat")
    out = tmp_path / "plot" / "x.png"
    assert main(["plot", str(hea), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ecgqa: error:") and err.count("\n") == 1
    assert not out.exists() and not out.parent.exists()


FIELD_VALUES = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"),
            min_size=0, max_size=40),
    st.integers(-2**40, 2**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["16x0", "16+99999999999", "212", "0/mV", "1e-320/mV", "200(0)/NU"]),
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=st.integers(0, 9), value=FIELD_VALUES, every=st.booleans())
def test_any_value_in_any_signal_field_reads_or_gives_one_error(tmp_path_factory, index,
                                                               value, every):
    d = tmp_path_factory.mktemp("h")
    hea = _copy(d)
    lines = hea.read_text().splitlines()
    out = [lines[0]]
    for k, line in enumerate(lines[1:]):
        f = line.split()
        if every or k == 0:
            f = f + [""] * max(0, index + 1 - len(f))
            f[index] = value
        out.append(" ".join(f))
    hea.write_bytes(("\n".join(out) + "\n").encode("utf-8", errors="surrogatepass"))
    try:
        rec = read_record(hea, fs=100, duration_s=5, leads="12-lead")
    except EcgqaError as err:
        assert isinstance(err, EcgRecordError) and "\n" not in str(err)
    else:
        assert rec.signal.shape == (12, 500) and np.isfinite(rec.signal).all()
        assert rec.lead_mask.any()
