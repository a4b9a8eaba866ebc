"""The findings of one synthetic record, drawn before any wave is shaped.

    rng --sample_choices--> Choices (rhythm, conduction, LVH, ST/T, QT/PR/P, extra systoles,
        axis class) --sample_intervals--> Intervals (rate, P, PR, QRS, target QTc)

About 35 % of the records are fully normal; the rest mix findings with the weights below.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecgqa.synth.ground_truth import AXIS_CLASSES, LEAD_GROUPS, RHYTHMS

_QRS_MS = {"normal": (78, 104), "rbbb": (124, 160), "irbbb": (102, 118), "lbbb": (126, 170),
           "ilbbb": (102, 118), "lafb": (88, 112), "rbbb+lafb": (124, 156)}


@dataclass(frozen=True)
class Choices:
    """The discrete draws of one record, before intervals and morphology."""

    normal: bool
    rhythm: str                      # one of RHYTHMS (sinus ones refined by the rate)
    conduction: str                  # key of CONDUCTION_CODES
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


def pick(rng: np.random.Generator, options: dict) -> object:
    """One key of ``options``, drawn with probability proportional to its value."""
    keys = list(options)
    w = np.array([options[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=w / w.sum()))]


def sample_choices(rng: np.random.Generator) -> Choices:
    """About 35 % fully normal records; the rest mix rhythm, conduction and other findings."""
    if rng.random() < 0.35:
        return Choices(True, "sinus rhythm", "normal", False, False, None, None, "normal",
                       "normal", "normal", False, None, AXIS_CLASSES[0])
    rhythm = pick(rng, {RHYTHMS[0]: 0.36, RHYTHMS[1]: 0.13, RHYTHMS[2]: 0.13,
                        RHYTHMS[3]: 0.12, RHYTHMS[4]: 0.15, RHYTHMS[5]: 0.11})
    sinus = rhythm in RHYTHMS[:4]
    conduction = pick(rng, {"normal": 0.45, "rbbb": 0.11, "irbbb": 0.09, "lbbb": 0.09,
                            "ilbbb": 0.07, "lafb": 0.12, "rbbb+lafb": 0.07})
    st = None
    if rng.random() < 0.3:
        st = (str(rng.choice(["elevation", "depression"])), str(rng.choice(list(LEAD_GROUPS))))
    extra = pick(rng, {None: 0.7, "pvc": 0.15, "pac": 0.15 if sinus else 0.0})
    lvh = conduction not in ("lbbb", "ilbbb") and rng.random() < 0.15
    axis = _sample_axis_class(rng, conduction)
    if lvh and axis in AXIS_CLASSES[2:]:  # LVH voltage is leftward: no right/extreme axis
        axis = AXIS_CLASSES[0]
    return Choices(
        normal=False, rhythm=rhythm, conduction=conduction,
        av_block=sinus and rng.random() < 0.18,
        lvh=lvh,
        st=st,
        t_inversion=str(rng.choice(list(LEAD_GROUPS))) if rng.random() < 0.15 else None,
        qt=pick(rng, {"normal": 0.8, "long": 0.15, "short": 0.05}),
        pr=pick(rng, {"normal": 0.93, "short": 0.07}),
        p=pick(rng, {"normal": 0.84, "long": 0.08, "short": 0.08}),
        short_qrs=conduction == "normal" and rng.random() < 0.06,
        extra=extra, axis=axis,
    )


def _sample_axis_class(rng: np.random.Generator, conduction: str) -> str:
    if "lafb" in conduction:
        return AXIS_CLASSES[1]
    if conduction in ("lbbb", "ilbbb"):
        return pick(rng, {AXIS_CLASSES[0]: 0.7, AXIS_CLASSES[1]: 0.3})
    return pick(rng, {AXIS_CLASSES[0]: 0.55, AXIS_CLASSES[1]: 0.18, AXIS_CLASSES[2]: 0.17,
                      AXIS_CLASSES[3]: 0.10})


def sample_axis_deg(rng: np.random.Generator, cls: str, conduction: str) -> float:
    """Axis inside its class, 5 degrees clear of the class limits."""
    if "lafb" in conduction:
        return float(rng.uniform(-75.0, -45.0))
    if conduction in ("lbbb", "ilbbb") and cls == AXIS_CLASSES[0]:
        return float(rng.uniform(-20.0, 75.0))
    low, high = {AXIS_CLASSES[0]: (-25.0, 85.0), AXIS_CLASSES[1]: (-85.0, -35.0),
                 AXIS_CLASSES[2]: (95.0, 175.0), AXIS_CLASSES[3]: (-175.0, -95.0)}[cls]
    return float(rng.uniform(low, high))


@dataclass(frozen=True)
class Intervals:
    """Target intervals of one record (ms) and its ventricular rate."""

    rate_bpm: float      # target ventricular rate
    p_ms: float
    pr_ms: float
    qrs_ms: float
    qtc_ms: float        # target QTc (Bazett)


def sample_intervals(ch: Choices, rng: np.random.Generator) -> Intervals:
    """Rate and intervals inside the ranges of the record's findings."""
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
    return Intervals(u(*rate), p, pr, qrs, qtc)

