"""Synthetic ECGs: signal contract, lead physics, determinism, and labels checked on the signal
(partly with ecgqa.records.measure, an independent measurement)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from ecgqa.records.leads import STANDARD_LEADS
from ecgqa.records.measure import measure
from ecgqa.records.read import EcgRecord
from ecgqa.synth.ecg import (
    AXIS_CLASSES,
    EXTRA_SYSTOLES,
    FS,
    LEAD_CODES,
    LONG_QTC_MS,
    NOISE_TYPES,
    NORMAL_RANGES,
    NUMERIC_CLASSES,
    RHYTHMS,
    SCP_CODES,
    EcgFacts,
    axis_class,
    sample_facts,
    synthesize,
)

IDX = {name: i for i, name in enumerate(STANDARD_LEADS)}


def _find(predicate, n: int, seed: int = 7, limit: int = 5000) -> list[EcgFacts]:
    """The first ``n`` sampled facts (noise removed) that satisfy ``predicate``."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(limit):
        facts = sample_facts(rng)
        if predicate(facts):
            out.append(replace(facts, noise={}))
            if len(out) == n:
                return out
    raise AssertionError(f"only {len(out)} of {n} records found in {limit} draws")


def _render(facts: EcgFacts, seed: int = 0) -> np.ndarray:
    return synthesize(facts, np.random.default_rng(seed))


def _record(signal: np.ndarray) -> EcgRecord:
    return EcgRecord(signal=signal, fs=FS, leads=STANDARD_LEADS, lead_mask=np.ones(12, bool))


def _conducted_onsets(facts: EcgFacts, margin_s: float = 0.4) -> np.ndarray:
    """QRS onsets (samples) of conducted beats well inside the record."""
    p = facts.plan
    keep = (p.kinds == 0) & (p.onsets_s > margin_s) & (p.onsets_s < 10.0 - margin_s)
    return np.round(p.onsets_s[keep] * FS).astype(int)


def _plain(f: EcgFacts) -> bool:
    return f.extra_systole is None and f.scp_codes[0] in RHYTHMS[:3]


# --------------------------------------------------------------------------- contract


def test_shape_dtype_and_finite_values_with_and_without_noise():
    rng = np.random.default_rng(3)
    seen_noise = False
    for _ in range(40):
        facts = sample_facts(rng)
        x = synthesize(facts, rng)
        seen_noise |= bool(facts.noise)
        assert x.shape == (12, 5000) and x.dtype == np.float32
        assert np.all(np.isfinite(x))
        assert 0.2 < np.percentile(np.ptp(x, axis=1), 50) < 8.0    # mV, not V or uV
    assert seen_noise


def test_facts_are_json_serialisable_with_one_leading_rhythm():
    rng = np.random.default_rng(4)
    for _ in range(100):
        facts = sample_facts(rng)
        d = json.loads(json.dumps(facts.to_dict()))
        assert d["scp_codes"][0] in RHYTHMS
        assert sum(c in RHYTHMS for c in d["scp_codes"]) == 1
        assert set(d["scp_codes"]) <= set(SCP_CODES)
        assert set(d["scp_leads"]) <= set(LEAD_CODES) & set(d["scp_codes"])
        assert all(set(v) <= set(STANDARD_LEADS) and v for v in d["scp_leads"].values())
        assert set(d["noise"]) <= set(NOISE_TYPES)
        assert d["sex"] in ("male", "female") and 18 <= d["age"] <= 90


def test_same_seed_same_facts_and_signal_different_seed_different():
    a, b, c = (np.random.default_rng(s) for s in (11, 11, 12))
    fa, fb, fc = sample_facts(a), sample_facts(b), sample_facts(c)
    assert fa.to_dict() == fb.to_dict()
    assert np.array_equal(synthesize(fa, a), synthesize(fb, b))
    assert not np.array_equal(synthesize(fa, np.random.default_rng(0)),
                              synthesize(fc, np.random.default_rng(0)))


# --------------------------------------------------------------------------- lead physics


def test_einthoven_and_goldberger_hold_exactly_without_noise():
    rng = np.random.default_rng(21)
    for _ in range(25):
        facts = replace(sample_facts(rng), noise={})
        x = synthesize(facts, rng).astype(np.float64)
        i, ii, iii, avr, avl, avf = x[:6]
        assert np.max(np.abs(ii - (i + iii))) < 1e-5
        assert np.max(np.abs(avr + (i + ii) / 2)) < 1e-5
        assert np.max(np.abs(avl - (i - ii / 2))) < 1e-5
        assert np.max(np.abs(avf - (ii - i / 2))) < 1e-5
        assert np.ptp(iii) > 0.05 and np.ptp(avf) > 0.05       # not trivially all zero


def test_noise_changes_only_the_labelled_leads():
    rng = np.random.default_rng(7)
    checked = set()
    for _ in range(400):
        noisy = sample_facts(rng)
        touched = {IDX[ld] for leads in noisy.noise.values() for ld in leads}
        if not touched or len(touched) == 12:
            continue
        x, y = _render(noisy, seed=3), _render(replace(noisy, noise={}), seed=3)
        for row in range(12):
            same = np.array_equal(x[row], y[row])
            assert same == (row not in touched), (STANDARD_LEADS[row], noisy.noise)
        checked |= set(noisy.noise)
    assert checked == set(NOISE_TYPES)


# --------------------------------------------------------------------------- labels on the signal


def test_heart_rate_agrees_with_measure():
    for facts in _find(lambda f: _plain(f) and "bundle" not in " ".join(f.scp_codes), 6):
        rec = _record(_render(facts))
        rates = [measure(rec, lead=ld).heart_rate_bpm for ld in STANDARD_LEADS]
        measured = float(np.median([r for r in rates if r is not None]))
        assert abs(measured - facts.heart_rate_bpm) < 5.0, facts.to_dict()


def test_axis_class_agrees_with_measure_on_narrow_qrs():
    got = []
    for cls in AXIS_CLASSES:
        picked = _find(lambda f, c=cls: f.heart_axis == c and f.extra_systole is None
                       and "bundle" not in " ".join(f.scp_codes), 5)
        for facts in picked:
            m = measure(_record(_render(facts)))
            got.append(m.qrs_axis_deg is not None and axis_class(m.qrs_axis_deg) == cls)
    assert np.mean(got) >= 0.8, got


def test_axis_label_is_the_mean_qrs_vector_of_the_signal():
    for facts in _find(lambda f: _plain(f), 8, seed=9):
        x = _render(facts).astype(np.float64)
        q = int(round(facts.numeric["qrs duration"] * FS / 1000))
        area_i = sum(x[IDX["I"], a:a + q].sum() for a in _conducted_onsets(facts))
        area_avf = sum(x[IDX["aVF"], a:a + q].sum() for a in _conducted_onsets(facts))
        deg = np.degrees(np.arctan2(area_avf / (np.sqrt(3) / 2), area_i))
        assert abs((deg - facts.axis_deg + 180) % 360 - 180) < 6.0
        assert facts.heart_axis == axis_class(facts.axis_deg)


def _rr_cv(signal: np.ndarray) -> float:
    import neurokit2 as nk

    lead = int(np.argmax(np.percentile(np.abs(np.diff(signal, axis=1)), 99.5, axis=1)))
    _, info = nk.ecg_peaks(nk.ecg_clean(signal[lead].astype(float), sampling_rate=500),
                           sampling_rate=500)
    peaks = np.asarray(info["ECG_R_Peaks"])
    rr = np.diff(peaks[(peaks > 200) & (peaks < 4800)])
    return float(rr.std() / rr.mean())


def _pre_qrs_rms(facts: EcgFacts, x: np.ndarray) -> float:
    """RMS of the beat-median of lead II from 240 to 40 ms before the QRS: a P wave is
    locked to the QRS and survives, fibrillatory waves are not and cancel (the median also
    ignores a preceding T wave that reaches into the window after a short RR)."""
    lead = x[IDX["II"]].astype(np.float64)
    segs = np.array([lead[a - 120:a - 20] for a in _conducted_onsets(facts)])   # (beats, 100)
    typical = np.median(segs, axis=0) - np.median(lead)
    return float(np.sqrt(np.mean(typical ** 2)))


def test_af_is_irregular_without_p_waves_and_sinus_is_regular_with_them():
    af = _find(lambda f: f.scp_codes[0] == "atrial fibrillation" and f.extra_systole is None
               and f.heart_rate_bpm < 100, 4)
    sinus = _find(lambda f: f.scp_codes[0] == "sinus rhythm" and f.extra_systole is None
                  and f.numeric["pr interval"] < 200, 4)
    af_x, sinus_x = [_render(f) for f in af], [_render(f) for f in sinus]
    assert all(_rr_cv(x) > 0.12 for x in af_x)
    assert all(_rr_cv(x) < 0.05 for x in sinus_x)
    af_p = [_pre_qrs_rms(f, x) for f, x in zip(af, af_x)]
    sinus_p = [_pre_qrs_rms(f, x) for f, x in zip(sinus, sinus_x)]
    assert max(af_p) < 0.5 * min(sinus_p), (af_p, sinus_p)
    assert all("p duration" not in f.numeric and "pr interval" not in f.numeric for f in af)


def _qrs_width_ms(facts: EcgFacts, x: np.ndarray) -> float:
    """Median width of the 12-lead spatial velocity (10 ms smoothed) above 10 % of its
    beat peak, until it stays below for 20 ms (a simple global QRS duration)."""
    smooth = np.apply_along_axis(np.convolve, 1, x.astype(np.float64), np.ones(5) / 5, "same")
    v = np.sqrt((np.diff(smooth, axis=1) ** 2).sum(axis=0))                  # (n - 1,)
    widths = []
    for a in _conducted_onsets(facts):
        seg = v[a - 20:a + 100]
        above = seg > 0.1 * seg.max()
        start = end = int(np.argmax(above))
        for k in range(start, len(seg)):
            if above[k]:
                end = k
            elif k - end >= 10:
                break
        widths.append((end - start + 1) * 1000 / FS)
    return float(np.median(widths))


def test_rbbb_qrs_is_wider_than_normal_and_shows_rsr_in_v1():
    rbbb = _find(lambda f: "complete right bundle branch block" in f.scp_codes and _plain(f), 5)
    normal = _find(lambda f: f.scp_codes == ("sinus rhythm",), 5)
    w_rbbb = [_qrs_width_ms(f, _render(f)) for f in rbbb]
    w_normal = [_qrs_width_ms(f, _render(f)) for f in normal]
    assert np.median(w_rbbb) >= 120 and np.median(w_normal) <= 110
    assert min(w_rbbb) > max(w_normal)
    for f in rbbb:                       # terminal R' in V1: positive in the last third
        x = _render(f)[IDX["V1"]]
        q = int(f.numeric["qrs duration"] * FS / 1000)
        a = _conducted_onsets(f)[0]
        assert x[a + 2 * q // 3:a + q].max() > 0.15 and x[a:a + q].min() < -0.1


def _sokolow(facts: EcgFacts, x: np.ndarray) -> float:
    q = int(round(facts.numeric["qrs duration"] * FS / 1000))
    vals = []
    for a in _conducted_onsets(facts):
        seg = x[:, a:a + q].astype(np.float64) - np.median(x, axis=1, keepdims=True)
        vals.append(-seg[IDX["V1"]].min() + max(seg[IDX["V5"]].max(), seg[IDX["V6"]].max()))
    return float(np.median(vals))


def test_lvh_meets_sokolow_lyon_and_others_do_not():
    lvh = _find(lambda f: "left ventricular hypertrophy" in f.scp_codes, 5)
    other = _find(lambda f: "left ventricular hypertrophy" not in f.scp_codes, 250)
    assert all("voltage criteria (qrs) for left ventricular hypertrophy" in f.scp_codes
               for f in lvh)
    assert all(_sokolow(f, _render(f)) > 3.5 for f in lvh)
    assert all(_sokolow(f, _render(f)) < 3.5 for f in other)


def test_limb_qrs_amplitudes_are_realistic_without_lvh():
    for f in _find(lambda f: f.scp_codes == ("sinus rhythm",), 10):
        x = _render(f)
        q = int(f.numeric["qrs duration"] * FS / 1000)
        a = _conducted_onsets(f)[0]
        limb = np.ptp(x[:6, a:a + q], axis=1)
        assert 0.4 < limb.max() < 2.6 and np.median(limb) < 1.6
        assert np.ptp(x[IDX["V5"], a:a + q]) < 3.0


def test_lead_localised_codes_show_in_their_leads():
    # sinus rhythms only: flutter waves are locked to the QRS and move the PR baseline
    st = _find(lambda f: bool({LEAD_CODES[0], LEAD_CODES[1]} & set(f.scp_leads))
               and f.scp_codes[0] in RHYTHMS[:4], 8)
    for f in st:
        x = _render(f).astype(np.float64)
        # J + 20 ms: the ST shift is complete and the T wave has not begun (>= J + 30 ms)
        j20 = [a + int((f.numeric["qrs duration"] + 20) * FS / 1000) for a in _conducted_onsets(f)]
        base = [a - 10 for a in _conducted_onsets(f)]          # PR segment
        for code, sign in ((LEAD_CODES[0], 1), (LEAD_CODES[1], -1)):
            for lead in f.scp_leads.get(code, ()):
                shift = np.median([x[IDX[lead], j] - x[IDX[lead], b] for j, b in zip(j20, base)])
                assert sign * shift > 0.08, (code, lead, shift)
        unlabelled = set(STANDARD_LEADS) - set(f.scp_leads.get(LEAD_CODES[0], ())) \
            - set(f.scp_leads.get(LEAD_CODES[1], ()))
        for lead in unlabelled:
            shift = np.median([x[IDX[lead], j] - x[IDX[lead], b] for j, b in zip(j20, base)])
            assert abs(shift) < 0.12, (lead, shift)
    for f in _find(lambda f: LEAD_CODES[2] in f.scp_leads, 6):
        x = _render(f).astype(np.float64)
        q, qt = (int(f.numeric[k] * FS / 1000) for k in ("qrs duration", "qt interval"))
        for lead in f.scp_leads[LEAD_CODES[2]]:
            row = x[IDX[lead]]
            assert np.median([row[a + q:a + qt].min() - row[a - 10]
                              for a in _conducted_onsets(f)]) < -0.08


# --------------------------------------------------------------------------- label logic


def test_numeric_classes_and_interval_codes_are_consistent():
    rng = np.random.default_rng(31)
    for _ in range(400):
        f = sample_facts(rng)
        assert set(f.numeric) == set(f.numeric_class)
        for key, value in f.numeric.items():
            low, high = NORMAL_RANGES[key]
            want = NUMERIC_CLASSES[0 if value < low else 2 if value > high else 1]
            assert f.numeric_class[key] == want
        assert abs(f.numeric["rr interval"] - 60000 / f.heart_rate_bpm) < 1e-6
        qtc = f.numeric["qt interval"] / np.sqrt(f.numeric["rr interval"] / 1000)
        assert abs(f.numeric["qt corrected"] - qtc) < 1e-6
        assert ("long qt-interval" in f.scp_codes) == (qtc > LONG_QTC_MS[f.sex])
        assert not 440.0 < qtc < 469.999     # no QTc between the two sexes' limits
        long_pr = f.numeric.get("pr interval", 0) > 200
        assert ("prolonged pr interval" in f.scp_codes) == long_pr
        assert ("first degree av block" in f.scp_codes) == long_pr
        rhythm = f.scp_codes[0]
        assert (rhythm == "sinus bradycardia") == (rhythm in RHYTHMS[:3] and f.heart_rate_bpm < 60)
        assert (rhythm == "sinus tachycardia") == (rhythm in RHYTHMS[:3]
                                                   and f.heart_rate_bpm > 100)
        if any(c.startswith("complete") and "bundle" in c for c in f.scp_codes):
            assert f.numeric["qrs duration"] >= 120
        if "left anterior fascicular block" in f.scp_codes:
            assert -90 < f.axis_deg < -40
        assert (f.extra_systole == EXTRA_SYSTOLES[0]) == ("ventricular premature complex"
                                                          in f.scp_codes)


def test_sinus_arrhythmia_rr_spread():
    for f in _find(lambda f: f.scp_codes[0] == "sinus arrhythmia" and f.extra_systole is None, 4):
        onsets = f.plan.onsets_s[(f.plan.onsets_s >= 0) & (f.plan.onsets_s < 10)]
        assert np.ptp(np.diff(onsets)) > 0.12
    for f in _find(lambda f: f.scp_codes[0] == "sinus rhythm" and f.extra_systole is None, 4):
        onsets = f.plan.onsets_s[(f.plan.onsets_s >= 0) & (f.plan.onsets_s < 10)]
        assert np.ptp(np.diff(onsets)) < 0.1


def test_extra_systoles_are_premature_with_a_pause():
    for kind, code in ((1, "ventricular premature complex"), (2, "atrial premature complex")):
        for f in _find(lambda f, c=code: c in f.scp_codes and f.scp_codes[0] == "sinus rhythm",
                       3):
            t, k = f.plan.onsets_s, f.plan.kinds
            for j in np.flatnonzero(k == kind):
                before, after = t[j] - t[j - 1], t[j + 1] - t[j]
                assert before < 0.8 * after


@pytest.mark.parametrize("draws", [500])
def test_sample_facts_covers_every_label(draws):
    rng = np.random.default_rng(2024)
    facts = [sample_facts(rng) for _ in range(draws)]
    codes = {c for f in facts for c in f.scp_codes}
    assert codes == set(SCP_CODES), set(SCP_CODES) - codes
    assert {f.heart_axis for f in facts} == set(AXIS_CLASSES)
    assert {k for f in facts for k in f.noise} == set(NOISE_TYPES)
    assert {f.extra_systole for f in facts} == set(EXTRA_SYSTOLES) | {None}
    assert {c for f in facts for c in f.numeric_class.values()} == set(NUMERIC_CLASSES)
    normal = np.mean([f.scp_codes == ("sinus rhythm",) for f in facts])
    noisy = np.mean([bool(f.noise) for f in facts])
    assert 0.25 < normal < 0.5 and 0.15 < noisy < 0.35
