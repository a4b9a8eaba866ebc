"""Read an ECG record from disk into a canonical :class:`EcgRecord`.

Everything file-format specific (WFDB headers, ``p_signal``, ``sig_name``, Challenge
``.mat`` quirks) stays in :mod:`ecgqa.records`; the rest of ecgqa sees millivolts, a
sampling rate, canonical lead names and plain metadata::

    path --resolve_header (record_path)--> x.hea --read, repair, check (wfdb_header)-->
        wfdb.rdrecord --to_canonical (from_wfdb)--> EcgRecord (ecg_record)
        --select leads, resample, crop or pad--> the EcgRecord asked for

Supported: WFDB records in every signal format wfdb reads (8, 16, 24, 32, 61, 80, 160,
212, 310, 311, FLAC 508/516/524, byte offsets, multi-segment) and PhysioNet/CinC
Challenge ``.hea`` + ``.mat`` pairs, including the 2020 Georgia headers whose record
line names ``E00001.mat``. Pass ``x.hea``, ``x.mat``, ``x.dat`` or the bare record name.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ecgqa.records.ecg_record import (
    MAX_FS,
    MAX_SECONDS,
    MAX_SIGNALS,
    MAX_VALUES,
    MIN_FS,
    MIN_SECONDS,
    PLAUSIBLE_MEDIAN_RANGE_MV,
    EcgRecord,
    EcgRecordError,
    shorten,
)
from ecgqa.records.from_wfdb import to_canonical
from ecgqa.records.leads import parse_leads
from ecgqa.records.record_path import resolve_header
from ecgqa.records.wfdb_header import (
    check_header,
    check_record_line,
    header_view,
    read_header_text,
    record_line,
    repair_header_text,
)

__all__ = [
    "EcgRecord", "EcgRecordError", "read_record", "resolve_header", "MIN_SECONDS",
    "MAX_SECONDS", "MAX_VALUES", "MAX_FS", "MAX_SIGNALS", "MIN_FS",
    "PLAUSIBLE_MEDIAN_RANGE_MV",
]


def read_record(
    path: str | os.PathLike,
    *,
    fs: float | None = None,
    duration_s: float | None = None,
    leads: str | tuple[str, ...] | list[str] | None = None,
    align: str = "start",
) -> EcgRecord:
    """Read an ECG record and return it in millivolts with canonical lead names.

    Args:
        path: ``x.hea``, ``x.mat``, ``x.dat`` or the bare record name ``x``.
        fs: resample to this rate (Hz) with a polyphase filter; ``None`` keeps the file's.
        duration_s: crop or zero-pad to this many seconds; ``None`` keeps the length.
        leads: select/reorder leads (``"12-lead"``, ``"limb"``, ``"I,II,V1"``, a list);
            missing leads are zero rows with ``lead_mask`` False.
        align: ``"start"`` or ``"center"``, where ``duration_s`` crops or pads.

    Returns:
        EcgRecord with ``signal`` float32 ``(leads, samples)`` in mV; a record whose
        channels are all in normalised units (``NU``, e.g. z-scored by its source) is read
        as it is, with ``units == "NU"`` and a warning.

    Raises:
        EcgRecordError: the file is missing, malformed, or holds no usable ECG.

    Example:
        >>> rec = read_record("../shared/data/real/ptbxl/00001_lr.hea", fs=500)
        >>> rec.signal.shape, rec.leads[:3]
        ((12, 5000), ('I', 'II', 'III'))
    """
    header = resolve_header(path)
    try:
        wanted = parse_leads(leads)
    except ValueError as err:
        raise EcgRecordError(header, str(err)) from None
    rec = _read_wfdb(header)
    if wanted is not None:
        have = ", ".join(n for n, ok in zip(rec.leads, rec.lead_mask) if ok)
        rec = rec.select_leads(wanted)
        if not rec.lead_mask.any():
            raise EcgRecordError(header, f"none of the requested leads "
                                 f"({shorten(', '.join(wanted), 40)}) holds a usable signal in "
                                 f"this record (it has {shorten(have, 60)})")
    if fs is not None:
        if not fs > 0:
            raise EcgRecordError(header, f"target sampling rate must be > 0 Hz, got {fs}")
        rec = rec.resample(fs)
    if duration_s is not None:
        try:
            rec = rec.fit_duration(duration_s, align)
        except ValueError as err:
            raise EcgRecordError(header, str(err)) from None
    return rec


# --------------------------------------------------------------------------- WFDB path


def _read_wfdb(header: Path) -> EcgRecord:
    import wfdb

    text = read_header_text(header)
    repaired = repair_header_text(text)
    has_fs = check_record_line(header, record_line(text) or "")
    with header_view(header, repaired) as base:
        try:
            hdr = wfdb.rdheader(base)
        except Exception as err:  # wfdb raises ValueError, IndexError, TypeError ...
            raise EcgRecordError(header, f"malformed header: {_reason(err)}") from None
        check_header(header, hdr)
        try:
            with np.errstate(all="ignore"):     # absurd gains overflow; _clean checks values
                wrec = wfdb.rdrecord(base, physical=True)
        except Exception as err:
            raise EcgRecordError(header, f"cannot decode the signal: {_reason(err)}") from None
    warnings = []
    if repaired is not None:
        warnings.append("header record line repaired (record name carried a file extension)")
    if not has_fs:
        warnings.append("header gives no sampling rate; the WFDB default 250 Hz was assumed")
    # date/time as written (Challenge files use `04-Jun-2020 15:11:55`, not WFDB's format)
    recorded_at = " ".join((record_line(text) or "").split()[4:]) or None
    return to_canonical(header, wrec, hdr, warnings, recorded_at)


def _reason(err: Exception) -> str:
    msg = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {msg}" if msg else type(err).__name__
