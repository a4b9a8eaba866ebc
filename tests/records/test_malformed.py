"""A corpus of malformed ECG files: each gives one EcgRecordError line, never a traceback.

Files are generated in tmp_path from a valid WFDB record (and a valid Challenge .hea/.mat
pair), then broken one way each; the deliberately broken CODE-15 copies of
../shared/data/real are in the corpus too. Every case goes through ``read_record`` and
through the CLI (``ecgqa info``), which must exit 2 with one line on stderr.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ecgqa.cli import main
from ecgqa.records.read import EcgRecordError, read_record
from tests.conftest import REAL

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def _valid_signal(n: int = 5000, fs: int = 500) -> np.ndarray:
    t = np.arange(n) / fs
    beats = np.exp(-((t[:, None] % 0.8 - 0.4) ** 2) / 0.0005)        # one "QRS" per 0.8 s
    return (beats * np.linspace(0.5, 1.5, 12) + 0.05 * np.sin(2 * np.pi * t)[:, None])


def write_wfdb(folder: Path, name: str = "rec", fmt: str = "16", n: int = 5000) -> Path:
    import wfdb

    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(name, fs=500, units=["mV"] * 12, sig_name=LEADS, p_signal=_valid_signal(n),
                fmt=[fmt] * 12, adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(folder),
                comments=["Age: 50", "Sex: Female", "Dx: 426783006"])
    return folder / f"{name}.hea"


def write_challenge(folder: Path, name: str = "A9999") -> Path:
    """A PhysioNet Challenge style pair: .mat (key `val`, int16 digital) + .hea."""
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    val = np.round(_valid_signal() * 1000).astype(np.int16).T        # (12, 5000)
    savemat(folder / f"{name}.mat", {"val": val}, format="4")
    size = (folder / f"{name}.mat").stat().st_size
    offset = size - val.size * 2
    lines = [f"{name} 12 500 5000"] + [
        f"{name}.mat 16+{offset} 1000/mV 16 0 {val[i, 0]} 0 0 {lead}"
        for i, lead in enumerate(LEADS)
    ] + ["# Age: 61", "# Sex: Male", "# Dx: 426783006"]
    (folder / f"{name}.hea").write_text("\n".join(lines) + "\n")
    return folder / f"{name}.hea"


def _edit_header(hea: Path, fn) -> Path:
    lines = hea.read_text().splitlines()
    hea.write_text("\n".join(fn(lines)) + "\n")
    return hea


def _record_line(fields_fn):
    def fn(lines):
        f = lines[0].split()
        return [" ".join(fields_fn(f))] + lines[1:]
    return fn


def _signal_field(index: int, value: str):
    def fn(lines):
        out = [lines[0]]
        for line in lines[1:]:
            if line.startswith("#"):
                out.append(line)
                continue
            f = line.split()
            f[index] = value
            out.append(" ".join(f))
        return out
    return fn


def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _dat_fill(hea: Path, value: int) -> Path:
    dat = hea.with_suffix(".dat")
    dat.write_bytes(np.full(5000 * 12, value, dtype="<i2").tobytes())
    return hea


# Each case: (id, builder(tmp) -> path to read, substring the message must contain)
def _cases():
    c = []

    def case(cid, expect):
        def deco(fn):
            c.append((cid, fn, expect))
            return fn
        return deco

    @case("missing-dat", "missing")
    def _(d):
        h = write_wfdb(d)
        h.with_suffix(".dat").unlink()
        return h

    @case("truncated-dat", "mismatch")
    def _(d):
        h = write_wfdb(d)
        _truncate(h.with_suffix(".dat"), 0.5)
        return h

    @case("empty-dat", "mismatch")
    def _(d):
        h = write_wfdb(d)
        h.with_suffix(".dat").write_bytes(b"")
        return h

    @case("more-samples-declared", "mismatch")
    def _(d):
        return _edit_header(write_wfdb(d), _record_line(lambda f: f[:3] + ["9000"] + f[4:]))

    @case("missing-signal-line", "header")
    def _(d):
        return _edit_header(write_wfdb(d), lambda lines: lines[:5] + lines[6:])

    @case("empty-header", "empty")
    def _(d):
        h = write_wfdb(d)
        h.write_text("")
        return h

    @case("comments-only-header", "header")
    def _(d):
        h = write_wfdb(d)
        h.write_text("# Age: 40\n# Sex: Male\n")
        return h

    @case("binary-header", "binary")
    def _(d):
        h = write_wfdb(d)
        h.write_bytes(os.urandom(512) + b"\x00" * 16)
        return h

    @case("utf16-header", "binary")
    def _(d):
        h = write_wfdb(d)
        h.write_bytes(h.read_text().encode("utf-16"))
        return h

    @case("fs-zero", "sampling rate")
    def _(d):
        return _edit_header(write_wfdb(d), _record_line(lambda f: f[:2] + ["0"] + f[3:]))

    @case("fs-negative", "sampling rate must be > 0")
    def _(d):
        return _edit_header(write_wfdb(d), _record_line(lambda f: f[:2] + ["-500"] + f[3:]))

    @case("fs-not-a-number", "header")
    def _(d):
        return _edit_header(write_wfdb(d), _record_line(lambda f: f[:2] + ["abc"] + f[3:]))

    @case("fs-absurd", "implausible")
    def _(d):
        return _edit_header(write_wfdb(d), _record_line(lambda f: f[:2] + ["5000000"] + f[3:]))

    @case("absurd-length", "absurd length")
    def _(d):
        return _edit_header(write_wfdb(d), _record_line(lambda f: f[:3] + ["1000000000000"]))

    @case("unknown-format", "unknown WFDB signal format")
    def _(d):
        return _edit_header(write_wfdb(d), _signal_field(1, "999"))

    @case("nsig-not-a-number", "header")
    def _(d):
        return _edit_header(write_wfdb(d), _record_line(lambda f: f[:1] + ["twelve"] + f[2:]))

    @case("nsig-zero", "no signals")
    def _(d):
        return _edit_header(write_wfdb(d), lambda lines: [f"{lines[0].split()[0]} 0 500 5000"])

    @case("gain-not-a-number", "header")
    def _(d):
        return _edit_header(write_wfdb(d), _signal_field(2, "abc/mV"))

    @case("all-invalid-samples", "invalid")
    def _(d):
        return _dat_fill(write_wfdb(d), -32768)   # WFDB's invalid-sample marker for format 16

    @case("all-zero", "all zero")
    def _(d):
        return _dat_fill(write_wfdb(d), 0)

    @case("all-constant", "no lead holds a usable signal")
    def _(d):
        return _dat_fill(write_wfdb(d), 1234)

    @case("non-voltage-units", "no voltage channel")
    def _(d):
        h = write_wfdb(d)
        return _edit_header(h, _signal_field(2, "1000/mmHg"))

    @case("shorter-than-one-second", "long")
    def _(d):
        return write_wfdb(d, n=200)

    @case("directory", "directory")
    def _(d):
        d.mkdir(parents=True, exist_ok=True)
        return d

    @case("no-such-record", "no such record")
    def _(d):
        return d / "nothing_here"

    @case("mat-without-header", "no header")
    def _(d):
        h = write_challenge(d)
        h.unlink()
        return h.with_suffix(".mat")

    @case("csv-file", "unsupported file type")
    def _(d):
        d.mkdir(parents=True, exist_ok=True)
        (d / "ecg.csv").write_text("I,II\n0.1,0.2\n")
        return d / "ecg.csv"

    @case("edf-file", "unsupported file type")
    def _(d):
        d.mkdir(parents=True, exist_ok=True)
        (d / "ecg.edf").write_bytes(b"0       " + os.urandom(248))
        return d / "ecg.edf"

    @case("challenge-mat-truncated", "mismatch")
    def _(d):
        h = write_challenge(d)
        _truncate(h.with_suffix(".mat"), 0.3)
        return h

    @case("challenge-mat-garbage", "mismatch")
    def _(d):
        h = write_challenge(d)
        h.with_suffix(".mat").write_bytes(os.urandom(1000))
        return h

    @case("challenge-mat-missing", "missing")
    def _(d):
        h = write_challenge(d)
        h.with_suffix(".mat").unlink()
        return h

    @case("format-212-truncated", "mismatch")
    def _(d):
        h = write_wfdb(d, fmt="212")
        _truncate(h.with_suffix(".dat"), 0.9)
        return h

    @case("byte-offset-past-end", "mismatch")
    def _(d):
        return _edit_header(write_wfdb(d), _signal_field(1, "16+999999"))

    @case("signal-file-outside-folder", "header")
    def _(d):
        return _edit_header(write_wfdb(d), _signal_field(0, "../elsewhere/rec.dat"))

    @case("header-garbage-text", "header")
    def _(d):
        h = write_wfdb(d)
        h.write_text("this is not a header\nat all, really\n")
        return h

    @case("code15-all-data-is-zero", "all zero")
    def _(d):
        d.mkdir(parents=True, exist_ok=True)
        for f in (REAL / "code15").glob("9190_all_data_is_zero.*"):
            shutil.copy(f, d / f.name)
        return d / "9190_all_data_is_zero.hea"

    @case("code15-low-sample-rate", "missing")
    def _(d):
        d.mkdir(parents=True, exist_ok=True)
        for f in (REAL / "code15").glob("9190_low_sample_rate.*"):
            shutil.copy(f, d / f.name)
        return d / "9190_low_sample_rate.hea"

    return c


CASES = _cases()


def test_corpus_is_large_enough():
    assert len(CASES) >= 30


def test_the_unbroken_builders_are_valid(tmp_path):
    wfdb_rec = read_record(write_wfdb(tmp_path / "a"))
    mat_rec = read_record(write_challenge(tmp_path / "b"))
    assert wfdb_rec.signal.shape == mat_rec.signal.shape == (12, 5000)
    np.testing.assert_allclose(wfdb_rec.signal, mat_rec.signal, atol=1e-3)
    assert mat_rec.meta.age == 61 and wfdb_rec.meta.dx_codes == ("426783006",)


@pytest.mark.parametrize("cid,build,expect", CASES, ids=[c[0] for c in CASES])
def test_malformed_file_gives_one_line_error(tmp_path, capsys, cid, build, expect):
    path = build(tmp_path / cid)
    with pytest.raises(EcgRecordError) as err:
        read_record(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert expect.lower() in msg.lower(), msg
    assert Path(err.value.path).name in msg
    # the CLI: exit 2, one line on stderr, nothing on stdout, no traceback
    assert main(["info", str(path)]) == 2
    out, errtext = capsys.readouterr()
    assert out == ""
    assert errtext.count("\n") == 1 and errtext.startswith("ecgqa: error: ")
    assert "Traceback" not in errtext


def test_console_script_on_a_broken_file_prints_no_traceback(tmp_path):
    path = CASES[1][1](tmp_path / "truncated")
    for cmd in ([sys.executable, "-m", "ecgqa", "info", str(path)],
                [str(Path(sys.executable).parent / "ecgqa"), "plot", str(path),
                 "--out", str(tmp_path / "x.png")]):
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, res.stderr
        assert res.stdout == ""
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert not (tmp_path / "x.png").exists()
