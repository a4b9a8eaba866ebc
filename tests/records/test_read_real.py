"""read_record on every real record in ../shared/data/real: values, not just shapes."""

from __future__ import annotations

import numpy as np
import pytest

from ecgqa.records.leads import STANDARD_LEADS
from ecgqa.records.read import EcgRecordError, read_record
from tests.conftest import BROKEN, REAL, real_headers

HEADERS = real_headers()


@pytest.mark.parametrize("header", HEADERS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_real_record_reads_or_fails_cleanly(header):
    if header.stem in BROKEN:
        with pytest.raises(EcgRecordError) as err:
            read_record(header)
        assert header.name in str(err.value) and "\n" not in str(err.value)
        return
    rec = read_record(header)
    assert rec.signal.dtype == np.float32 and rec.signal.ndim == 2
    assert rec.signal.shape == (len(rec.leads), rec.n_samples)
    assert rec.lead_mask.dtype == bool and rec.lead_mask.shape == (len(rec.leads),)
    assert rec.lead_mask.any()
    assert np.isfinite(rec.signal).all()
    assert rec.fs > 0 and rec.duration_s >= 1.0
    # canonical names come first, in standard order
    standard = [lead for lead in rec.leads if lead in STANDARD_LEADS]
    assert list(rec.leads[: len(standard)]) == sorted(standard, key=STANDARD_LEADS.index)
    # usable leads carry signal; unusable ones are zero rows
    assert (np.ptp(rec.signal[rec.lead_mask], axis=1) > 0).all()
    assert not rec.signal[~rec.lead_mask].any()


def test_broken_code15_copies_fail_with_intended_errors():
    with pytest.raises(EcgRecordError, match="all zero"):
        read_record(REAL / "code15" / "9190_all_data_is_zero.hea")
    with pytest.raises(EcgRecordError, match=r"signal file 9190\.dat is missing"):
        read_record(REAL / "code15" / "9190_low_sample_rate.hea")


def _corr(a, b):
    return float(np.corrcoef(a, b)[0, 1])


def test_ptbxl_100hz_matches_challenge_copy_after_resampling():
    """00001_lr (PTB-XL, 100 Hz, 1000/mV) is HR00001 (Challenge 2020, 500 Hz, gain 200)."""
    low = read_record(REAL / "ptbxl" / "00001_lr", fs=500)
    high = read_record(REAL / "cinc2020" / "HR00001.hea")
    assert low.leads == high.leads == STANDARD_LEADS
    assert low.signal.shape == high.signal.shape == (12, 5000)
    for i, lead in enumerate(STANDARD_LEADS):
        assert _corr(low.signal[i], high.signal[i]) > 0.93, lead
        # HR00001 declares gain 200/mV for 1000/mV samples: read as declared, 5x larger
        ratio = np.std(high.signal[i]) / np.std(low.signal[i])
        assert 4.7 < ratio < 5.5, (lead, ratio)
    assert any("5x too large" in w for w in high.meta.warnings)
    assert not low.meta.warnings


def test_challenge_ptb_copy_with_wrong_gain_is_flagged_and_matches_ptb():
    ptb = read_record(REAL / "wfdb-sample" / "s0010_re", leads="12-lead")
    challenge = read_record(REAL / "cinc2020" / "S0001")
    assert ptb.fs == challenge.fs == 1000
    for i in range(12):
        assert _corr(ptb.signal[i], challenge.signal[i]) > 0.999
    ratio = np.std(ptb.signal) / np.std(challenge.signal)
    assert 1900 < ratio < 2100      # 2,000,000/mV declared for samples at 2000/mV / 2
    assert any("implausible amplitude" in w for w in challenge.meta.warnings)
    assert not any("implausible" in w for w in ptb.meta.warnings)


@pytest.mark.parametrize("source", ["cinc2021", "cinc2020", "code15", "ptbxl"])
def test_einthoven_and_goldberger_hold_on_real_12_lead_records(source):
    """II = I + III and aVR = -(I + II) / 2 on real data: lead names and scales are right."""
    checked = 0
    for header in sorted((REAL / source).glob("*.hea")):
        if header.stem in BROKEN:
            continue
        rec = read_record(header)
        if not all(rec.lead_mask[:6]):
            continue
        i, ii, iii, avr, avl, avf = (rec.lead(n).astype(np.float64) for n in STANDARD_LEADS[:6])
        assert _corr(ii, i + iii) > 0.97, header.name
        assert _corr(avr, -(i + ii) / 2) > 0.97, header.name
        assert _corr(avf, ii - i / 2) > 0.97, header.name
        assert _corr(avl, i - ii / 2) > 0.97, header.name
        checked += 1
    assert checked >= 1


def test_georgia_2020_header_with_file_name_as_record_name():
    rec = read_record(REAL / "cinc2020" / "E00001.hea")
    assert rec.leads == STANDARD_LEADS and rec.signal.shape == (12, 5000) and rec.fs == 500
    assert any("repaired" in w for w in rec.meta.warnings)
    assert rec.meta.sex == "female" and rec.meta.age is None  # "#Age: NaN"
    assert rec.meta.base_datetime == "05-May-2020 14:50:55"
    # the .mat holds digital samples (key `val`): check the physical conversion by hand
    from scipy.io import loadmat

    val = loadmat(REAL / "cinc2020" / "E00001.mat")["val"].astype(np.float64)
    np.testing.assert_allclose(rec.signal, val / 4880.0, rtol=1e-5, atol=1e-6)


def test_accepted_spellings_of_one_record_give_identical_signals():
    base = REAL / "cinc2021" / "E07500"
    ref = read_record(str(base) + ".hea")
    for spelling in (base, str(base) + ".mat", str(base)):
        rec = read_record(spelling)
        np.testing.assert_array_equal(rec.signal, ref.signal)
    dat = read_record(REAL / "ptbxl" / "00001_lr.dat")
    assert dat.fs == 100


def test_challenge_2021_metadata():
    rec = read_record(REAL / "cinc2021" / "E07500")
    assert rec.meta.age == 78 and rec.meta.sex == "male"
    assert rec.meta.dx_codes == ("67741000119109", "426177001")
    assert "sinus bradycardia" in rec.meta.dx_names
    assert rec.meta.source_format.startswith("wfdb-mat")


def test_mitbih_format_212_values_and_lead_names():
    rec = read_record(REAL / "wfdb-sample" / "100")
    assert rec.leads == ("II", "V5")          # MLII is a modified lead II
    assert rec.meta.original_leads == ("MLII", "V5")
    assert rec.fs == 360 and rec.n_samples == 650000
    np.testing.assert_allclose(rec.signal[:, 0], [-0.145, -0.065], atol=1e-6)
    assert rec.meta.age == 69 and rec.meta.sex == "male"
    assert "212" in rec.meta.source_format


def test_ptb_15_leads_keeps_frank_leads_after_the_standard_twelve():
    rec = read_record(REAL / "wfdb-sample" / "s0010_re.hea")
    assert rec.leads == STANDARD_LEADS + ("vx", "vy", "vz")
    assert rec.meta.age == 81 and rec.meta.sex == "female"
    assert "Reason for admission: Myocardial infarction" in rec.meta.diagnoses


def test_non_voltage_channel_dropped():
    rec = read_record(REAL / "wfdb-sample" / "a103l")
    assert rec.leads == ("II", "V") and rec.fs == 250
    assert any("PLETH" in w for w in rec.meta.warnings)


def test_two_lead_200hz_and_400hz_code15():
    af = read_record(REAL / "cpsc2021" / "data_101_6")
    assert af.leads == ("I", "II") and af.fs == 200
    assert "paroxysmal atrial fibrillation" in af.meta.comments
    code = read_record(REAL / "code15" / "1111.hea")
    assert code.fs == 400 and code.n_samples == 2934   # not a whole number of seconds
    assert code.meta.fields["Chagas label"] == "False" and code.meta.age == 43


def test_flat_leads_are_masked_not_dropped():
    rec = read_record(REAL / "cinc2021" / "JS20004")
    assert rec.leads == STANDARD_LEADS
    assert [lead for lead, ok in zip(rec.leads, rec.lead_mask) if not ok] == ["V2", "V4", "V6"]
