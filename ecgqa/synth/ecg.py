"""Synthetic labelled 12-lead ECGs: sample ground truth, then render the signal.

``sample_facts(rng)`` draws a record's ground truth (rhythm, conduction, hypertrophy,
ST/T changes, extra systoles, axis, intervals, noise) *and* the complete beat plan that
realises it; every label is then read off that plan, so a code is present only when the
generated morphology shows it. ``synthesize(facts, rng)`` renders the plan through the
3-D dipole model of :mod:`ecgqa.synth.dipole` and adds the labelled noise; its ``rng``
only draws what no label depends on (fibrillatory waves, background and labelled noise).

The steps live beside this module, one job each: :mod:`~ecgqa.synth.findings` (the
discrete findings and target intervals), :mod:`~ecgqa.synth.beat_times` (rhythm),
:mod:`~ecgqa.synth.morphology` (the beats' dipole waves), :mod:`~ecgqa.synth.labelled_noise`;
the answer strings and limits are in :mod:`~ecgqa.synth.ground_truth` and
:mod:`ecgqa.qa.numeric` (all importable from here).

Example:
    >>> rng = np.random.default_rng(0)
    >>> facts = sample_facts(rng)
    >>> signal = synthesize(facts, rng)          # (12, 5000) float32, mV, 500 Hz
    >>> facts.scp_codes[0] in RHYTHMS
    True
"""

from __future__ import annotations

import math

import numpy as np

from ecgqa.qa.numeric import NORMAL_RANGES, NUMERIC_CLASSES, NUMERIC_FEATURES, classify
from ecgqa.records.leads import STANDARD_LEADS
from ecgqa.synth.beat_times import beat_times, window_intervals
from ecgqa.synth.dipole import WAVE_QRS, WAVE_T, Beat, project, project_vectors
from ecgqa.synth.findings import Choices, Intervals, sample_choices, sample_intervals
from ecgqa.synth.ground_truth import (
    AXIS_CLASSES,
    CONDUCTION_CODES,
    DURATION_S,
    EXTRA_SYSTOLES,
    FS,
    KIND_NORMAL,
    KIND_PAC,
    KIND_PVC,
    LEAD_CODES,
    LEAD_GROUPS,
    LONG_QTC_MS,
    N_SAMPLES,
    NOISE_TYPES,
    RHYTHMS,
    SCP_CODES,
    SOKOLOW_LYON_MV,
    ST_DEVIATION_MV,
    T_INVERSION_MV,
    TIMES_S,
    BeatPlan,
    EcgFacts,
    axis_class,
)
from ecgqa.synth.labelled_noise import add_noise, sample_noise
from ecgqa.synth.morphology import build_plan, lead_extremes, sokolow_lyon_mv

__all__ = [
    "FS", "DURATION_S", "N_SAMPLES", "RHYTHMS", "SCP_CODES", "LEAD_CODES", "NOISE_TYPES",
    "EXTRA_SYSTOLES", "AXIS_CLASSES", "NUMERIC_FEATURES", "NUMERIC_CLASSES", "NORMAL_RANGES",
    "LONG_QTC_MS", "SOKOLOW_LYON_MV", "ST_DEVIATION_MV", "T_INVERSION_MV", "LEAD_GROUPS",
    "BeatPlan", "EcgFacts", "classify", "axis_class", "sokolow_lyon_mv", "sample_facts",
    "synthesize",
]


# --------------------------------------------------------------------------- labels


def _leads_where(mask: np.ndarray) -> tuple[str, ...]:
    return tuple(n for n, m in zip(STANDARD_LEADS, mask) if m)


def _lead_labels(beat: Beat) -> dict[str, tuple[str, ...]]:
    """ST elevation/depression (injury current >= 0.1 mV) and inverted T waves (negative
    peak >= 0.1 mV and deeper than any positive part; aVR excluded, its T is normally
    negative) per lead, read from the conducted beat."""
    out: dict[str, tuple[str, ...]] = {}
    if beat.st is not None:
        dev = project_vectors(beat.st.vector[None])[0]                  # (12,)
        out[LEAD_CODES[0]] = _leads_where(dev >= ST_DEVIATION_MV)
        out[LEAD_CODES[1]] = _leads_where(dev <= -ST_DEVIATION_MV)
    lo, hi = lead_extremes(beat.waves.select(WAVE_T))
    inverted = (lo <= -T_INVERSION_MV) & (-lo >= hi)
    inverted[STANDARD_LEADS.index("aVR")] = False
    out[LEAD_CODES[2]] = _leads_where(inverted)
    return {k: v for k, v in out.items() if v}


def _rhythm_code(rhythm: str, rate_bpm: float) -> str:
    if rhythm not in RHYTHMS[:3]:
        return rhythm
    return RHYTHMS[1] if rate_bpm < 60.0 else RHYTHMS[2] if rate_bpm > 100.0 else RHYTHMS[0]


def _qt_ms(iv: Intervals, rr_ms: float) -> float:
    """QT from the drawn QTc, at least QRS + 170 ms; a QTc that this floor pushes into
    440-470 ms (ambiguous between the sexes' limits) is raised to 470 ms."""
    root = math.sqrt(rr_ms / 1000.0)
    qt = max(iv.qtc_ms * root, iv.qrs_ms + 170.0)
    return 470.0 * root if 440.0 < qt / root < 470.0 else qt


def _numeric(iv: Intervals, qt_ms: float, rr_ms: float, atrial: str) -> dict[str, float]:
    values = {"rr interval": rr_ms, "p duration": iv.p_ms, "pr interval": iv.pr_ms,
              "qrs duration": iv.qrs_ms, "qt interval": qt_ms,
              "qt corrected": qt_ms / math.sqrt(rr_ms / 1000.0)}
    if atrial != "sinus":
        del values["p duration"], values["pr interval"]
    return {k: float(v) for k, v in values.items()}


def _codes(ch: Choices, plan: BeatPlan, numeric: dict, rate: float, sex: str,
           lead_labels: dict) -> tuple[str, ...]:
    codes = {_rhythm_code(ch.rhythm, rate), *CONDUCTION_CODES[ch.conduction], *lead_labels}
    if numeric.get("pr interval", 0.0) > 200.0:
        codes |= {"first degree av block", "prolonged pr interval"}
    if sokolow_lyon_mv(plan.normal.waves) > SOKOLOW_LYON_MV:
        codes |= {"left ventricular hypertrophy",
                  "voltage criteria (qrs) for left ventricular hypertrophy"}
    if numeric["qt corrected"] > LONG_QTC_MS[sex]:
        codes.add("long qt-interval")
    inside = plan.kinds[(plan.onsets_s >= 0.0) & (plan.onsets_s < DURATION_S)]
    if np.any(inside == KIND_PVC):
        codes.add("ventricular premature complex")
    if np.any(inside == KIND_PAC):
        codes.add("atrial premature complex")
    return tuple(c for c in SCP_CODES if c in codes)


# --------------------------------------------------------------------------- public API


def sample_facts(rng: np.random.Generator) -> EcgFacts:
    """Draw the ground truth of one record (and the plan that realises it).

    Args:
        rng: the random source; the same state gives the same facts.

    Returns:
        EcgFacts whose labels are read off the generated morphology and beat times.

    Example:
        >>> facts = sample_facts(np.random.default_rng(1))
        >>> sorted(facts.to_dict())[:3]
        ['age', 'axis_deg', 'extra_systole']
    """
    sex = "male" if rng.random() < 0.5 else "female"
    age = int(rng.integers(18, 91))
    ch = sample_choices(rng)
    iv = sample_intervals(ch, rng)
    times = beat_times(ch, iv, rng)
    rr_ms = 1000.0 * float(window_intervals(times[0]).mean())
    qt_ms = _qt_ms(iv, rr_ms)
    plan = build_plan(ch, iv, qt_ms, times, rng)
    numeric = _numeric(iv, qt_ms, rr_ms, plan.atrial)
    rate = 60000.0 / rr_ms
    lead_labels = _lead_labels(plan.normal)
    inside = plan.kinds[(plan.onsets_s >= 0.0) & (plan.onsets_s < DURATION_S)]
    extra = (EXTRA_SYSTOLES[0] if np.any(inside == KIND_PVC)
             else EXTRA_SYSTOLES[1] if np.any(inside == KIND_PAC) else None)
    axis = plan.normal.waves.select(WAVE_QRS).frontal_axis_deg()
    return EcgFacts(
        scp_codes=_codes(ch, plan, numeric, rate, sex, lead_labels),
        scp_leads=lead_labels, noise=sample_noise(rng), extra_systole=extra,
        heart_axis=axis_class(axis), axis_deg=axis, numeric=numeric,
        numeric_class={k: classify(k, v) for k, v in numeric.items()},
        heart_rate_bpm=rate, age=age, sex=sex, plan=plan,
    )


def synthesize(facts: EcgFacts, rng: np.random.Generator) -> np.ndarray:
    """Render a record: 12 leads, 500 Hz, 10 s, millivolts.

    Args:
        facts: from :func:`sample_facts`.
        rng: draws fibrillatory waves, background and the labelled noise only.

    Returns:
        float32 ``(12, 5000)`` in the order of ``STANDARD_LEADS``. Without labelled noise,
        III, aVR, aVL and aVF equal their Einthoven/Goldberger combinations of I and II.
    """
    plan = facts.plan
    dipole = np.zeros((3, N_SAMPLES))                                   # (3, n) mV
    for kind, beat in ((KIND_NORMAL, plan.normal), (KIND_PVC, plan.pvc),
                       (KIND_PAC, plan.pac)):
        if beat is None or not np.any(plan.kinds == kind):
            continue
        first, template = beat.template(FS)                            # (3, L)
        for onset in plan.onsets_s[plan.kinds == kind]:
            _add_template(dipole, template, int(round(onset * FS)) + first)
    dipole += _atrial_activity(plan, rng) + _background(rng)
    leads = project(dipole)                                              # (12, n)
    add_noise(leads, facts.noise, rng)
    return leads.astype(np.float32)


# --------------------------------------------------------------------------- rendering


def _add_template(dipole: np.ndarray, template: np.ndarray, start: int) -> None:
    a, b = max(start, 0), min(start + template.shape[1], dipole.shape[1])
    if b > a:
        dipole[:, a:b] += template[:, a - start:b - start]


def _atrial_activity(plan: BeatPlan, rng: np.random.Generator) -> np.ndarray:
    """Fibrillatory f waves (3 drifting 5-8 Hz sources) or a flutter sawtooth, ``(3, n)``."""
    if plan.atrial == "fibrillation":
        out = np.zeros((3, N_SAMPLES))
        for _ in range(3):
            f = rng.uniform(5.0, 8.0)
            wobble = rng.uniform(0.5, 1.5) * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * TIMES_S
                                                    + rng.uniform(0, 2 * np.pi))
            env = 0.7 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * TIMES_S
                                     + rng.uniform(0, 2 * np.pi))
            u = plan.atrial_vector + 0.4 * np.linalg.norm(plan.atrial_vector) * \
                rng.standard_normal(3)
            out += np.outer(u, env * np.sin(2 * np.pi * f * TIMES_S + wobble))
        return out / np.sqrt(3.0)
    if plan.atrial == "flutter":
        f0, cycle = plan.flutter
        phase = ((TIMES_S - f0) / cycle) % 1.0
        saw = np.where(phase < 0.7, 1.0 - 2.0 * phase / 0.7, -1.0 + 2.0 * (phase - 0.7) / 0.3)
        saw = np.convolve(saw, np.ones(9) / 9.0, mode="same")
        return np.outer(plan.atrial_vector, saw)
    return 0.0


def _background(rng: np.random.Generator) -> np.ndarray:
    """Small physiological background in the dipole itself (keeps the lead relations)."""
    drift = 0.015 * np.sin(2 * np.pi * rng.uniform(0.1, 0.3) * TIMES_S
                           + rng.uniform(0, 2 * np.pi))
    return rng.normal(0.0, 0.004, (3, N_SAMPLES)) + np.outer(rng.standard_normal(3), drift)
