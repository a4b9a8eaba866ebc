"""When each beat of a synthetic record starts: rhythm, rate and premature beats.

    Choices, Intervals --beat_times--> QRS onsets (s), beat kinds, flutter timing

Sinus rhythms get slow beat-to-beat variability (sinus arrhythmia a respiratory swing of
more than 120 ms), atrial fibrillation an irregularly irregular response, flutter 2:1,
4:1 or variable conduction of its F waves; 1-3 beats may then be made premature.
"""

from __future__ import annotations

import numpy as np

from ecgqa.synth.findings import Choices, Intervals
from ecgqa.synth.ground_truth import DURATION_S, KIND_PAC, KIND_PVC


def window_intervals(onsets: np.ndarray) -> np.ndarray:
    """RR intervals (s) between consecutive beats whose QRS starts inside the record."""
    inside = onsets[(onsets >= 0.0) & (onsets < DURATION_S)]
    return np.diff(inside)


def _times(intervals: np.ndarray, start: float) -> np.ndarray:
    return start + np.concatenate([[0.0], np.cumsum(intervals)])


def _normalise_rate(intervals: np.ndarray, start: float, rr: float) -> np.ndarray:
    """Scale intervals so the in-record mean RR is ``rr`` (a few fixed-point steps)."""
    for _ in range(4):
        m = window_intervals(_times(intervals, start)).mean()
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
    spread = np.ptp(window_intervals(_times(intervals, start)))
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
        w = window_intervals(_times(intervals, start))
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
            kinds[j] = KIND_PVC
        else:
            early = onsets[j - 1] + rng.uniform(0.6, 0.75) * rr
            onsets[j + 1:] += early + rng.uniform(1.0, 1.1) * rr - onsets[j + 1]
            onsets[j] = early
            kinds[j] = KIND_PAC
    return onsets, kinds


def beat_times(ch: Choices, iv: Intervals, rng: np.random.Generator):
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

