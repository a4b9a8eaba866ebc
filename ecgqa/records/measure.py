"""Basic ECG measurements with neurokit2: heart rate, RR, PR, QRS, QT, QTc and QRS axis.

Used by ``ecgqa info``, the chat summary and the synthetic-data validation. Every value is
a median over beats and is ``None`` where delineation did not give at least
``MIN_BEATS`` plausible beats; nothing is guessed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from ecgqa.records.read import EcgRecord

MIN_BEATS = 2
# neurokit2's "prominence" delineator: on real 12-lead records its QRS (70-100 ms), PR and QT
# on sinus-rhythm ECGs are physiological, whereas "dwt" placed QRS onsets inside the PR
# segment (QRS 150-200 ms on normal ECGs) and "cwt" returned misaligned wave lists.
DELINEATION = "prominence"
# Physiological bounds (ms) outside which a delineated interval is a delineation failure.
_BOUNDS_MS = {"pr": (60, 450), "qrs": (40, 250), "qt": (200, 700)}


@dataclass(frozen=True)
class Measurements:
    """Median measurements over the analysed beats (``None`` where not measurable)."""

    lead: str | None = None
    n_beats: int = 0
    heart_rate_bpm: float | None = None
    rr_ms: float | None = None
    pr_ms: float | None = None
    qrs_ms: float | None = None
    qt_ms: float | None = None
    qtc_ms: float | None = None          # Bazett: QT / sqrt(RR in s)
    qrs_axis_deg: float | None = None    # frontal plane, from net QRS amplitude in I and aVF
                                         # (None for normalised-unit records: the leads'
                                         # relative amplitudes are gone)
    note: str = ""

    def as_dict(self) -> dict:
        return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def measure(record: EcgRecord, lead: str | None = None, max_seconds: float = 30.0) -> Measurements:
    """Measure rate, intervals and axis on one lead of ``record``.

    Args:
        record: the ECG.
        lead: lead to delineate; default lead II, else the first recorded standard lead.
        max_seconds: analyse at most this many seconds from the start.

    Returns:
        Measurements; fields stay ``None`` when neurokit2 finds too few beats.

    Example:
        >>> m = measure(read_record("../shared/data/real/ptbxl/00001_lr.hea"))
        >>> 40 < m.heart_rate_bpm < 120
        True
    """
    import neurokit2 as nk

    name = lead or _default_lead(record)
    if name is None:
        return Measurements(note="no recorded lead to measure")
    fs = int(round(record.fs))
    x = record.lead(name)[: int(max_seconds * record.fs)].astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            clean = nk.ecg_clean(x, sampling_rate=fs)
            _, info = nk.ecg_peaks(clean, sampling_rate=fs)
        except Exception as err:  # neurokit2 raises many types on odd signals
            return Measurements(lead=name, note=f"R-peak detection failed: {type(err).__name__}")
        peaks = np.asarray(info["ECG_R_Peaks"], dtype=int)
        if len(peaks) < MIN_BEATS + 1:
            return Measurements(lead=name, n_beats=len(peaks), note="too few R peaks")
        rr = np.diff(peaks) / fs * 1000.0
        rr_ms = float(np.median(rr))
        waves = _delineate(nk, clean, peaks, fs)
    pr = _interval(waves, "ECG_P_Onsets", "ECG_R_Onsets", fs, "pr")
    qrs = _interval(waves, "ECG_R_Onsets", "ECG_R_Offsets", fs, "qrs")
    qt = _interval(waves, "ECG_R_Onsets", "ECG_T_Offsets", fs, "qt")
    qtc = qt / math.sqrt(rr_ms / 1000.0) if qt is not None else None
    notes = [] if waves else ["wave delineation failed; intervals not measured"]
    if record.normalised:
        notes.append("normalised units: the QRS axis (relative lead amplitudes) is not "
                     "measurable")
    return Measurements(
        lead=name, n_beats=len(peaks), heart_rate_bpm=60000.0 / rr_ms, rr_ms=rr_ms,
        pr_ms=pr, qrs_ms=qrs, qt_ms=qt, qtc_ms=qtc,
        qrs_axis_deg=None if record.normalised else _qrs_axis(record, peaks, fs),
        note="; ".join(notes),
    )


def _default_lead(record: EcgRecord) -> str | None:
    usable = [lead for lead, ok in zip(record.leads, record.lead_mask) if ok]
    for pref in ("II", "I", "V5", "V2", "III", "aVF"):
        if pref in usable:
            return pref
    return usable[0] if usable else None


def _delineate(nk, clean: np.ndarray, peaks: np.ndarray, fs: int) -> dict:
    try:
        _, waves = nk.ecg_delineate(clean, peaks, sampling_rate=fs, method=DELINEATION)
        return waves
    except Exception:
        return {}


def _interval(waves: dict, start: str, end: str, fs: int, kind: str) -> float | None:
    if start not in waves or end not in waves:
        return None
    a = np.asarray(waves[start], dtype=float)
    b = np.asarray(waves[end], dtype=float)
    n = min(len(a), len(b))
    ms = (b[:n] - a[:n]) / fs * 1000.0
    lo, hi = _BOUNDS_MS[kind]
    ok = ms[np.isfinite(ms) & (ms >= lo) & (ms <= hi)]
    return float(np.median(ok)) if len(ok) >= MIN_BEATS else None


def _qrs_axis(record: EcgRecord, peaks: np.ndarray, fs: int) -> float | None:
    """Frontal QRS axis from the net QRS deflection (R + S) in leads I and aVF."""
    have = {lead for lead, ok in zip(record.leads, record.lead_mask) if ok}
    if not {"I", "aVF"} <= have:
        return None
    half = int(0.06 * fs)
    nets = []
    for name in ("I", "aVF"):
        x = record.lead(name).astype(np.float64)
        net = []
        for p in peaks:
            if p - 2 * half < 0 or p + half >= len(x):
                continue
            base = np.median(x[p - 2 * half:p - half])   # PR segment as baseline
            seg = x[p - half:p + half] - base
            net.append(seg.max() + seg.min())
        if len(net) < MIN_BEATS:
            return None
        nets.append(float(np.median(net)))
    # hexaxial projections of a frontal vector H at angle t: I = H cos t, aVF = (sqrt 3 / 2) H sin t
    return math.degrees(math.atan2(nets[1] * 2.0 / math.sqrt(3.0), nets[0]))
