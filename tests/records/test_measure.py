"""Measurements against signals with known rate and axis, and on real records."""

from __future__ import annotations

import numpy as np
import pytest

from ecgqa.records.leads import STANDARD_LEADS
from ecgqa.records.measure import measure
from ecgqa.records.read import EcgRecord, read_record
from tests.conftest import REAL


def _beats(heart_rate: float, fs: int, seconds: float = 10.0) -> np.ndarray:
    """Gaussian P-QRS-T complexes at exactly 60/heart_rate s apart (amplitudes in mV)."""
    t = np.arange(int(seconds * fs)) / fs
    waves = [(-0.16, 0.012, 0.12), (-0.025, 0.006, -0.1), (0.0, 0.008, 1.0),
             (0.025, 0.006, -0.2), (0.25, 0.04, 0.3)]           # P, Q, R, S, T
    x = np.zeros_like(t)
    for r in np.arange(0.4, seconds - 0.4, 60.0 / heart_rate):
        for offset, width, amp in waves:
            x += amp * np.exp(-((t - r - offset) ** 2) / (2 * width ** 2))
    return x


def _simulated(heart_rate: int, axis_deg: float, fs: int = 500) -> EcgRecord:
    beat = _beats(heart_rate, fs)
    a = np.deg2rad(axis_deg)
    sig = np.zeros((12, len(beat)), dtype=np.float32)
    # a frontal dipole at angle a projected on the hexaxial leads (Einthoven/Goldberger)
    lead_i, lead_ii = beat * np.cos(a), beat * np.cos(a - np.pi / 3)
    sig[STANDARD_LEADS.index("I")] = lead_i
    sig[STANDARD_LEADS.index("II")] = lead_ii
    sig[STANDARD_LEADS.index("III")] = lead_ii - lead_i
    sig[STANDARD_LEADS.index("aVF")] = lead_ii - lead_i / 2
    sig[6:] = beat  # precordial leads: any non-flat signal
    return EcgRecord(signal=sig, fs=float(fs), leads=STANDARD_LEADS,
                     lead_mask=np.ones(12, bool))


@pytest.mark.parametrize("hr", [50, 75, 110])
def test_heart_rate_of_simulated_ecg(hr):
    m = measure(_simulated(hr, 50))
    assert m.lead == "II" and m.n_beats >= 7
    assert abs(m.heart_rate_bpm - hr) < 1.0
    assert abs(m.rr_ms - 60000 / hr) < 10


@pytest.mark.parametrize("axis", [-60, 0, 45, 100, 170])
def test_qrs_axis_from_leads_i_and_avf(axis):
    m = measure(_simulated(70, axis))
    assert m.qrs_axis_deg is not None
    assert abs((m.qrs_axis_deg - axis + 180) % 360 - 180) < 2.5


def test_real_record_rate_agrees_with_an_independent_peak_count():
    from scipy.signal import find_peaks

    rec = read_record(REAL / "cinc2021" / "HR06004")
    m = measure(rec)
    x = rec.lead("II") - np.median(rec.lead("II"))
    x = x if abs(x.max()) > abs(x.min()) else -x
    peaks, _ = find_peaks(x, height=0.5 * x.max(), distance=int(0.3 * rec.fs))
    independent = 60 * rec.fs / np.median(np.diff(peaks))
    assert abs(m.heart_rate_bpm - independent) < 3
    # intervals of a sinus-rhythm record are physiological where delineated
    for value, lo, hi in ((m.pr_ms, 80, 300), (m.qrs_ms, 50, 140), (m.qt_ms, 280, 520)):
        assert value is None or lo <= value <= hi
    assert m.qtc_ms is None or m.qtc_ms == pytest.approx(m.qt_ms / np.sqrt(m.rr_ms / 1000))


def test_no_usable_lead_gives_empty_measurements():
    rec = EcgRecord(signal=np.zeros((1, 5000), np.float32), fs=500.0, leads=("I",),
                    lead_mask=np.zeros(1, bool))
    m = measure(rec)
    assert m.heart_rate_bpm is None and m.note
