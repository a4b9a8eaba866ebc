"""ECG measurements over all leads: heart rate, RR, PR, QRS, QT, QTc and QRS axis.

Used by ``ecgqa info``, the chat summary, the synthetic-data validation and as ground truth
for questions. The method is that of the automatic 12-lead programs: global intervals,
from the earliest onset to the latest offset over all leads, measured on a representative
beat. Four steps:

1. **Beats** (:func:`detect_beats`): each usable lead is band-passed (5-25 Hz),
   differentiated and turned into a QRS energy envelope scaled by its own 98th percentile;
   the leads are averaged with weights from their signal-to-noise ratio, lowered where a
   lead is locally noisy. So one noisy lead, a flat lead or a lead with tall T waves
   cannot add or remove beats. Beats are the envelope's peaks above a share of the typical
   QRS and above the local noise floor. RR is the median interval between all beats.
2. **Median beat** (:func:`template_beat`): beats whose QRS correlates with the typical
   QRS (not extrasystoles) are aligned and their sample-wise median taken, lead by lead.
3. **Global boundaries**: the *spatial velocity* of the median beat (the length of its
   multi-lead derivative vector) is above the noise from the earliest onset to the latest
   offset of a wave in any lead. QRS onset and offset are where it falls below 5 % of its
   QRS peak (and the noise level) and stays there; the T end is where, after the T apex,
   it falls below 10 % of the T downslope's peak; the P onset likewise before the P wave.
   A P wave counts only if it stands above the noise and the beat-to-beat variation (none
   in atrial fibrillation) and has an isoelectric stretch before it with no other atrial
   wave (none in flutter).
4. PR = QRS onset - P onset, QRS = offset - onset, QT = T end - QRS onset, QTc (Bazett) =
   QT / sqrt(RR in s); the QRS axis from the net QRS deflection in I and aVF.

Values are ``None`` where a step fails (too few beats, a stretch too noisy to count beats
in, no P wave, a boundary not found or outside physiological bounds); nothing is guessed.
With ``lead=`` the same method runs on that lead alone. Accuracy: ``eval/measure_rr.py``
(RR against annotated beats) and ``eval/measure_intervals.py`` (against synthetic truth,
and plausibility on real records); numbers in docs/records.md.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from ecgqa.records.read import EcgRecord

MIN_BEATS = 2
DELINEATION = "global multi-lead median-beat"    # read by ecgqa.records.summary
METHOD = ("R peaks on the combined QRS energy of all leads; PR, QRS, QT from the global wave "
          "boundaries (spatial velocity) of the median beat")
# Physiological bounds (ms) outside which a measured interval is a measurement failure.
_BOUNDS_MS = {"pr": (60, 450), "qrs": (40, 250), "qt": (200, 700)}
# beats
_REFRACTORY_MS = 200.0       # no two beats closer than this (300 bpm)
_T_WAVE_MS = 360.0           # a smaller peak this close after a beat is its T wave
_BEAT_HEIGHT = 0.3           # a beat's envelope: at least this share of a typical QRS
_NOISE_MARGIN = 3.0          # ... and this many times the local noise floor, which is
_FLOOR_PCT = 20.0            # ... this percentile of the envelope in 1-s blocks
_NOISY_MAX_S = 0.25          # a noisy stretch longer than a short RR may hide a beat
# wave boundaries on the median beat
_QRS_LOWPASS_HZ = 100.0      # low-pass for the QRS (above it only noise)
_SLOW_HZ = 30.0              # low-pass for the P and T waves
_QRS_FRACTION = 0.05         # QRS boundary: velocity below this share of the QRS peak,
_BOUNDARY_FRACTION = 0.1     # P and T boundary: below this share of the wave's peak,
_NOISE_K = 2.5               # ... and below this many times the velocity's noise level,
_QUIET_MS = 10.0             # ... for this long (20 ms before a P wave)
_QTC_MAX_S = 0.6             # the T apex comes before QT = this * sqrt(RR in s)
_P_REACH_S = 0.12            # a P wave's extent before its velocity peak, at most
_P_SNR = 4.0                 # a P wave's velocity: at least this many noise levels
_P_SIGNIFICANCE = 6.0        # ... and its deflection this many standard errors of the median


@dataclass(frozen=True)
class Measurements:
    """Median measurements over the analysed beats (``None`` where not measurable)."""

    lead: str | None = None              # the measured lead, or "global (N leads)"
    n_beats: int = 0                     # beats detected
    heart_rate_bpm: float | None = None
    rr_ms: float | None = None           # median RR over all beats (ectopic ones too)
    pr_ms: float | None = None
    qrs_ms: float | None = None
    qt_ms: float | None = None
    qtc_ms: float | None = None          # Bazett: QT / sqrt(RR in s)
    qrs_axis_deg: float | None = None    # frontal plane, from net QRS amplitude in I and aVF
                                         # (None for normalised-unit records: the leads'
                                         # relative amplitudes are gone)
    n_template_beats: int = 0            # beats in the median beat the intervals come from
    method: str = METHOD
    note: str = ""

    def as_dict(self) -> dict:
        return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def measure(record: EcgRecord, lead: str | None = None, max_seconds: float = 30.0) -> Measurements:
    """Measure rate, intervals and axis on all usable leads of ``record`` (or on one lead).

    Args:
        record: the ECG.
        lead: measure on this lead only; default: all usable leads together.
        max_seconds: analyse at most this many seconds from the start.

    Returns:
        Measurements; fields stay ``None`` where they are not measurable.

    Example:
        >>> m = measure(read_record("../shared/data/real/ptbxl/00001_lr.hea"))
        >>> 40 < m.heart_rate_bpm < 120
        True
    """
    names = [lead] if lead else _usable_leads(record)
    if not names:
        return Measurements(note="no recorded lead to measure")
    label = lead if lead else f"global ({len(names)} leads)"
    fs = float(record.fs)
    n = int(max_seconds * fs)
    x = np.stack([record.lead(name)[:n] for name in names]).astype(np.float64)   # (L, n)
    if x.shape[1] < int(fs) or not np.all(np.isfinite(x)):
        return Measurements(lead=label, note="signal too short or not finite")
    beats = detect_beats(x, fs)
    peaks = beats.peaks
    if len(peaks) < MIN_BEATS + 1:
        return Measurements(lead=label, n_beats=len(peaks), note="too few R peaks")
    rr_ms = float(np.median(np.diff(peaks))) / fs * 1000.0
    waves = delineate(x, fs, peaks, rr_ms)
    notes = [waves.pop("note")] if waves.get("note") else []
    qt = waves["qt"]
    rr = rr_ms if beats.noisy_s <= _NOISY_MAX_S else None
    if rr is None:
        notes.append(f"{beats.noisy_s:.1f} s too noisy to see every beat: rate and RR not "
                     "measured")
    if record.normalised:
        notes.append("normalised units: the QRS axis (relative lead amplitudes) is not "
                     "measurable")
    return Measurements(
        lead=label, n_beats=len(peaks), heart_rate_bpm=60000.0 / rr if rr else None,
        rr_ms=rr, pr_ms=waves["pr"], qrs_ms=waves["qrs"], qt_ms=qt,
        qtc_ms=qt / math.sqrt(rr / 1000.0) if qt is not None and rr else None,
        qrs_axis_deg=None if record.normalised else _qrs_axis(record, peaks, int(round(fs))),
        n_template_beats=waves["n"], note="; ".join(notes),
    )


def _usable_leads(record: EcgRecord) -> list[str]:
    """Recorded leads that are finite and not constant."""
    out = []
    for name, ok, row in zip(record.leads, record.lead_mask, record.signal):
        if ok and np.all(np.isfinite(row)) and np.ptp(row) > 0:
            out.append(name)
    return out


# --------------------------------------------------------------------------- filters


def _filtfilt(x: np.ndarray, fs: float, low: float | None, high: float | None,
              order: int = 2) -> np.ndarray:
    """Zero-phase Butterworth band-, high- or low-pass along the last axis."""
    from scipy.signal import butter, sosfiltfilt

    high = None if high is None or high >= 0.45 * fs else high
    if low is None and high is None:
        return x
    if low is None:
        sos = butter(order, high, btype="lowpass", fs=fs, output="sos")
    elif high is None:
        sos = butter(order, low, btype="highpass", fs=fs, output="sos")
    else:
        sos = butter(order, [low, high], btype="bandpass", fs=fs, output="sos")
    pad = min(x.shape[-1] - 1, int(3 * fs))
    return sosfiltfilt(sos, x, axis=-1, padtype="odd", padlen=pad)


def _delineation_filter(x: np.ndarray, fs: float) -> np.ndarray:
    """High-pass 0.5 Hz, notches at 50 and 60 Hz (mains), low-pass ``_QRS_LOWPASS_HZ``."""
    from scipy.signal import filtfilt, iirnotch

    y = _filtfilt(x, fs, 0.5, _QRS_LOWPASS_HZ)
    for mains in (50.0, 60.0):
        if mains < 0.45 * fs and mains < _QRS_LOWPASS_HZ:
            b, a = iirnotch(mains, 30.0, fs=fs)
            y = filtfilt(b, a, y, axis=-1)
    return y


def _moving_mean(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving mean along the last axis (``width`` samples, edges averaged over
    the samples that exist)."""
    width = max(int(width), 1)
    kernel = np.ones(width)
    num = np.apply_along_axis(np.convolve, -1, x, kernel, mode="same")
    den = np.convolve(np.ones(x.shape[-1]), kernel, mode="same")
    return num / den


# --------------------------------------------------------------------------- beats


def _block_level(z: np.ndarray, fs: float, pct: float, block_s: float = 1.0) -> np.ndarray:
    """Local level of ``z`` ``(..., n)``: the ``pct`` percentile of each ``block_s`` block,
    linearly interpolated between block centres."""
    n = z.shape[-1]
    size = max(int(round(block_s * fs)), 1)
    starts = np.arange(0, n, size)
    levels = np.stack([np.percentile(z[..., a:a + size], pct, axis=-1) for a in starts],
                      axis=-1)
    centres = np.minimum(starts + size / 2.0, n - 1)
    t = np.arange(n)
    if z.ndim == 1:
        return np.interp(t, centres, levels)
    return np.stack([np.interp(t, centres, m) for m in levels])


def qrs_envelope(x: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """Combined QRS energy of all leads, about 1 at a typical QRS.

    Each lead: 5-25 Hz band-pass, derivative, RMS over 80 ms, scaled by its 98th
    percentile and clipped at 2 (no single beat or artefact dominates). The leads are
    averaged with weights: the lead's signal-to-noise ratio (1 over its median level,
    minus 1), lowered where its local noise floor rises above its usual level (muscle
    noise), never raised (a lead that goes flat keeps its weight and adds nothing).

    Returns:
        ``(envelope (n,), fine (n,))``: the smoothed envelope that finds beats and the
        unsmoothed weighted energy of the band-passed signal that places them.
    """
    y = _filtfilt(x, fs, 5.0, 25.0)                                   # (L, n)
    d = np.diff(y, axis=-1, prepend=y[:, :1]) * fs
    env = np.sqrt(_moving_mean(d * d, int(round(0.08 * fs))))       # (L, n)
    top = np.percentile(env, 98, axis=-1)
    keep = top > 0
    if not keep.any():
        return np.zeros(x.shape[-1]), np.zeros(x.shape[-1])
    z = np.minimum(env[keep] / top[keep, None], 2.0)                 # (L, n)
    # weight: the lead's signal-to-noise ratio over the record, lowered where its local
    # noise floor rises above its usual level (a burst of muscle noise), never raised
    snr = np.maximum(1.0 / np.maximum(np.median(z, axis=-1), 1e-6) - 1.0, 0.0)    # (L,)
    floor = _block_level(z, fs, _FLOOR_PCT)                                       # (L, n)
    usual = np.median(floor, axis=-1, keepdims=True)
    w = snr[:, None] * np.minimum(1.0, usual / np.maximum(floor, 1e-12)) + 1e-9    # (L, n)
    ys = y[keep] / np.percentile(np.abs(y[keep]), 98, axis=-1)[:, None]
    total = w.sum(axis=0)
    return (w * z).sum(axis=0) / total, (w * ys * ys).sum(axis=0) / total


@dataclass(frozen=True, eq=False)
class Beats:
    """R peaks of a record.

    Attributes:
        peaks: ``(b,)`` sorted R-peak sample indices.
        noisy_s: the longest stretch (s) where noise would hide a beat of half the typical
            height; longer than ``_NOISY_MAX_S``, beats may be missing or false there.
    """

    peaks: np.ndarray
    noisy_s: float


def detect_beats(x: np.ndarray, fs: float) -> Beats:
    """R peaks of a ``(leads, n)`` signal, all leads together.

    A candidate is a maximum of the combined envelope (:func:`qrs_envelope`) above
    ``_BEAT_HEIGHT``, 200 ms from a larger one, above ``_NOISE_MARGIN`` times the local
    noise floor (the envelope's 20th percentile in the surrounding second) and above 40 %
    of the median candidate; a smaller one within 360 ms after a beat is its T wave. A
    beat is placed at the maximum of the weighted band-passed energy near its envelope
    peak; one whose maximum falls on the first or last sample is dropped (its R peak may
    lie outside the record).
    """
    from scipy.signal import find_peaks

    env, fine = qrs_envelope(x, fs)
    gap = max(int(_REFRACTORY_MS / 1000.0 * fs), 1)
    cand, _ = find_peaks(np.concatenate([[0.0], env, [0.0]]), height=_BEAT_HEIGHT,
                         distance=gap)
    cand = cand - 1
    floor = _block_level(env, fs, _FLOOR_PCT)
    cand = cand[env[cand] >= _NOISE_MARGIN * floor[cand]]
    if len(cand) == 0:
        return Beats(cand, 0.0)
    typical = float(np.median(env[cand]))
    keep: list[int] = []
    for c in cand[env[cand] >= 0.4 * typical]:
        if keep and c - keep[-1] < _T_WAVE_MS / 1000.0 * fs and env[c] < 0.5 * env[keep[-1]]:
            continue                                         # the previous beat's T wave
        keep.append(int(c))
    h, n = int(round(0.06 * fs)), len(fine)
    placed: list[int] = []
    for c in keep:
        lo = max(c - h, 0)
        p = lo + int(np.argmax(fine[lo:min(c + h + 1, n)]))
        if 0 < p < n - 1 and (not placed or p - placed[-1] >= gap):
            placed.append(p)
    hidden = _NOISE_MARGIN * floor > 0.5 * typical
    return Beats(np.asarray(placed, dtype=int), _longest_run(hidden) / fs)


def _longest_run(mask: np.ndarray) -> int:
    """Length of the longest run of True in a 1-D bool array."""
    if not mask.any():
        return 0
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return int(np.max(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)))


# --------------------------------------------------------------------------- median beat


@dataclass(frozen=True, eq=False)
class Template:
    """The representative beat of a record.

    Attributes:
        signal: ``(leads, w)`` the sample-wise median of the dominant beats (robust to a
            beat in a noise burst and to the neighbouring beats' waves, which move with RR).
        beats: ``(b, leads, w)`` the aligned dominant beats (NaN outside the record).
        r: index of the R peak in the window.
    """

    signal: np.ndarray
    beats: np.ndarray
    r: int


def template_beat(x: np.ndarray, fs: float, peaks: np.ndarray, before_s: float = 0.6,
                  after_s: float = 0.8) -> Template:
    """The median of the dominant beats of ``x`` ``(leads, n)``, aligned around ``peaks``.

    Example:
        >>> tpl = template_beat(signal, 500.0, detect_beats(signal, 500.0).peaks)
        >>> tpl.signal.shape == (signal.shape[0], 701)
        True
    """
    a, b = int(round(before_s * fs)), int(round(after_s * fs))
    n = x.shape[-1]
    beats = np.full((len(peaks), x.shape[0], a + b + 1), np.nan)
    for k, p in enumerate(peaks):
        lo, hi = max(p - a, 0), min(p + b + 1, n)
        beats[k, :, lo - (p - a):hi - (p - a)] = x[:, lo:hi]
    beats = _dominant(beats, a, fs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)     # all-NaN columns at the ends
        med = np.nanmedian(beats, axis=0)                                # (L, w)
    return Template(signal=med, beats=beats, r=a)


def _dominant(beats: np.ndarray, centre: int, fs: float) -> np.ndarray:
    """Beats whose QRS (centre +-80 ms, all leads) correlates >= 0.9 with the median QRS,
    each shifted by up to 10 ms to its best alignment."""
    h, s = int(round(0.08 * fs)), max(int(round(0.01 * fs)), 1)
    qrs = beats[:, :, centre - h - s:centre + h + s + 1]                   # (b, L, q)
    ok = ~np.isnan(qrs).any(axis=(1, 2))
    if ok.sum() < MIN_BEATS:
        return beats
    ref = np.median(qrs[ok], axis=0)[:, s:-s]                            # (L, 2h+1)
    ref = (ref - ref.mean(axis=1, keepdims=True)).ravel()
    out = []
    for k in np.flatnonzero(ok):
        best, shift = -2.0, 0
        for d in range(-s, s + 1):
            seg = qrs[k, :, s + d:s + d + 2 * h + 1]
            seg = (seg - seg.mean(axis=1, keepdims=True)).ravel()
            r = float(seg @ ref) / (np.linalg.norm(seg) * np.linalg.norm(ref) + 1e-12)
            if r > best:
                best, shift = r, d
        if best >= 0.9:
            out.append(_shifted(beats[k], shift))
    return np.stack(out) if len(out) >= MIN_BEATS else beats


def _shifted(beat: np.ndarray, shift: int) -> np.ndarray:
    """``beat`` ``(L, w)`` moved left by ``shift`` samples, NaN where nothing comes in."""
    out = np.full_like(beat, np.nan)
    if shift >= 0:
        out[:, :beat.shape[1] - shift] = beat[:, shift:]
    else:
        out[:, -shift:] = beat[:, :shift]
    return out


# --------------------------------------------------------------------------- delineation


def spatial_velocity(med: np.ndarray, fs: float) -> np.ndarray:
    """Length of the multi-lead derivative vector ``(w,)`` (units per second)."""
    d = np.gradient(med, axis=-1) * fs
    return np.sqrt(np.sum(d * d, axis=0))


def delineate(x: np.ndarray, fs: float, peaks: np.ndarray, rr_ms: float) -> dict:
    """PR, QRS and QT (ms, or None) from the global boundaries of the median beat.

    Returns:
        ``{"pr", "qrs", "qt"}`` in ms or None, ``"n"`` beats in the median beat and a
        ``"note"`` when the median beat or its QRS could not be formed.
    """
    tpl = template_beat(_delineation_filter(x, fs), fs, peaks)
    med, beats, r = tpl.signal, tpl.beats, tpl.r
    out = {"pr": None, "qrs": None, "qt": None, "n": int(len(beats)), "note": ""}
    if np.isnan(med).any():
        out["note"] = "too few complete beats for a representative beat"
        return out
    ms = 1000.0 / fs
    v = spatial_velocity(med, fs)
    qrs = _qrs_bounds(v, r, fs, _velocity_floor(v, len(med)))
    if qrs is None:
        out["note"] = "QRS boundaries not found"
        return out
    on, off = qrs
    out["qrs"] = _bounded((off - on) * ms, "qrs")
    slow = _filtfilt(med, fs, None, _SLOW_HZ)
    v = spatial_velocity(slow, fs)
    noise = _velocity_floor(v, len(med))
    rr = rr_ms / ms
    next_qrs = on + rr - 0.02 * fs                       # the next beat's QRS onset
    t_end = _t_end(slow, v, on, off, next_qrs, rr, fs, noise)
    prev_t_end = t_end - rr if t_end is not None else off - rr + 0.15 * fs
    p_on = _p_onset(slow, beats, v, on, prev_t_end, fs, noise)
    if p_on is not None and t_end is not None and p_on + rr < t_end:
        t_end = _t_end(slow, v, on, off, p_on + rr, rr, fs, noise)   # T end before the next P
    if t_end is not None:
        out["qt"] = _bounded((t_end - on) * ms, "qt")
    if p_on is not None:
        out["pr"] = _bounded((on - p_on) * ms, "pr")
    return out


def _velocity_floor(v: np.ndarray, n_leads: int) -> float:
    """Noise level of a velocity curve: its 10th percentile (the isoelectric stretches),
    scaled to what it is for 12 leads (8 independent ones). The length of a noise vector of
    k leads follows a chi distribution with k degrees of freedom, whose 10th percentile is
    a smaller share of its median the fewer the leads (0.19 for one, 0.39 for two, 0.69
    for eight)."""
    from scipy.stats import chi

    k = min(max(n_leads, 1), 8)
    share = lambda dof: chi.ppf(0.1, dof) / chi.median(dof)  # noqa: E731
    return float(np.percentile(v, 10)) * float(share(8) / share(k))


def _bounded(value: float, kind: str) -> float | None:
    lo, hi = _BOUNDS_MS[kind]
    return float(value) if lo <= value <= hi else None


def _crossing(v: np.ndarray, start: int, stop: int, thr: float, quiet: int,
              until_stop: bool = True) -> float | None:
    """Walking from ``start`` towards ``stop`` (either direction), the first sample where
    ``v`` drops below ``thr`` and stays there: at least 80 % of the next ``quiet``
    samples below too (noise may poke through an isoelectric segment), or, if
    ``until_stop``, everything up to ``stop``. Interpolated linearly between samples."""
    step = 1 if stop > start else -1
    idx = np.arange(start, stop, step)
    if len(idx) < 2:
        return None
    below = v[idx] < thr
    need = max(int(math.ceil(0.8 * quiet)), 1)
    for k in np.flatnonzero(below):
        if k == 0:
            continue
        window = below[k:k + quiet]
        if window.sum() >= need or (until_stop and k + quiet > len(idx) and window.all()):
            i, prev = int(idx[k]), int(idx[k - 1])
            hi, lo = v[prev], v[i]
            frac = (hi - thr) / (hi - lo) if hi > lo else 0.0
            return prev + step * float(np.clip(frac, 0.0, 1.0))
    return None


def _qrs_bounds(v: np.ndarray, r: int, fs: float, noise: float) -> tuple[float, float] | None:
    """QRS onset and offset (fractional samples) around the R peak index ``r``."""
    h = int(round(0.1 * fs))
    peak = r - h + int(np.argmax(v[r - h:r + h + 1]))
    thr = max(_QRS_FRACTION * v[peak], _NOISE_K * noise)
    quiet = max(int(round(_QUIET_MS / 1000.0 * fs)), 2)
    span = int(round(0.2 * fs))
    on = _crossing(v, peak, max(peak - span, 1), thr, quiet)
    off = _crossing(v, peak, min(peak + span, len(v) - 1), thr, quiet)
    if on is None or off is None:
        return None
    return on, off


def _t_end(slow: np.ndarray, v: np.ndarray, qrs_on: float, qrs_off: float, stop: float,
           rr: float, fs: float, noise: float) -> float | None:
    """T-wave end, searched between the QRS and ``stop`` (the next P or QRS onset).

    From the T apex (the largest deviation from the level at QRS onset) to the fastest
    point of the downslope, then on to where the velocity falls below a tenth of that
    (or the noise level) and stays there. Where a new wave (the next P, on the T) starts
    before that, the dip between the two, if it falls below half the downslope's
    velocity; otherwise None.
    """
    start = int(math.ceil(qrs_off + 0.04 * fs))
    stop = int(min(stop, len(v) - 1, qrs_off + 0.65 * fs))
    if stop - start < int(0.1 * fs):
        return None
    base = slow[:, max(int(qrs_on) - 1, 0)]
    # the apex lies before the longest plausible QT (QTc 600 ms): later waves are the next P
    qt_max = int(min(stop, qrs_on + _QTC_MAX_S * math.sqrt(rr / fs) * fs))
    last = int(qt_max - 0.04 * fs)
    if last - start < 2:
        return None
    apex = start + int(np.argmax(np.linalg.norm(slow[:, start:last] - base[:, None], axis=0)))
    peak = apex + int(np.argmax(v[apex:qt_max]))
    thr = max(_BOUNDARY_FRACTION * v[peak], _NOISE_K * noise)
    quiet = max(int(round(_QUIET_MS / 1000.0 * fs)), 2)
    end = _crossing(v, peak, stop, thr, quiet)
    low = np.minimum.accumulate(v[peak:stop])
    rise = np.flatnonzero((v[peak:stop] > 2.0 * low) & (v[peak:stop] > low + thr))
    if len(rise) and (end is None or peak + rise[0] < end):
        dip = peak + int(np.argmin(v[peak:peak + rise[0]]))
        return float(dip) if v[dip] <= 0.5 * v[peak] else None
    return end


def _p_onset(slow: np.ndarray, beats: np.ndarray, v: np.ndarray, qrs_on: float,
             prev_t_end: float, fs: float, noise: float) -> float | None:
    """P onset before the QRS, or None when no P wave stands out (fibrillation) or the
    atrial waves have no quiet baseline before them (flutter)."""
    stop = int(math.floor(qrs_on - 0.02 * fs))
    start = int(max(math.ceil(prev_t_end), qrs_on - 0.45 * fs, 1))
    if stop - start < int(0.06 * fs):
        return None
    if not _p_significant(slow, beats, start, stop, fs):
        return None
    # velocity averaged over 20 ms, so that a noise spike is no wave
    vm = _moving_mean(v[None], int(round(0.02 * fs)))[0]
    peak = start + int(np.argmax(vm[start:stop]))
    thr = max(_BOUNDARY_FRACTION * vm[peak], _NOISE_K * noise)
    quiet = max(int(round(_QUIET_MS / 1000.0 * fs)), 2)
    low = np.flatnonzero(vm[start:stop] < thr)       # past the tail of the previous T wave
    if len(low) == 0:
        return None
    start += int(low[0])
    # the P wave's velocity peak and its earliest hump above half of it (a notched P has
    # two) within a long P wave's length; walk back from there to an isoelectric stretch
    peak = start + int(np.argmax(vm[start:stop]))
    if vm[peak] < _P_SNR * noise:
        return None                                    # no P wave above the noise
    thr = max(_BOUNDARY_FRACTION * vm[peak], _NOISE_K * noise)
    reach = max(start, int(peak - _P_REACH_S * fs))
    first = reach + int(np.flatnonzero(vm[reach:peak + 1] >= 0.5 * vm[peak])[0])
    on = _crossing(v, first, max(start - 1, int(first - _P_REACH_S * fs)), thr, 2 * quiet,
                   until_stop=False)
    # no other atrial wave between it and the T wave (flutter waves have one)
    if on is None or np.max(vm[start:int(on) + 1], initial=0.0) >= 0.5 * vm[peak]:
        return None
    return on


def _p_significant(slow: np.ndarray, beats: np.ndarray, start: int, stop: int,
                   fs: float) -> bool:
    """Whether the median beat's deflection in ``[start, stop)`` exceeds
    ``_P_SIGNIFICANCE`` standard errors of the median (from the beat-to-beat spread)."""
    seg = beats[:, :, start:stop]                                        # (b, L, s)
    seg = seg[~np.isnan(seg).any(axis=(1, 2))]
    if len(seg) < 3:
        return False
    med = np.median(seg, axis=0)
    spread = 1.4826 * np.median(np.abs(seg - med), axis=0)              # (L, s)
    se = 1.2533 * np.sqrt(np.mean(spread ** 2, axis=1)) / math.sqrt(len(seg))   # (L,)
    ptp = np.ptp(slow[:, start:stop], axis=1)                           # (L,)
    return bool(np.any(ptp > _P_SIGNIFICANCE * np.maximum(se, 1e-9)))


# --------------------------------------------------------------------------- axis


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
