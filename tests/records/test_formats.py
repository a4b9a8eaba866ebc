"""Every WFDB signal format round-trips through read_record in millivolts."""

from __future__ import annotations

import numpy as np
import pytest

from ecgqa.records.leads import STANDARD_LEADS
from ecgqa.records.read import read_record


def _signal(n: int = 5000, fs: int = 500) -> np.ndarray:
    t = np.arange(n) / fs
    return np.stack([np.sin(2 * np.pi * 1.2 * t + i) * (i + 1) / 6 for i in range(12)], axis=1)


# quantisation step of each format at wfdb's automatic gain, in mV
@pytest.mark.parametrize("fmt,tol", [("16", 1e-4), ("24", 1e-6), ("32", 1e-6), ("80", 2e-2),
                                     ("212", 2e-3), ("508", 2e-2), ("516", 1e-4),
                                     ("524", 1e-6)])
def test_wfdb_formats_written_by_wfdb(tmp_path, fmt, tol):
    import wfdb

    sig = _signal()
    wfdb.wrsamp("r", fs=500, units=["mV"] * 12, sig_name=[n.lower() for n in STANDARD_LEADS],
                p_signal=sig, fmt=[fmt] * 12, write_dir=str(tmp_path))
    rec = read_record(tmp_path / "r")
    assert rec.leads == STANDARD_LEADS and rec.fs == 500
    assert np.abs(rec.signal - sig.T).max() < tol
    assert fmt in rec.meta.source_format


@pytest.mark.parametrize("fmt", ["61", "160"])
def test_byte_formats_written_by_hand(tmp_path, fmt):
    """61: 16-bit big-endian; 160: 16-bit offset binary (both read, not written, by wfdb)."""
    sig = _signal()
    digital = np.round(sig * 1000).astype(np.int32)             # gain 1000/mV
    if fmt == "61":
        raw = digital.astype(">i2").tobytes()
    else:
        raw = (digital + 32768).astype("<u2").tobytes()
    (tmp_path / "r.dat").write_bytes(raw)
    lines = ["r 12 500 5000"] + [f"r.dat {fmt} 1000/mV 16 0 0 0 0 {lead}"
                                 for lead in STANDARD_LEADS]
    (tmp_path / "r.hea").write_text("\n".join(lines) + "\n")
    rec = read_record(tmp_path / "r.hea")
    np.testing.assert_allclose(rec.signal, digital.T / 1000.0, atol=1e-6)


def test_microvolt_units_are_converted(tmp_path):
    import wfdb

    sig = _signal() * 1000                                      # in uV
    wfdb.wrsamp("r", fs=500, units=["uV"] * 12, sig_name=list(STANDARD_LEADS), p_signal=sig,
                fmt=["16"] * 12, write_dir=str(tmp_path))
    rec = read_record(tmp_path / "r")
    assert np.abs(rec.signal - sig.T / 1000).max() < 1e-3


def test_multi_segment_record(tmp_path):
    import wfdb

    sig = _signal(10000)
    for i, part in enumerate((sig[:5000], sig[5000:])):
        wfdb.wrsamp(f"seg{i}", fs=500, units=["mV"] * 12, sig_name=list(STANDARD_LEADS),
                    p_signal=part, fmt=["16"] * 12, adc_gain=[1000.0] * 12,
                    baseline=[0] * 12, write_dir=str(tmp_path))
    (tmp_path / "multi.hea").write_text("multi/2 12 500 10000\nseg0 5000\nseg1 5000\n"
                                        "# Age: 30\n")
    rec = read_record(tmp_path / "multi.hea")
    assert rec.signal.shape == (12, 10000) and rec.meta.age == 30
    assert np.abs(rec.signal - sig.T).max() < 1e-3
    assert "multi-segment" in rec.meta.source_format


def test_length_omitted_from_header_is_inferred(tmp_path):
    import wfdb

    wfdb.wrsamp("r", fs=500, units=["mV"] * 12, sig_name=list(STANDARD_LEADS),
                p_signal=_signal(), fmt=["16"] * 12, write_dir=str(tmp_path))
    hea = tmp_path / "r.hea"
    lines = hea.read_text().splitlines()
    lines[0] = " ".join(lines[0].split()[:3])            # "r 12 500"
    hea.write_text("\n".join(lines) + "\n")
    assert read_record(hea).n_samples == 5000


def test_invalid_samples_are_interpolated_or_mask_the_lead(tmp_path):
    digital = np.round(_signal() * 1000).astype("<i2")         # (5000, 12), gain 1000/mV
    digital[1000:1100, 0] = -32768                              # 2% of lead I invalid
    digital[:4000, 1] = -32768                                  # 80% of lead II invalid
    (tmp_path / "r.dat").write_bytes(digital.tobytes())
    lines = ["r 12 500 5000"] + [f"r.dat 16 1000/mV 16 0 0 0 0 {lead}"
                                 for lead in STANDARD_LEADS]
    (tmp_path / "r.hea").write_text("\n".join(lines) + "\n")
    rec = read_record(tmp_path / "r.hea")
    assert rec.lead_mask.tolist() == [True, False] + [True] * 10
    assert not rec.signal[1].any()
    gap = rec.signal[0, 1000:1100]
    expected = np.linspace(digital[999, 0], digital[1100, 0], 102)[1:-1] / 1000
    np.testing.assert_allclose(gap, expected, atol=1e-4)         # linear over the gap
    warnings = " ".join(rec.meta.warnings)
    assert "lead I: 100 invalid samples interpolated" in warnings
    assert "lead II: 80% of samples invalid" in warnings
