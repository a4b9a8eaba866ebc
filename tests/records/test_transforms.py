"""Resampling, crop/pad, lead selection and lead names."""

from __future__ import annotations

import numpy as np
import pytest

from ecgqa.records.leads import LEAD_SUBSETS, canonical_lead_name, lead_mask, parse_leads
from ecgqa.records.read import EcgRecord, EcgRecordError, read_record
from tests.conftest import REAL


def _sine_record(fs: float, seconds: float, freq: float = 5.0) -> EcgRecord:
    t = np.arange(int(round(fs * seconds))) / fs
    sig = np.stack([np.sin(2 * np.pi * freq * t), 0.5 * np.cos(2 * np.pi * freq * t)])
    return EcgRecord(signal=sig.astype(np.float32), fs=fs, leads=("I", "II"),
                     lead_mask=np.ones(2, bool))


@pytest.mark.parametrize("src,dst", [(400, 500), (360, 500), (500, 100), (257, 500), (1000, 250)])
def test_polyphase_resampling_preserves_a_band_limited_signal(src, dst):
    rec = _sine_record(src, 10.0).resample(dst)
    assert rec.fs == dst
    assert abs(rec.n_samples - 10 * dst) <= 1
    t = np.arange(rec.n_samples) / dst
    expected = np.sin(2 * np.pi * 5.0 * t)
    core = slice(dst, rec.n_samples - dst)          # edges carry filter transients
    assert np.max(np.abs(rec.signal[0, core] - expected[core])) < 0.02
    assert rec.signal.dtype == np.float32


def test_fit_duration_crops_and_pads():
    rec = _sine_record(100, 7.335)
    padded = rec.fit_duration(10.0)
    assert padded.n_samples == 1000
    np.testing.assert_array_equal(padded.signal[:, : rec.n_samples], rec.signal)
    assert not padded.signal[:, rec.n_samples:].any()
    cropped = rec.fit_duration(2.0, align="center")
    start = (rec.n_samples - 200) // 2
    np.testing.assert_array_equal(cropped.signal, rec.signal[:, start:start + 200])
    with pytest.raises(ValueError):
        rec.fit_duration(0)
    with pytest.raises(ValueError):
        rec.fit_duration(1, align="middle")


def test_read_record_options_compose_on_a_real_400hz_record():
    rec = read_record(REAL / "code15" / "1111004", fs=500, duration_s=10, leads="I,II,V1,vx")
    assert rec.fs == 500 and rec.signal.shape == (4, 5000)
    assert rec.leads == ("I", "II", "V1", "vx")
    assert rec.lead_mask.tolist() == [True, True, True, False]
    assert not rec.signal[3].any()
    full = read_record(REAL / "code15" / "1111004", fs=500)
    np.testing.assert_array_equal(rec.signal[0, : full.n_samples], full.signal[0])
    assert not rec.signal[:, full.n_samples:].any()   # 7.3 s padded to 10 s at the end


def test_select_leads_reorders_and_masks_missing():
    rec = read_record(REAL / "cpsc2021" / "data_101_6", leads="12-lead")
    assert rec.leads == LEAD_SUBSETS["12-lead"]
    assert rec.lead_mask.tolist() == [True, True] + [False] * 10
    two = read_record(REAL / "cpsc2021" / "data_101_6")
    np.testing.assert_array_equal(rec.signal[:2], two.signal)


@pytest.mark.parametrize("name,canon", [
    ("i", "I"), ("II", "II"), ("iii", "III"), ("AVR", "aVR"), ("avl", "aVL"), ("aVF", "aVF"),
    ("v1", "V1"), ("V6", "V6"), ("Lead II", "II"), ("ECG_V2", "V2"), ("DII", "II"),
    ("MLII", "II"), ("vx", "vx"), ("  V 3 ", "V3"), ("PLETH", "PLETH"),
])
def test_canonical_lead_names(name, canon):
    assert canonical_lead_name(name) == canon


def test_parse_leads_and_mask():
    assert parse_leads("limb") == ("I", "II", "III", "aVR", "aVL", "aVF")
    assert parse_leads("i, avr ,v1") == ("I", "aVR", "V1")
    assert parse_leads(None) is None
    with pytest.raises(ValueError, match="twice"):
        parse_leads("I,i")
    with pytest.raises(ValueError, match="empty"):
        parse_leads(" , ")
    assert lead_mask(["II", "V1"], ["I", "II", "V1"]).tolist() == [False, True, True]


def test_bad_options_raise_record_errors():
    with pytest.raises(EcgRecordError, match="twice"):
        read_record(REAL / "ptbxl" / "00001_lr", leads="I,I")
    with pytest.raises(EcgRecordError, match="> 0 Hz"):
        read_record(REAL / "ptbxl" / "00001_lr", fs=-5)
    with pytest.raises(EcgRecordError, match="> 0 s"):
        read_record(REAL / "ptbxl" / "00001_lr", duration_s=0)
