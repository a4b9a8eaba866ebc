"""Synthetic labelled 12-lead ECGs: sample ground truth, then render the signal.

``sample_facts(rng)`` draws a record's ground truth (rhythm, conduction, hypertrophy,
ST/T changes, extra systoles, axis, intervals, noise) *and* the complete beat plan that
realises it; every label is then read off that plan, so a code is present only when the
generated morphology shows it. ``synthesize(facts, rng)`` renders the plan through the
3-D dipole model of :mod:`ecgqa.synth.dipole` and adds the labelled noise; its ``rng``
only draws what no label depends on (fibrillatory waves, background and labelled noise).

Example:
    >>> rng = np.random.default_rng(0)
    >>> facts = sample_facts(rng)
    >>> signal = synthesize(facts, rng)          # (12, 5000) float32, mV, 500 Hz
    >>> facts.scp_codes[0] in RHYTHMS
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ecgqa.records.leads import STANDARD_LEADS
from ecgqa.synth.dipole import (
    WAVE_QRS,
    WAVE_T,
    Beat,
    StShift,
    Waves,
    p_waves,
    project,
    project_vectors,
    pvc_waves,
    qrs_waves,
    rotation,
    t_waves,
)

FS = 500.0
DURATION_S = 10.0
N_SAMPLES = int(FS * DURATION_S)

RHYTHMS = ("sinus rhythm", "sinus bradycardia", "sinus tachycardia", "sinus arrhythmia",
           "atrial fibrillation", "atrial flutter")
SCP_CODES = RHYTHMS + (
    "first degree av block", "complete right bundle branch block",
    "incomplete right bundle branch block", "complete left bundle branch block",
    "incomplete left bundle branch block", "left anterior fascicular block",
    "left ventricular hypertrophy", "voltage criteria (qrs) for left ventricular hypertrophy",
    "long qt-interval", "non-specific st elevation", "non-specific st depression",
    "inverted t-waves", "ventricular premature complex", "atrial premature complex",
    "prolonged pr interval",
)
LEAD_CODES = ("non-specific st elevation", "non-specific st depression", "inverted t-waves")
NOISE_TYPES = ("baseline drift", "static noise", "burst noise", "electrodes problems")
EXTRA_SYSTOLES = ("ventricular extrasystoles", "supraventricular extrasystoles")
AXIS_CLASSES = ("normal heart axis", "left axis deviation", "right axis deviation",
                "extreme axis deviation")
NUMERIC_FEATURES = ("rr interval", "p duration", "pr interval", "qrs duration", "qt interval",
                    "qt corrected")
NUMERIC_CLASSES = ("below the normal range", "within the normal range", "above the normal range")
# Adult normal limits (ms). RR 600-1000 = heart rate 60-100 bpm; P < 120; PR 120-200;
# QRS 70-110 (AHA/ACCF/HRS 2009: 110-119 ms is incomplete bundle branch block);
# QT 350-450 (uncorrected); QTc (Bazett) 350-450, the male limit; see docs/synth.md.
NORMAL_RANGES: dict[str, tuple[float, float]] = {
    "rr interval": (600.0, 1000.0),
    "p duration": (80.0, 120.0),
    "pr interval": (120.0, 200.0),
    "qrs duration": (70.0, 110.0),
    "qt interval": (350.0, 450.0),
    "qt corrected": (350.0, 450.0),
}
LONG_QTC_MS = {"male": 450.0, "female": 460.0}
SOKOLOW_LYON_MV = 3.5          # S V1 + max(R V5, R V6)
ST_DEVIATION_MV = 0.1          # |ST shift| at J + 60 ms that counts as elevation/depression
T_INVERSION_MV = 0.1           # a T wave whose negative peak is at least this deep
LEAD_GROUPS = {
    "anterior": ("V1", "V2", "V3", "V4"),
    "inferior": ("II", "III", "aVF"),
    "lateral": ("I", "aVL", "V5", "V6"),
}
_CONDUCTION_CODES = {
    "normal": (),
    "rbbb": ("complete right bundle branch block",),
    "irbbb": ("incomplete right bundle branch block",),
    "lbbb": ("complete left bundle branch block",),
    "ilbbb": ("incomplete left bundle branch block",),
    "lafb": ("left anterior fascicular block",),
    "rbbb+lafb": ("complete right bundle branch block", "left anterior fascicular block"),
}
_QRS_MS = {"normal": (78, 104), "rbbb": (124, 160), "irbbb": (102, 118), "lbbb": (126, 170),
           "ilbbb": (102, 118), "lafb": (88, 112), "rbbb+lafb": (124, 156)}
_KIND_NORMAL, _KIND_PVC, _KIND_PAC = 0, 1, 2


@dataclass(frozen=True, eq=False)
class BeatPlan:
    """Everything :func:`synthesize` renders: beat times, morphologies, atrial activity.

    Attributes:
        onsets_s: ``(beats,)`` QRS onset times; some fall outside the 10 s window.
        kinds: ``(beats,)`` 0 conducted beat, 1 ventricular, 2 atrial premature beat.
        normal, pvc, pac: the beat morphologies (``pvc``/``pac`` None when unused).
        atrial: ``"sinus"``, ``"fibrillation"`` or ``"flutter"``.
        flutter: ``(first F-wave onset s, F-wave cycle s)`` for flutter, else None.
        atrial_vector: ``(3,)`` direction and size (mV) of f or F waves.
    """

    onsets_s: np.ndarray
    kinds: np.ndarray
    normal: Beat
    pvc: Beat | None = None
    pac: Beat | None = None
    atrial: str = "sinus"
    flutter: tuple[float, float] | None = None
    atrial_vector: np.ndarray = field(default_factory=lambda: np.zeros(3))


@dataclass(frozen=True)
class EcgFacts:
    """Ground truth of one synthetic record, in ECG-QA's answer strings.

    Attributes:
        scp_codes: exactly one rhythm from ``RHYTHMS`` first, then other ``SCP_CODES``.
        scp_leads: for ``LEAD_CODES`` present, the leads showing them.
        noise: noise type (``NOISE_TYPES``) -> affected leads; empty when clean.
        extra_systole: None or one of ``EXTRA_SYSTOLES``.
        heart_axis: one of ``AXIS_CLASSES``, from ``axis_deg``.
        axis_deg: frontal angle of the mean (area) QRS vector of the conducted beats.
        numeric: ``NUMERIC_FEATURES`` -> ms (no P duration / PR in fibrillation, flutter).
        numeric_class: the same keys -> one of ``NUMERIC_CLASSES`` per ``NORMAL_RANGES``.
        heart_rate_bpm: 60000 / mean RR of the beats inside the 10 s.
        age, sex: demographics (``"male"`` / ``"female"``).
        plan: what :func:`synthesize` renders (not part of the labels).
    """

    scp_codes: tuple[str, ...]
    scp_leads: dict[str, tuple[str, ...]]
    noise: dict[str, tuple[str, ...]]
    extra_systole: str | None
    heart_axis: str
    axis_deg: float
    numeric: dict[str, float]
    numeric_class: dict[str, str]
    heart_rate_bpm: float
    age: int
    sex: str
    plan: BeatPlan = field(repr=False, compare=False)

    def to_dict(self) -> dict:
        """JSON-serialisable labels (everything but ``plan``)."""
        return {
            "scp_codes": list(self.scp_codes),
            "scp_leads": {k: list(v) for k, v in self.scp_leads.items()},
            "noise": {k: list(v) for k, v in self.noise.items()},
            "extra_systole": self.extra_systole,
            "heart_axis": self.heart_axis,
            "axis_deg": float(self.axis_deg),
            "numeric": {k: float(v) for k, v in self.numeric.items()},
            "numeric_class": dict(self.numeric_class),
            "heart_rate_bpm": float(self.heart_rate_bpm),
            "age": int(self.age),
            "sex": self.sex,
        }


def classify(feature: str, value_ms: float) -> str:
    """``NUMERIC_CLASSES`` entry of ``value_ms`` against ``NORMAL_RANGES[feature]``."""
    low, high = NORMAL_RANGES[feature]
    if value_ms < low:
        return NUMERIC_CLASSES[0]
    return NUMERIC_CLASSES[2] if value_ms > high else NUMERIC_CLASSES[1]


def axis_class(deg: float) -> str:
    """Heart-axis class: normal -30..90, left -90..-30, right 90..180, extreme -180..-90."""
    deg = (deg + 180.0) % 360.0 - 180.0
    if -30.0 <= deg <= 90.0:
        return AXIS_CLASSES[0]
    if -90.0 <= deg < -30.0:
        return AXIS_CLASSES[1]
    return AXIS_CLASSES[2] if deg > 90.0 else AXIS_CLASSES[3]


# --------------------------------------------------------------------------- choices


@dataclass(frozen=True)
class _Choices:
    """The discrete draws of one record, before intervals and morphology."""

    normal: bool
    rhythm: str                      # one of RHYTHMS (sinus ones refined by the rate)
    conduction: str                  # key of _CONDUCTION_CODES
    av_block: bool
    lvh: bool
    st: tuple[str, str] | None       # ("elevation" | "depression", lead group)
    t_inversion: str | None          # lead group
    qt: str                          # "normal" | "long" | "short"
    pr: str                          # "normal" | "long" | "short"
    p: str                           # "normal" | "long" | "short"
    short_qrs: bool
    extra: str | None                # "pvc" | "pac" | None
    axis: str                        # one of AXIS_CLASSES


def _pick(rng: np.random.Generator, options: dict) -> object:
    keys = list(options)
    w = np.array([options[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=w / w.sum()))]


def _sample_choices(rng: np.random.Generator) -> _Choices:
    """About 35 % fully normal records; the rest mix rhythm, conduction and other findings."""
    if rng.random() < 0.35:
        return _Choices(True, "sinus rhythm", "normal", False, False, None, None, "normal",
                        "normal", "normal", False, None, AXIS_CLASSES[0])
    rhythm = _pick(rng, {RHYTHMS[0]: 0.36, RHYTHMS[1]: 0.13, RHYTHMS[2]: 0.13,
                         RHYTHMS[3]: 0.12, RHYTHMS[4]: 0.15, RHYTHMS[5]: 0.11})
    sinus = rhythm in RHYTHMS[:4]
    conduction = _pick(rng, {"normal": 0.45, "rbbb": 0.11, "irbbb": 0.09, "lbbb": 0.09,
                             "ilbbb": 0.07, "lafb": 0.12, "rbbb+lafb": 0.07})
    st = None
    if rng.random() < 0.3:
        st = (str(rng.choice(["elevation", "depression"])), str(rng.choice(list(LEAD_GROUPS))))
    extra = _pick(rng, {None: 0.7, "pvc": 0.15, "pac": 0.15 if sinus else 0.0})
    lvh = conduction not in ("lbbb", "ilbbb") and rng.random() < 0.15
    axis = _sample_axis_class(rng, conduction)
    if lvh and axis in AXIS_CLASSES[2:]:  # LVH voltage is leftward: no right/extreme axis
        axis = AXIS_CLASSES[0]
    return _Choices(
        normal=False, rhythm=rhythm, conduction=conduction,
        av_block=sinus and rng.random() < 0.18,
        lvh=lvh,
        st=st,
        t_inversion=str(rng.choice(list(LEAD_GROUPS))) if rng.random() < 0.15 else None,
        qt=_pick(rng, {"normal": 0.8, "long": 0.15, "short": 0.05}),
        pr=_pick(rng, {"normal": 0.93, "short": 0.07}),
        p=_pick(rng, {"normal": 0.84, "long": 0.08, "short": 0.08}),
        short_qrs=conduction == "normal" and rng.random() < 0.06,
        extra=extra, axis=axis,
    )


def _sample_axis_class(rng: np.random.Generator, conduction: str) -> str:
    if "lafb" in conduction:
        return AXIS_CLASSES[1]
    if conduction in ("lbbb", "ilbbb"):
        return _pick(rng, {AXIS_CLASSES[0]: 0.7, AXIS_CLASSES[1]: 0.3})
    return _pick(rng, {AXIS_CLASSES[0]: 0.55, AXIS_CLASSES[1]: 0.18, AXIS_CLASSES[2]: 0.17,
                       AXIS_CLASSES[3]: 0.10})


def _sample_axis_deg(rng: np.random.Generator, cls: str, conduction: str) -> float:
    """Axis inside its class, 5 degrees clear of the class limits."""
    if "lafb" in conduction:
        return float(rng.uniform(-75.0, -45.0))
    if conduction in ("lbbb", "ilbbb") and cls == AXIS_CLASSES[0]:
        return float(rng.uniform(-20.0, 75.0))
    low, high = {AXIS_CLASSES[0]: (-25.0, 85.0), AXIS_CLASSES[1]: (-85.0, -35.0),
                 AXIS_CLASSES[2]: (95.0, 175.0), AXIS_CLASSES[3]: (-175.0, -95.0)}[cls]
    return float(rng.uniform(low, high))


# --------------------------------------------------------------------------- intervals


@dataclass(frozen=True)
class _Intervals:
    rate_bpm: float      # target ventricular rate
    p_ms: float
    pr_ms: float
    qrs_ms: float
    qtc_ms: float        # target QTc (Bazett)


def _sample_intervals(ch: _Choices, rng: np.random.Generator) -> _Intervals:
    u = rng.uniform
    rate = {RHYTHMS[0]: (62, 97), RHYTHMS[1]: (40, 56), RHYTHMS[2]: (104, 150),
            RHYTHMS[3]: (55, 95), RHYTHMS[4]: (60, 150)}.get(ch.rhythm, (60, 150))
    pr = (u(215, 320) if ch.av_block else u(100, 116) if ch.pr == "short" else u(125, 195))
    p = {"normal": u(82, 115), "long": u(125, 140), "short": u(62, 76)}[ch.p]
    p = min(p, pr - 25.0)
    lo, hi = _QRS_MS[ch.conduction]
    qrs = u(62, 68) if ch.short_qrs else u(lo, hi)
    if ch.lvh:
        qrs = min(qrs + u(0, 8), 110.0) if hi <= 110 else qrs
    qtc = {"normal": u(375, 440), "long": u(470, 560), "short": u(320, 345)}[ch.qt]
    return _Intervals(u(*rate), p, pr, qrs, qtc)


# --------------------------------------------------------------------------- rhythm


def _window_intervals(onsets: np.ndarray) -> np.ndarray:
    """RR intervals (s) between consecutive beats whose QRS starts inside the record."""
    inside = onsets[(onsets >= 0.0) & (onsets < DURATION_S)]
    return np.diff(inside)


def _times(intervals: np.ndarray, start: float) -> np.ndarray:
    return start + np.concatenate([[0.0], np.cumsum(intervals)])


def _normalise_rate(intervals: np.ndarray, start: float, rr: float) -> np.ndarray:
    """Scale intervals so the in-record mean RR is ``rr`` (a few fixed-point steps)."""
    for _ in range(4):
        m = _window_intervals(_times(intervals, start)).mean()
        intervals = intervals * (rr / m)
    return intervals


def _sinus_times(rr: float, arrhythmia: bool, rng: np.random.Generator) -> np.ndarray:
    """Sinus beats: slow random HRV, or respiratory modulation with > 120 ms RR spread."""
    n = int(np.ceil((DURATION_S + 2.0) / (0.7 * rr))) + 2
    start = -rng.uniform(0.05, 1.0) * rr
    walk = np.zeros(n)
    for i in range(1, n):                              # AR(1) beat-to-beat variability
        walk[i] = 0.7 * walk[i - 1] + rng.normal(0.0, 0.012)
    dev = rr * walk
    if arrhythmia:
        period = rng.uniform(3.0, 6.0)
        phase = rng.uniform(0, 2 * np.pi)
        dev = dev + rng.uniform(0.08, 0.16) * np.sin(2 * np.pi * np.arange(n) * rr / period
                                                     + phase)
    intervals = np.maximum(rr + dev, 0.3)
    intervals = _normalise_rate(intervals, start, rr)
    spread = np.ptp(_window_intervals(_times(intervals, start)))
    target = 0.14 if arrhythmia else 0.08
    if (arrhythmia and spread < target) or (not arrhythmia and spread > target):
        mean = intervals.mean()
        intervals = mean + (intervals - mean) * (target / max(spread, 1e-6))
        intervals = _normalise_rate(intervals, start, rr)
    return _times(intervals, start)


def _af_times(rr: float, rng: np.random.Generator) -> np.ndarray:
    """Irregularly irregular ventricular response: log-normal RR, coefficient of variation
    at least 0.15 inside the record."""
    n = int(np.ceil((DURATION_S + 2.0) / (0.3 * rr))) + 2
    start = -rng.uniform(0.05, 1.0) * rr
    sigma = rng.uniform(0.2, 0.32)
    for _ in range(20):
        intervals = np.maximum(rr * rng.lognormal(-sigma ** 2 / 2, sigma, n), 0.28)
        intervals = _normalise_rate(intervals, start, rr)
        w = _window_intervals(_times(intervals, start))
        if w.std() / w.mean() >= 0.15:
            break
        sigma = min(sigma * 1.15, 0.45)
    return _times(intervals, start)


def _flutter_times(rate: float, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """F waves at 250-330/min; conduction 2:1, 4:1 or variable (2:1 / 4:1 / 3:1).

    Returns:
        QRS onset times, first F-wave onset, F-wave cycle (s).
    """
    cycle = 60.0 / rng.uniform(250.0, 330.0)
    ratio = 2 if rate > 110 else 4 if rate < 80 else 0
    f0 = -rng.uniform(0.0, 4 * cycle) - 0.5
    n_f = int((DURATION_S + 1.5) / cycle) + 8
    if ratio:
        steps = np.full(n_f, ratio)
    else:
        steps = rng.choice([2, 3, 4], size=n_f, p=[0.5, 0.15, 0.35])
    conducted = np.cumsum(steps)
    conducted = conducted[conducted < n_f]
    av = rng.uniform(0.2, 0.28)
    return f0 + conducted * cycle + av, f0, cycle


def _insert_ectopics(onsets: np.ndarray, kind: str | None,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Make 1-3 beats premature.

    A PVC replaces beat ``j + 1`` early and leaves the next beat on time (full
    compensatory pause); a PAC comes early and resets the sinus node (the next beat
    follows one cycle later: incomplete compensation).
    """
    onsets = onsets.copy()
    kinds = np.zeros(len(onsets), dtype=int)
    if kind is None:
        return onsets, kinds
    ok = np.flatnonzero((onsets[1:-1] > 0.4) & (onsets[1:-1] < DURATION_S - 1.2)) + 1
    count = int(rng.integers(1, 4))
    chosen: list[int] = []
    for j in rng.permutation(ok):
        if len(chosen) < count and all(abs(j - c) > 2 for c in chosen):
            chosen.append(int(j))
    for j in sorted(chosen):
        rr = onsets[j] - onsets[j - 1]
        if kind == "pvc":
            onsets[j] = onsets[j - 1] + rng.uniform(0.5, 0.65) * rr
            kinds[j] = _KIND_PVC
        else:
            early = onsets[j - 1] + rng.uniform(0.6, 0.75) * rr
            onsets[j + 1:] += early + rng.uniform(1.0, 1.1) * rr - onsets[j + 1]
            onsets[j] = early
            kinds[j] = _KIND_PAC
    return onsets, kinds


def _beat_times(ch: _Choices, iv: _Intervals, rng: np.random.Generator):
    """QRS onsets, kinds and the flutter timing of a record."""
    rr = 60.0 / iv.rate_bpm
    flutter = None
    if ch.rhythm == "atrial fibrillation":
        onsets = _af_times(rr, rng)
    elif ch.rhythm == "atrial flutter":
        onsets, f0, cycle = _flutter_times(iv.rate_bpm, rng)
        flutter = (f0, cycle)
    else:
        onsets = _sinus_times(rr, ch.rhythm == "sinus arrhythmia", rng)
    onsets, kinds = _insert_ectopics(onsets, ch.extra, rng)
    return onsets, kinds, flutter


# --------------------------------------------------------------------------- morphology

_ST_DIRECTIONS = {"anterior": (0.1, 0.1, 1.0), "inferior": (0.05, 1.0, 0.1),
                  "lateral": (1.0, -0.3, 0.15)}


def _lead_extremes(waves: Waves) -> tuple[np.ndarray, np.ndarray]:
    """Per-lead minimum and maximum ``(12,)``, ``(12,)`` of some components, in mV."""
    t = np.arange(waves.onset_ms, waves.offset_ms + 1.0, 1.0)
    x = project(waves.render(t))                                     # (12, n)
    return x.min(axis=1), x.max(axis=1)


def sokolow_lyon_mv(qrs: Waves) -> float:
    """S in V1 plus the larger R of V5 and V6 (mV) of a QRS (noise-free components)."""
    lo, hi = _lead_extremes(qrs.select(WAVE_QRS))
    v1, v5, v6 = (STANDARD_LEADS.index(n) for n in ("V1", "V5", "V6"))
    return float(max(-lo[v1], 0.0) + max(hi[v5], hi[v6]))


def _conducted_qrs(ch: _Choices, qrs_ms: float, rng: np.random.Generator) -> Waves:
    """The conduction template, jittered, turned in the chest, scaled, rotated to its axis,
    and with its voltage set for (or kept below) the Sokolow-Lyon criterion."""
    qrs = qrs_waves(ch.conduction, qrs_ms)
    jitter = 1.0 + 0.12 * rng.standard_normal(qrs.vectors.shape)       # (k, 3)
    qrs = qrs.with_vectors(qrs.vectors * jitter)
    turn = rotation("y", rng.uniform(-15.0, 15.0)) @ rotation("x", rng.uniform(-8.0, 8.0))
    bbb = ch.conduction in ("lbbb", "ilbbb")
    amp = rng.uniform(1.4, 1.9) if bbb else rng.uniform(0.7, 1.15)
    qrs = qrs.transformed(amp * turn)
    target = _sample_axis_deg(rng, ch.axis, ch.conduction)
    qrs = qrs.turned_to_axis(target)
    if ch.lvh:
        lvh = _lvh_voltage(qrs, rng.uniform(3.8, 5.2))
        if sokolow_lyon_mv(lvh) >= SOKOLOW_LYON_MV + 0.1:
            return lvh          # otherwise (rare: a loop facing away from V1/V5) no LVH
    scale = min(1.0, 2.6 / _peak_mv(qrs))                 # no lead beyond ~2.6 mV
    voltage = scale * sokolow_lyon_mv(qrs)
    if voltage > 3.2:
        scale *= rng.uniform(2.4, 3.2) / voltage
    return qrs.transformed(np.eye(3) * scale)


def _lvh_voltage(qrs: Waves, target_mv: float) -> Waves:
    """Raise the Sokolow-Lyon voltage towards ``target_mv``: first the anteroposterior
    (precordial) forces, up to 1.8x, which leaves the frontal axis unchanged, then all
    forces, up to 2x. The LVH codes are read off the result, not assumed."""
    kz = min(np.sqrt(target_mv / sokolow_lyon_mv(qrs)), 1.8)
    qrs = qrs.transformed(np.diag([1.0, 1.0, kz]))
    k = float(np.clip(target_mv / sokolow_lyon_mv(qrs), 1.0, 2.0))
    k = min(k, 4.2 / _peak_mv(qrs))                       # no lead beyond 4.2 mV
    return qrs.transformed(np.eye(3) * k)


def _peak_mv(waves: Waves) -> float:
    """Largest deflection over the 12 leads (mV)."""
    lo, hi = _lead_extremes(waves)
    return float(max(np.max(hi), np.max(-lo)))


def _t_vector(region: str | None, rng: np.random.Generator) -> np.ndarray:
    """T-wave dipole: upright except in aVR (and at most flat in V1/III), or inverted in a
    lead group."""
    theta, z, amp = {
        None: ((25, 65), (0.45, 0.9), (0.2, 0.38)),
        "anterior": ((20, 60), (-1.0, -0.7), (0.3, 0.5)),
        "inferior": ((-85, -55), (0.2, 0.5), (0.3, 0.5)),
        "lateral": ((130, 160), (0.1, 0.4), (0.3, 0.5)),
    }[region]
    a = np.deg2rad(rng.uniform(*theta))
    return rng.uniform(*amp) * np.array([np.cos(a), np.sin(a), rng.uniform(*z)])


def _st_shift(st: tuple[str, str] | None, t: Waves, qrs_ms: float,
              rng: np.random.Generator) -> StShift | None:
    """Injury current towards (elevation) or away from (depression) a lead group, sized so
    the group's most affected lead shifts 0.12-0.35 mV. Reciprocal changes in opposite
    leads follow from the dipole and are labelled like any other ST shift."""
    if st is None:
        return None
    kind, region = st
    sign = 1.0 if kind == "elevation" else -1.0
    u = np.array(_ST_DIRECTIONS[region]) / np.linalg.norm(_ST_DIRECTIONS[region])
    dev = project_vectors(u[None])[0]                                    # (12,)
    rows = [STANDARD_LEADS.index(n) for n in LEAD_GROUPS[region]]
    scale = rng.uniform(0.12, 0.35) / np.max(dev[rows])
    fade = max(float(t.center_ms.max()), qrs_ms + 80.0)
    return StShift(sign * scale * u, j_ms=qrs_ms, fade_ms=fade, end_ms=t.offset_ms)


def _pvc_beat(rng: np.random.Generator) -> Beat:
    """Wide (140-180 ms) ectopic QRS from a random focus, no P, discordant T."""
    q = rng.uniform(140.0, 180.0)
    d = rng.standard_normal(3)
    d *= rng.uniform(1.2, 2.0) / np.linalg.norm(d)
    bend = rng.standard_normal(3)
    qrs = pvc_waves(q, d, bend / np.linalg.norm(bend))
    qrs = qrs.transformed(np.eye(3) * min(1.0, 3.5 / _peak_mv(qrs)))   # <= 3.5 mV
    mean = qrs.area_vector() / np.linalg.norm(qrs.area_vector())
    t = t_waves(q, q + rng.uniform(240.0, 300.0), -rng.uniform(0.35, 0.6) * mean)
    return Beat(qrs + t)


def _pac_p(iv: _Intervals, rng: np.random.Generator) -> Waves:
    """Ectopic atrial P: superior/odd axis (inverted in the inferior leads)."""
    direction = np.array([rng.uniform(-0.3, 0.6), -1.0, rng.uniform(-0.3, 0.5)])
    p_ms = rng.uniform(70.0, 100.0)
    pr = max(iv.pr_ms + rng.uniform(-20.0, 10.0), p_ms + 30.0)
    return p_waves(pr, p_ms, rng.uniform(0.1, 0.18), ectopic=direction)


def _build_plan(ch: _Choices, iv: _Intervals, qt_ms: float, times: tuple,
                rng: np.random.Generator) -> BeatPlan:
    onsets, kinds, flutter = times
    qrs = _conducted_qrs(ch, iv.qrs_ms, rng)
    t = t_waves(iv.qrs_ms, qt_ms, _t_vector(ch.t_inversion, rng))
    st = _st_shift(ch.st, t, iv.qrs_ms, rng)
    atrial = {RHYTHMS[4]: "fibrillation", RHYTHMS[5]: "flutter"}.get(ch.rhythm, "sinus")
    waves = qrs + t
    if atrial == "sinus":
        waves = p_waves(iv.pr_ms, iv.p_ms, rng.uniform(0.08, 0.18)) + waves
    if atrial == "fibrillation":
        vector = rng.uniform(0.05, 0.12) * np.array([-0.4, rng.uniform(0.1, 0.5), 0.9])
    else:
        vector = rng.uniform(0.12, 0.22) * np.array([rng.uniform(-0.1, 0.3), 1.0, -0.3])
    return BeatPlan(
        onsets_s=onsets, kinds=kinds, normal=Beat(waves, st),
        pvc=_pvc_beat(rng) if ch.extra == "pvc" else None,
        pac=Beat(_pac_p(iv, rng) + qrs + t, st) if ch.extra == "pac" else None,
        atrial=atrial, flutter=flutter, atrial_vector=vector,
    )


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
    lo, hi = _lead_extremes(beat.waves.select(WAVE_T))
    inverted = (lo <= -T_INVERSION_MV) & (-lo >= hi)
    inverted[STANDARD_LEADS.index("aVR")] = False
    out[LEAD_CODES[2]] = _leads_where(inverted)
    return {k: v for k, v in out.items() if v}


def _rhythm_code(rhythm: str, rate_bpm: float) -> str:
    if rhythm not in RHYTHMS[:3]:
        return rhythm
    return RHYTHMS[1] if rate_bpm < 60.0 else RHYTHMS[2] if rate_bpm > 100.0 else RHYTHMS[0]


def _qt_ms(iv: _Intervals, rr_ms: float) -> float:
    """QT from the drawn QTc, at least QRS + 170 ms; a QTc that this floor pushes into
    440-470 ms (ambiguous between the sexes' limits) is raised to 470 ms."""
    root = math.sqrt(rr_ms / 1000.0)
    qt = max(iv.qtc_ms * root, iv.qrs_ms + 170.0)
    return 470.0 * root if 440.0 < qt / root < 470.0 else qt


def _numeric(iv: _Intervals, qt_ms: float, rr_ms: float, atrial: str) -> dict[str, float]:
    values = {"rr interval": rr_ms, "p duration": iv.p_ms, "pr interval": iv.pr_ms,
              "qrs duration": iv.qrs_ms, "qt interval": qt_ms,
              "qt corrected": qt_ms / math.sqrt(rr_ms / 1000.0)}
    if atrial != "sinus":
        del values["p duration"], values["pr interval"]
    return {k: float(v) for k, v in values.items()}


def _codes(ch: _Choices, plan: BeatPlan, numeric: dict, rate: float, sex: str,
           lead_labels: dict) -> tuple[str, ...]:
    codes = {_rhythm_code(ch.rhythm, rate), *_CONDUCTION_CODES[ch.conduction], *lead_labels}
    if numeric.get("pr interval", 0.0) > 200.0:
        codes |= {"first degree av block", "prolonged pr interval"}
    if sokolow_lyon_mv(plan.normal.waves) > SOKOLOW_LYON_MV:
        codes |= {"left ventricular hypertrophy",
                  "voltage criteria (qrs) for left ventricular hypertrophy"}
    if numeric["qt corrected"] > LONG_QTC_MS[sex]:
        codes.add("long qt-interval")
    inside = plan.kinds[(plan.onsets_s >= 0.0) & (plan.onsets_s < DURATION_S)]
    if np.any(inside == _KIND_PVC):
        codes.add("ventricular premature complex")
    if np.any(inside == _KIND_PAC):
        codes.add("atrial premature complex")
    return tuple(c for c in SCP_CODES if c in codes)


# --------------------------------------------------------------------------- noise labels


def _noise_leads(kind: str, rng: np.random.Generator) -> tuple[str, ...]:
    if kind == "electrodes problems":
        picked = set(rng.choice(STANDARD_LEADS, size=int(rng.integers(1, 3)), replace=False))
    else:
        scope = _pick(rng, {"all": 0.4, "limb": 0.2, "precordial": 0.2, "few": 0.2})
        picked = {"all": set(STANDARD_LEADS), "limb": set(STANDARD_LEADS[:6]),
                  "precordial": set(STANDARD_LEADS[6:]),
                  "few": set(rng.choice(STANDARD_LEADS, size=int(rng.integers(1, 4)),
                                        replace=False))}[scope]
    return tuple(n for n in STANDARD_LEADS if n in picked)


def _sample_noise(rng: np.random.Generator) -> dict[str, tuple[str, ...]]:
    """About a quarter of the records carry one or two labelled noise types."""
    if rng.random() >= 0.25:
        return {}
    n = 1 if rng.random() < 0.7 else 2
    kinds = sorted(rng.choice(len(NOISE_TYPES), size=n, replace=False))
    return {NOISE_TYPES[k]: _noise_leads(NOISE_TYPES[k], rng) for k in kinds}


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
    ch = _sample_choices(rng)
    iv = _sample_intervals(ch, rng)
    times = _beat_times(ch, iv, rng)
    rr_ms = 1000.0 * float(_window_intervals(times[0]).mean())
    qt_ms = _qt_ms(iv, rr_ms)
    plan = _build_plan(ch, iv, qt_ms, times, rng)
    numeric = _numeric(iv, qt_ms, rr_ms, plan.atrial)
    rate = 60000.0 / rr_ms
    lead_labels = _lead_labels(plan.normal)
    inside = plan.kinds[(plan.onsets_s >= 0.0) & (plan.onsets_s < DURATION_S)]
    extra = (EXTRA_SYSTOLES[0] if np.any(inside == _KIND_PVC)
             else EXTRA_SYSTOLES[1] if np.any(inside == _KIND_PAC) else None)
    axis = plan.normal.waves.select(WAVE_QRS).frontal_axis_deg()
    return EcgFacts(
        scp_codes=_codes(ch, plan, numeric, rate, sex, lead_labels),
        scp_leads=lead_labels, noise=_sample_noise(rng), extra_systole=extra,
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
    for kind, beat in ((_KIND_NORMAL, plan.normal), (_KIND_PVC, plan.pvc),
                       (_KIND_PAC, plan.pac)):
        if beat is None or not np.any(plan.kinds == kind):
            continue
        first, template = beat.template(FS)                            # (3, L)
        for onset in plan.onsets_s[plan.kinds == kind]:
            _add_template(dipole, template, int(round(onset * FS)) + first)
    dipole += _atrial_activity(plan, rng) + _background(rng)
    leads = project(dipole)                                              # (12, n)
    for kind, names in facts.noise.items():
        rows = np.array([STANDARD_LEADS.index(n) for n in names])
        _NOISE[kind](leads, rows, rng)
    return leads.astype(np.float32)


# --------------------------------------------------------------------------- rendering

_T_S = np.arange(N_SAMPLES) / FS


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
            wobble = rng.uniform(0.5, 1.5) * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * _T_S
                                                    + rng.uniform(0, 2 * np.pi))
            env = 0.7 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * _T_S
                                     + rng.uniform(0, 2 * np.pi))
            u = plan.atrial_vector + 0.4 * np.linalg.norm(plan.atrial_vector) * \
                rng.standard_normal(3)
            out += np.outer(u, env * np.sin(2 * np.pi * f * _T_S + wobble))
        return out / np.sqrt(3.0)
    if plan.atrial == "flutter":
        f0, cycle = plan.flutter
        phase = ((_T_S - f0) / cycle) % 1.0
        saw = np.where(phase < 0.7, 1.0 - 2.0 * phase / 0.7, -1.0 + 2.0 * (phase - 0.7) / 0.3)
        saw = np.convolve(saw, np.ones(9) / 9.0, mode="same")
        return np.outer(plan.atrial_vector, saw)
    return 0.0


def _background(rng: np.random.Generator) -> np.ndarray:
    """Small physiological background in the dipole itself (keeps the lead relations)."""
    drift = 0.015 * np.sin(2 * np.pi * rng.uniform(0.1, 0.3) * _T_S + rng.uniform(0, 2 * np.pi))
    return rng.normal(0.0, 0.004, (3, N_SAMPLES)) + np.outer(rng.standard_normal(3), drift)


def _baseline_drift(x: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> None:
    """0.05-0.5 Hz wander, 0.2-0.7 mV."""
    k = (len(rows), 2, 1)
    waves = rng.uniform(0.1, 0.35, k) * np.sin(
        2 * np.pi * rng.uniform(0.05, 0.5, k) * _T_S + rng.uniform(0, 2 * np.pi, k))
    x[rows] += waves.sum(axis=1)                                         # (rows, n)


def _static_noise(x: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> None:
    """Continuous broadband noise (0.02-0.05 mV rms) with 50/60 Hz mains hum."""
    mains = rng.choice([50.0, 60.0])
    hum = rng.uniform(0.01, 0.06, (len(rows), 1)) * np.sin(
        2 * np.pi * mains * _T_S + rng.uniform(0, 2 * np.pi, (len(rows), 1)))
    x[rows] += rng.normal(0.0, 1.0, (len(rows), N_SAMPLES)) * \
        rng.uniform(0.02, 0.05, (len(rows), 1)) + hum


def _burst_noise(x: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> None:
    """1-3 bursts of 0.3-1.2 s of large (0.15-0.5 mV rms) noise, the same times in every
    affected lead."""
    env = np.zeros(N_SAMPLES)
    for _ in range(int(rng.integers(1, 4))):
        n = int(rng.uniform(0.3, 1.2) * FS)
        a = int(rng.integers(0, N_SAMPLES - n))
        env[a:a + n] = np.maximum(env[a:a + n], np.hanning(n))
    sd = rng.uniform(0.15, 0.5, (len(rows), 1))
    x[rows] += rng.normal(0.0, 1.0, (len(rows), N_SAMPLES)) * sd * env


def _electrode_problem(x: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> None:
    """A disconnected electrode: the lead is flat for the whole record or for 1.5-4 s,
    with a step artefact where contact is lost and regained."""
    for r in rows:
        if rng.random() < 0.5:
            x[r] = rng.uniform(-0.3, 0.3) + rng.normal(0.0, 0.003, N_SAMPLES)
            continue
        n = int(rng.uniform(1.5, 4.0) * FS)
        a = int(rng.integers(0, N_SAMPLES - n))
        x[r, a:a + n] = rng.uniform(-0.5, 0.5) + rng.normal(0.0, 0.003, n)
        for edge in (a, a + n):
            tail = np.arange(N_SAMPLES - edge) / FS
            x[r, edge:] += rng.choice([-1, 1]) * rng.uniform(0.5, 1.5) * np.exp(-tail / 0.08)


_NOISE = {"baseline drift": _baseline_drift, "static noise": _static_noise,
          "burst noise": _burst_noise, "electrodes problems": _electrode_problem}
