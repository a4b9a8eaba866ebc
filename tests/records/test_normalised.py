"""Records in normalised units (WFDB ``NU``): the shared PTB-XL subset was band-passed and
z-scored per lead by its source, so its amplitudes are standard deviations, not mV.

The reader reads them as they are and says so; ``info`` and ``plot`` are honest about the
units; ``measure`` still gives the timing features and refuses the amplitude ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ecgqa.cli import main
from ecgqa.records.measure import measure
from ecgqa.records.plot import render
from ecgqa.records.read import EcgRecordError, read_record
from ecgqa.records.summary import format_summary, summarize
from tests.conftest import REAL, SHARED_DATA

ZSCORE = SHARED_DATA / "ptbxl-zscore-250hz" / "records"
ALL = sorted(ZSCORE.glob("*.hea"))


def test_every_record_of_the_shared_ptbxl_subset_reads_in_normalised_units():
    assert len(ALL) == 1625
    for hea in ALL:
        rec = read_record(hea)
        assert rec.units == "NU" and rec.normalised, hea
        assert rec.signal.shape == (12, 2500) and rec.fs == 250.0, hea
        assert rec.leads[:3] == ("I", "II", "III") and rec.lead_mask.all(), hea
        assert np.isfinite(rec.signal).all(), hea
        # z-scored per lead by the source: SD 1 (to the 1/1000 NU quantisation)
        np.testing.assert_allclose(rec.signal.std(axis=1), 1.0, atol=0.01)
        assert any("normalised units" in w for w in rec.meta.warnings), hea
        s = summarize(rec, measure=False)
        assert s["units"] == "NU" and set(s["amplitude"]["II"]) == {"min_nu", "max_nu"}
        # no mV plausibility verdict on a record that has no mV
        assert not any("implausible" in w for w in s["warnings"]), hea


def test_resampling_cropping_and_lead_selection_keep_the_units():
    rec = read_record(ALL[0], fs=500, duration_s=8, leads="limb")
    assert rec.units == "NU" and rec.signal.shape == (6, 4000)


def test_measure_gives_timing_features_and_refuses_the_axis():
    # PTB-XL ecg_id 6005 twice: in mV (CinC 2021 HR06005, 500 Hz) and normalised (250 Hz)
    mv = measure(read_record(REAL / "cinc2021" / "HR06005.hea"))
    nu = measure(read_record(ZSCORE / "06005.hea"))
    assert mv.qrs_axis_deg is not None and nu.qrs_axis_deg is None
    assert "normalised units" in nu.note
    # the same heartbeats: timing within one sample at 250 Hz (4 ms) for RR and QT, and
    # within the delineator's spread for PR and QRS
    assert abs(nu.rr_ms - mv.rr_ms) <= 4 and abs(nu.qt_ms - mv.qt_ms) <= 8
    assert abs(nu.pr_ms - mv.pr_ms) <= 12 and abs(nu.qrs_ms - mv.qrs_ms) <= 8


def test_info_says_normalised_units(capsys):
    assert main(["info", str(ZSCORE / "06005.hea"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["units"] == "NU"
    assert out["measurements"]["qrs_axis_deg"] is None
    assert out["measurements"]["heart_rate_bpm"] > 40
    text = format_summary(summarize(read_record(ZSCORE / "06005.hea"), measure=False))
    assert "units NU" in text and "min NU" in text and "mV" not in text.replace("not mV", "")


def _calibration_pulses(fig) -> int:
    """Lines of the 6-point calibration-pulse shape (a 1 mV step)."""
    return sum(1 for line in fig.axes[0].get_lines() if len(line.get_xdata()) == 6)


def test_plot_draws_no_mv_calibration_for_a_normalised_record(tmp_path):
    nu = render(read_record(ZSCORE / "06005.hea"))
    mv = render(read_record(REAL / "cinc2021" / "HR06005.hea"))
    assert _calibration_pulses(mv) == 4 and _calibration_pulses(nu) == 0
    texts = " ".join(t.get_text() for t in nu.axes[0].texts)
    assert "mm/NU (normalised units, not mV)" in texts and "mm/mV" not in texts
    out = tmp_path / "nu.png"
    assert main(["plot", str(ZSCORE / "06005.hea"), "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000


def _write(folder: Path, units: list[str]) -> Path:
    import wfdb

    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(2500) / 250
    sig = np.stack([np.sin(2 * np.pi * 1.2 * t + k) for k in range(len(units))], axis=1)
    wfdb.wrsamp("r", fs=250, units=units, sig_name=["I", "II", "V1"][: len(units)],
                p_signal=sig, fmt=["16"] * len(units), adc_gain=[1000.0] * len(units),
                baseline=[0] * len(units), write_dir=str(folder))
    return folder / "r.hea"


def test_voltage_channels_win_over_normalised_ones(tmp_path):
    rec = read_record(_write(tmp_path, ["mV", "mV", "NU"]))
    assert rec.units == "mV" and rec.leads == ("I", "II")
    assert any("V1 (normalised units beside voltage channels)" in w for w in rec.meta.warnings)


@pytest.mark.parametrize("unit", ["nu", "NU", "normalized"])
def test_spellings_of_normalised_units(tmp_path, unit):
    assert read_record(_write(tmp_path, [unit] * 3)).units == "NU"


def test_units_that_are_neither_stay_one_line_errors(tmp_path):
    with pytest.raises(EcgRecordError, match="no voltage channel") as err:
        read_record(_write(tmp_path, ["mmHg", "degC", "bpm"]))
    assert "\n" not in str(err.value) and "mmHg, degC, bpm" in str(err.value)
