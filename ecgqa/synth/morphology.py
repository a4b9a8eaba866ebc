"""The shape of each beat of a synthetic record, as 3-D dipole waves.

    Choices, Intervals, QT --build_plan--> BeatPlan: the conducted beat (P, QRS turned to
        its axis and sized for or below LVH voltage, ST injury current, T) and the
        premature beats' shapes (wide ectopic QRS, ectopic P), atrial f or F waves

Lead voltages come from projecting the dipole (:mod:`ecgqa.synth.dipole`); the labels
are read off these shapes afterwards (:func:`lead_extremes`, :func:`sokolow_lyon_mv`).
"""

from __future__ import annotations

import numpy as np

from ecgqa.records.leads import STANDARD_LEADS
from ecgqa.synth.dipole import (
    WAVE_QRS,
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
from ecgqa.synth.findings import Choices, Intervals, sample_axis_deg
from ecgqa.synth.ground_truth import LEAD_GROUPS, RHYTHMS, SOKOLOW_LYON_MV, BeatPlan

_ST_DIRECTIONS = {"anterior": (0.1, 0.1, 1.0), "inferior": (0.05, 1.0, 0.1),
                  "lateral": (1.0, -0.3, 0.15)}


def lead_extremes(waves: Waves) -> tuple[np.ndarray, np.ndarray]:
    """Per-lead minimum and maximum ``(12,)``, ``(12,)`` of some components, in mV."""
    t = np.arange(waves.onset_ms, waves.offset_ms + 1.0, 1.0)
    x = project(waves.render(t))                                     # (12, n)
    return x.min(axis=1), x.max(axis=1)


def sokolow_lyon_mv(qrs: Waves) -> float:
    """S in V1 plus the larger R of V5 and V6 (mV) of a QRS (noise-free components)."""
    lo, hi = lead_extremes(qrs.select(WAVE_QRS))
    v1, v5, v6 = (STANDARD_LEADS.index(n) for n in ("V1", "V5", "V6"))
    return float(max(-lo[v1], 0.0) + max(hi[v5], hi[v6]))


def _conducted_qrs(ch: Choices, qrs_ms: float, rng: np.random.Generator) -> Waves:
    """The conduction template, jittered, turned in the chest, scaled, rotated to its axis,
    and with its voltage set for (or kept below) the Sokolow-Lyon criterion."""
    qrs = qrs_waves(ch.conduction, qrs_ms)
    jitter = 1.0 + 0.12 * rng.standard_normal(qrs.vectors.shape)       # (k, 3)
    qrs = qrs.with_vectors(qrs.vectors * jitter)
    turn = rotation("y", rng.uniform(-15.0, 15.0)) @ rotation("x", rng.uniform(-8.0, 8.0))
    bbb = ch.conduction in ("lbbb", "ilbbb")
    amp = rng.uniform(1.4, 1.9) if bbb else rng.uniform(0.7, 1.15)
    qrs = qrs.transformed(amp * turn)
    target = sample_axis_deg(rng, ch.axis, ch.conduction)
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
    lo, hi = lead_extremes(waves)
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


def _pac_p(iv: Intervals, rng: np.random.Generator) -> Waves:
    """Ectopic atrial P: superior/odd axis (inverted in the inferior leads)."""
    direction = np.array([rng.uniform(-0.3, 0.6), -1.0, rng.uniform(-0.3, 0.5)])
    p_ms = rng.uniform(70.0, 100.0)
    pr = max(iv.pr_ms + rng.uniform(-20.0, 10.0), p_ms + 30.0)
    return p_waves(pr, p_ms, rng.uniform(0.1, 0.18), ectopic=direction)


def build_plan(ch: Choices, iv: Intervals, qt_ms: float, times: tuple,
               rng: np.random.Generator) -> BeatPlan:
    """The record's :class:`BeatPlan`: its beat times (``times``, from
    :func:`ecgqa.synth.beat_times.beat_times`), the conducted beat's P, QRS, ST and T, the
    premature beats' shapes and the atrial activity."""
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

