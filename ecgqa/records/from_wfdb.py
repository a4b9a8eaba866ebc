"""A decoded wfdb record -> :class:`EcgRecord`: file-format names become canonical ones.

    wfdb ``p_signal`` (samples, channels), ``sig_name``, ``units`` --to_canonical-->
        ECG channels in mV (or all in normalised units), short NaN gaps interpolated,
        unusable leads zeroed and masked, standard leads first in standard order,
        amplitude and known-gain warnings, header comments as :class:`EcgMeta`
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from ecgqa.records.ecg_record import (
    MIN_SECONDS,
    PLAUSIBLE_MEDIAN_RANGE_MV,
    EcgRecord,
    EcgRecordError,
    shorten,
)
from ecgqa.records.leads import STANDARD_LEADS, canonical_lead_name, is_standard_lead
from ecgqa.records.meta import parse_comments

_VOLT_UNITS = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "nv": 1e-6, "v": 1e3}
# Normalised units: WFDB's "NU" (PhysioNet's convention for dimensionless signals)
_NORMALISED_UNITS = {"nu", "n.u.", "normalised", "normalized"}


def to_canonical(header: Path, wrec, hdr, warnings: list[str],
                 recorded_at: str | None) -> EcgRecord:
    """The :class:`EcgRecord` of a record wfdb decoded (``wrec``) from ``header``
    (``hdr``), with the reader's ``warnings`` so far and the recording time as written.

    Raises:
        EcgRecordError: no samples, fewer than declared, too short, no ECG channel or
            no usable lead.
    """
    sig = wrec.p_signal
    if sig is None or sig.ndim != 2 or sig.shape[0] == 0:
        raise EcgRecordError(header, "record holds no samples")
    fs = float(wrec.fs)
    n = sig.shape[0]
    if hdr.sig_len and n != hdr.sig_len and getattr(hdr, "n_seg", None) is None:
        raise EcgRecordError(header, f"header/data mismatch: {hdr.sig_len} samples declared, "
                             f"{n} decoded")
    if n / fs < MIN_SECONDS:
        raise EcgRecordError(header, f"record is {n / fs:.3f} s long; at least {MIN_SECONDS:g} s "
                             "of ECG is needed")
    rows, names, units, warnings_ = _ecg_channels(header, wrec, sig)
    warnings.extend(warnings_)
    with np.errstate(over="ignore", invalid="ignore"):   # out-of-range values become inf,
        stacked = np.stack(rows).astype(np.float32)      # which _clean treats as invalid
    signal, mask = _clean(header, stacked, names, warnings, units)
    order = sorted(range(len(names)), key=lambda i: _lead_rank(names[i], i))
    signal, mask = signal[order], mask[order]
    names = [names[i] for i in order]
    if units == "mV":
        warnings.extend(_amplitude_warnings(signal, mask, fs) or _known_gain_quirks(wrec))
    meta = parse_comments(wrec.comments or [])
    meta = replace(
        meta,
        record_name=str(wrec.record_name),
        source_format=_format_name(header, hdr),
        original_fs=fs,
        original_leads=tuple(wrec.sig_name),
        base_datetime=recorded_at,
        warnings=tuple(warnings),
    )
    return EcgRecord(signal=np.ascontiguousarray(signal), fs=fs, leads=tuple(names),
                     lead_mask=mask, meta=meta, path=str(header), units=units)


def _ecg_channels(header: Path, wrec, sig: np.ndarray):
    """The ECG channels: voltages in mV; or, when the record has none, channels in
    normalised units as they are.

    Returns:
        ``(rows, names, units, warnings)``, ``units`` ``"mV"`` or ``"NU"``.
    """
    volts, normed, dropped = {}, {}, []
    declared = wrec.units or [""] * len(wrec.sig_name)
    for j, (raw_name, unit) in enumerate(zip(wrec.sig_name, declared)):
        key = (unit or "mV").strip().lower()
        name = canonical_lead_name(raw_name or f"ch{j}")
        target = volts if key in _VOLT_UNITS else normed if key in _NORMALISED_UNITS else None
        if target is None:
            dropped.append(f"{raw_name} ({unit})")
        elif name in target:
            dropped.append(f"{raw_name} (duplicate of {name})")
        else:
            target[name] = sig[:, j] * _VOLT_UNITS.get(key, 1.0)
    warnings = []
    if volts:
        dropped += [f"{n} (normalised units beside voltage channels)" for n in normed]
        chosen, units = volts, "mV"
    elif normed:
        chosen, units = normed, "NU"
        warnings.append("amplitudes are in normalised units (NU), not millivolts: the source "
                        "scaled the signal (e.g. z-scored each lead), so voltages and the "
                        "leads' relative amplitudes cannot be read")
    else:
        kinds = ", ".join(dict.fromkeys(map(str, declared)))
        raise EcgRecordError(header, "no voltage channel in the record, nor one in normalised "
                             f"units (NU); units: {shorten(kinds, 60)}")
    if dropped:
        warnings.insert(0, "non-ECG or duplicate channels dropped: " + ", ".join(dropped))
    return list(chosen.values()), list(chosen), units, warnings


def _clean(header: Path, signal: np.ndarray, names: list[str], warnings: list[str],
           units: str = "mV"):
    """Interpolate short NaN gaps, zero unusable leads, refuse a record with none left."""
    mask = np.ones(len(names), dtype=bool)
    all_zero = not np.any(signal)          # NaN counts as non-zero here
    t = np.arange(signal.shape[1])
    for i, row in enumerate(signal):
        bad = ~np.isfinite(row)
        frac = bad.mean()
        if frac > 0.5:
            row[:] = 0.0
            mask[i] = False
            warnings.append(f"lead {names[i]}: {frac:.0%} of samples invalid, treated as missing")
            continue
        if frac > 0:
            row[bad] = np.interp(t[bad], t[~bad], row[~bad])
            warnings.append(f"lead {names[i]}: {bad.sum()} invalid samples interpolated")
        if np.ptp(row) == 0:
            mask[i] = False
            warnings.append(f"lead {names[i]} is flat (constant {row[0]:g} {units}), treated as "
                            "missing")
            row[:] = 0.0
    if not mask.any():
        if all_zero:
            raise EcgRecordError(header, "signal is all zero (flat) in every lead")
        raise EcgRecordError(header, "no lead holds a usable signal (NaN, invalid or flat)")
    return signal, mask


def _lead_rank(name: str, index: int) -> tuple[int, int]:
    if is_standard_lead(name):
        return (0, STANDARD_LEADS.index(name))
    return (1, index)


def _amplitude_warnings(signal: np.ndarray, mask: np.ndarray, fs: float) -> list[str]:
    """Flag a declared gain that cannot be right (values stay as declared, not rescaled).

    The statistic is the median over leads of the 1-99 percentile range of the
    0.67-40 Hz band-passed signal (baseline wander removed), on at most five minutes.
    A 12-lead median below 0.2 mV is far under the low-voltage criteria (QRS < 0.5 mV in
    limb leads); above 4 mV it is beyond the LVH voltage criteria (SV1 + RV5 > 3.5 mV).
    """
    from scipy.signal import butter, sosfiltfilt

    x = signal[mask][:, : max(1, int(300 * fs))].astype(np.float64)
    high = min(40.0, fs / 2.5)               # below Nyquist at any rate read_record accepts
    if high > 2 * 0.67:
        sos = butter(2, [0.67, high], btype="band", fs=fs, output="sos")
        if x.shape[1] > 3 * 2 * sos.shape[0] * 3:
            x = sosfiltfilt(sos, x, axis=1)
    lo, hi = np.percentile(x, [1, 99], axis=1)
    median_range = float(np.median(hi - lo))
    low, high = PLAUSIBLE_MEDIAN_RANGE_MV
    if median_range > high:
        return [f"implausible amplitude: median lead range {median_range:.1f} mV (> {high:g} mV); "
                "the header's gain is probably too small"]
    if median_range < low:
        return [f"implausible amplitude: median lead range {median_range:.3g} mV (< {low:g} mV); "
                "the header's gain or units are probably wrong"]
    return []


def _known_gain_quirks(wrec) -> list[str]:
    """Gain errors of published releases that amplitude alone cannot reveal."""
    gains = {round(float(g), 6) for g in (getattr(wrec, "adc_gain", None) or [])
             if g is not None}
    if re.fullmatch(r"HR\d{5}", str(wrec.record_name)) and gains == {200.0}:
        return ["implausible gain: PhysioNet/CinC 2020 PTB-XL records (HRxxxxx) declare 200/mV "
                "but store PTB-XL's 1000/mV samples, so amplitudes read 5x too large"]
    return []


def _format_name(header: Path, hdr) -> str:
    fmts = sorted(set(hdr.fmt or [])) if getattr(hdr, "n_seg", None) is None else ["multi-segment"]
    files = sorted(set(getattr(hdr, "file_name", None) or []))
    kind = "wfdb-mat" if any(f.lower().endswith(".mat") for f in files) else "wfdb"
    return f"{kind} (format {', '.join(fmts)})"
