"""Read an ECG record from disk into a canonical :class:`EcgRecord`.

Everything file-format specific (WFDB headers, ``p_signal``, ``sig_name``, Challenge
``.mat`` quirks) stays in this module; the rest of ecgqa sees millivolts, a sampling
rate, canonical lead names and plain metadata.

Supported: WFDB records in every signal format wfdb reads (8, 16, 24, 32, 61, 80, 160,
212, 310, 311, FLAC 508/516/524, byte offsets, multi-segment) and PhysioNet/CinC
Challenge ``.hea`` + ``.mat`` pairs, including the 2020 Georgia headers whose record
line names ``E00001.mat``. Pass ``x.hea``, ``x.mat``, ``x.dat`` or the bare record name.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from ecgqa.errors import EcgqaError
from ecgqa.records.leads import (
    STANDARD_LEADS,
    canonical_lead_name,
    is_standard_lead,
    parse_leads,
)
from ecgqa.records.meta import EcgMeta, parse_comments

# Limits that separate a real recording from a corrupt header.
MIN_SECONDS = 1.0
MAX_SECONDS = 48 * 3600.0
MAX_VALUES = 400_000_000          # leads x samples held in memory (1.6 GB of float32)
MAX_FS = 100_000.0
MAX_SIGNALS = 1024                # channels in one record
MIN_FS = 50.0                     # below it no QRS complex can be resolved
# Median over leads of the band-passed 1-99 percentile range of a real surface ECG.
PLAUSIBLE_MEDIAN_RANGE_MV = (0.2, 4.0)
_VOLT_UNITS = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "nv": 1e-6, "v": 1e3}
# Normalised units: WFDB's "NU" (PhysioNet's convention for dimensionless signals)
_NORMALISED_UNITS = {"nu", "n.u.", "normalised", "normalized"}
_SIGNAL_SUFFIXES = {".hea", ".mat", ".dat"}


class EcgRecordError(EcgqaError):
    """A record could not be read; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True, eq=False)
class EcgRecord:
    """An ECG in canonical form.

    Attributes:
        signal: float32 array ``(leads, samples)`` in millivolts, or in normalised units
            when ``units`` is ``"NU"``.
        fs: sampling rate in Hz.
        leads: lead names, canonical spelling (``I II III aVR aVL aVF V1..V6``) first in
            standard order, other channels after them.
        lead_mask: bool ``(leads,)``; False where a lead was requested but not recorded,
            or recorded without a usable sample (the signal row is then zeros).
        meta: header metadata and reader warnings.
        path: the header file the record came from.
        units: ``"mV"``, or ``"NU"`` (normalised units) for a record its source already
            scaled, e.g. z-scored per lead: its amplitudes are not voltages, so neither
            absolute voltage nor the leads' relative amplitudes can be read from it.
    """

    signal: np.ndarray
    fs: float
    leads: tuple[str, ...]
    lead_mask: np.ndarray
    meta: EcgMeta = field(default_factory=EcgMeta)
    path: str = ""
    units: str = "mV"

    @property
    def normalised(self) -> bool:
        """True when the amplitudes are in normalised units, not millivolts."""
        return self.units != "mV"

    @property
    def n_samples(self) -> int:
        return int(self.signal.shape[1])

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs

    def lead(self, name: str) -> np.ndarray:
        """The samples of one lead (any spelling), in ``units`` (mV, or NU)."""
        canon = canonical_lead_name(name)
        if canon not in self.leads:
            raise KeyError(f"lead {name!r} not in record ({', '.join(self.leads)})")
        return self.signal[self.leads.index(canon)]

    def resample(self, fs: float) -> EcgRecord:
        """Polyphase resampling (scipy ``resample_poly``) to ``fs`` Hz."""
        if fs <= 0:
            raise ValueError(f"target sampling rate must be > 0 Hz, got {fs}")
        if abs(fs - self.fs) < 1e-9:
            return self
        from scipy.signal import resample_poly

        ratio = Fraction(float(fs) / float(self.fs)).limit_denominator(1000)
        out = resample_poly(self.signal, ratio.numerator, ratio.denominator, axis=1)
        out = out.astype(np.float32)  # (leads, samples * up / down)
        return replace(self, signal=out, fs=float(fs))

    def fit_duration(self, seconds: float, align: str = "start") -> EcgRecord:
        """Crop or zero-pad to exactly ``round(seconds * fs)`` samples.

        Args:
            seconds: target duration.
            align: ``"start"`` keeps the beginning (pads at the end); ``"center"`` keeps the
                middle (pads both sides).
        """
        if seconds <= 0:
            raise ValueError(f"target duration must be > 0 s, got {seconds}")
        if align not in ("start", "center"):
            raise ValueError(f"align must be 'start' or 'center', got {align!r}")
        target = int(round(seconds * self.fs))
        n = self.n_samples
        if target == n:
            return self
        if target < n:
            start = 0 if align == "start" else (n - target) // 2
            return replace(self, signal=np.ascontiguousarray(self.signal[:, start:start + target]))
        before = 0 if align == "start" else (target - n) // 2
        out = np.zeros((self.signal.shape[0], target), dtype=np.float32)
        out[:, before:before + n] = self.signal
        return replace(self, signal=out)

    def select_leads(self, leads: str | tuple[str, ...] | list[str]) -> EcgRecord:
        """Keep and reorder leads; leads the record lacks become zero rows, mask False.

        Args:
            leads: names (any spelling), ``"I,II,V1"`` or a subset name such as ``"limb"``.
        """
        wanted = parse_leads(leads)
        assert wanted is not None
        rows = np.zeros((len(wanted), self.n_samples), dtype=np.float32)
        mask = np.zeros(len(wanted), dtype=bool)
        for i, name in enumerate(wanted):
            if name in self.leads:
                j = self.leads.index(name)
                rows[i] = self.signal[j]
                mask[i] = self.lead_mask[j]
        return replace(self, signal=rows, leads=wanted, lead_mask=mask)


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
                                 f"({_short(', '.join(wanted), 40)}) holds a usable signal in "
                                 f"this record (it has {_short(have, 60)})")
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


def resolve_header(path: str | os.PathLike) -> Path:
    """Map any accepted spelling of a record (``x.hea``, ``x.mat``, ``x.dat``, ``x``) to its
    existing ``.hea`` file."""
    try:
        p = Path(path).expanduser()
    except RuntimeError:                   # "~nosuchuser/x": no home folder to put there
        p = Path(path)
    if _kind(p) == "dir":
        raise EcgRecordError(p, "is a directory; give a record such as DIR/name.hea")
    if p.suffix.lower() in _SIGNAL_SUFFIXES:
        header = p.with_suffix(".hea")
        if _kind(header) == "file":
            return header
        if _kind(p) == "file":
            raise EcgRecordError(p, f"no header {header.name} beside the signal file; a WFDB "
                                 "or Challenge record needs its .hea for gains and lead names")
        raise EcgRecordError(p, "no such file")
    header = Path(str(p) + ".hea")  # a bare record name may itself contain dots
    if _kind(header) == "file":
        return header
    if _kind(p) == "file":
        raise EcgRecordError(p, f"unsupported file type {p.suffix or '(no extension)'!r}: ecgqa "
                             "reads WFDB records (.hea with .dat/.mat/.flac signals) and "
                             "PhysioNet Challenge .hea + .mat pairs")
    raise EcgRecordError(p, f"no such record (neither {p.name} nor {header.name} exists)")


def _kind(path: Path) -> str | None:
    """``"file"``, ``"dir"``, ``"other"`` or None (missing); a path the system cannot even
    look up (a name too long, a symlink loop, no permission) is the user's error."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno in (errno.ENOTDIR, errno.ELOOP):
            return None if err.errno == errno.ENOTDIR else "other"
        raise EcgRecordError(path, f"cannot look up the file: {err.strerror or err}") from None
    except ValueError as err:                         # an embedded NUL byte
        raise EcgRecordError(repr(str(path)), f"not a usable file name ({err})") from None
    if stat.S_ISREG(st.st_mode):
        return "file"
    return "dir" if stat.S_ISDIR(st.st_mode) else "other"


# --------------------------------------------------------------------------- WFDB path


def _read_wfdb(header: Path) -> EcgRecord:
    import wfdb

    text = _read_header_text(header)
    repaired = _repair_header_text(text)
    has_fs = _check_record_line(header, _record_line(text) or "")
    with _header_view(header, repaired) as base:
        try:
            hdr = wfdb.rdheader(base)
        except Exception as err:  # wfdb raises ValueError, IndexError, TypeError ...
            raise EcgRecordError(header, f"malformed header: {_reason(err)}") from None
        _check_header(header, hdr)
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
    recorded_at = " ".join((_record_line(text) or "").split()[4:]) or None
    return _to_canonical(header, wrec, hdr, warnings, recorded_at)


def _read_header_text(header: Path) -> str:
    try:
        raw = header.read_bytes()
    except OSError as err:
        raise EcgRecordError(header, f"cannot read header: {err.strerror or err}") from None
    if not raw.strip():
        raise EcgRecordError(header, "header file is empty")
    if b"\x00" in raw[:4096]:
        raise EcgRecordError(header, "header is binary, not a WFDB text header")
    return raw.decode("utf-8", errors="replace")


def _record_line(text: str) -> str | None:
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            return line.strip()
    return None


_FS_FIELD = re.compile(r"^(\d+\.?\d*|\.\d+)(e[+-]?\d+)?(/[\d.]+(\([\d.]+\))?)?$", re.I)


def _check_record_line(header: Path, line: str) -> bool:
    """Validate the sampling-rate field wfdb would silently replace by 250 Hz.

    Returns:
        True when the record line states a sampling rate.
    """
    fields = line.split()
    if len(fields) < 3:
        return False
    fs = fields[2]
    if fs.startswith("-"):
        raise EcgRecordError(header, f"sampling rate must be > 0 Hz, header says {fs}")
    if not _FS_FIELD.match(fs):
        raise EcgRecordError(header, f"malformed header: sampling rate {fs!r} is not a number")
    return True


def _repair_header_text(text: str) -> str | None:
    """Fix the CinC 2020 quirk ``E00001.mat 12 500 5000``: a file name as record name.

    Returns the repaired text, or None when no repair was needed.
    """
    line = _record_line(text)
    if line is None:
        return None
    name, _, rest = line.partition(" ")
    fixed = re.sub(r"\.(mat|dat|hea)$", "", name, flags=re.IGNORECASE)
    if fixed == name:
        return None
    return text.replace(line, f"{fixed} {rest}", 1)


class _header_view:
    """Context manager yielding the wfdb record base name to read.

    An unrepaired header is read in place. A repaired header is written to a temporary
    folder next to links to the original signal files, so wfdb's public reader is used
    for the samples either way.
    """

    def __init__(self, header: Path, repaired_text: str | None):
        self.header, self.text, self.tmp = header, repaired_text, None

    def __enter__(self) -> str:
        if self.text is None:
            return str(self.header.with_suffix(""))
        self.tmp = tempfile.mkdtemp(prefix="ecgqa-hea-")
        name = _record_line(self.text).split()[0].split("/")[0]
        Path(self.tmp, name + ".hea").write_text(self.text)
        try:
            for entry in self.header.parent.iterdir():
                if entry.name != self.header.name and entry.is_file():
                    target = Path(self.tmp, entry.name)
                    try:
                        target.symlink_to(entry.resolve())
                    except OSError:
                        shutil.copyfile(entry, target)
        except OSError as err:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise EcgRecordError(self.header, "cannot read the record's folder: "
                                 f"{err.strerror or err}") from None
        return str(Path(self.tmp, name))

    def __exit__(self, *exc) -> None:
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _reason(err: Exception) -> str:
    msg = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {msg}" if msg else type(err).__name__


def _check_header(header: Path, hdr) -> None:
    """Reject impossible headers before any sample is read."""
    from wfdb.io._signal import BYTES_PER_SAMPLE

    n_sig = hdr.n_sig or 0
    if n_sig > MAX_SIGNALS:
        raise EcgRecordError(header, f"malformed header: {n_sig} signals declared (at most "
                             f"{MAX_SIGNALS})")
    fs = float(hdr.fs or 0)
    if not np.isfinite(fs) or fs <= 0:
        raise EcgRecordError(header, f"sampling rate must be > 0 Hz, header says {hdr.fs}")
    if fs > MAX_FS:
        raise EcgRecordError(header, f"sampling rate {fs:g} Hz is implausible for an ECG")
    if fs < MIN_FS:
        raise EcgRecordError(header, f"sampling rate {fs:g} Hz is too low for an ECG (at least "
                             f"{MIN_FS:g} Hz: a QRS complex lasts about 0.1 s)")
    if getattr(hdr, "n_seg", None) is not None:
        _check_segments(header, hdr, fs)
        return  # wfdb reads each segment's own header, which it checks
    if not n_sig or not hdr.sig_name:
        raise EcgRecordError(header, "header declares no signals")
    if len(hdr.sig_name) != n_sig:
        raise EcgRecordError(header, f"malformed header: {n_sig} signals declared but "
                             f"{len(hdr.sig_name)} signal lines given")
    for name, unit in zip(hdr.sig_name, hdr.units or []):
        if unit and "/" in unit:
            raise EcgRecordError(header, f"malformed header: cannot parse gain/units {unit!r} "
                                 f"of signal {name}")
    for fmt in set(hdr.fmt or []):
        if fmt not in BYTES_PER_SAMPLE:
            raise EcgRecordError(header, f"unknown WFDB signal format {fmt!r}")
    per_file: dict[str, float] = {}
    offsets: dict[str, int] = {}
    for i, fname in enumerate(hdr.file_name):
        kind = _signal_file_kind(header, fname)
        if kind != "file":
            raise EcgRecordError(header, f"signal file {_short(fname)} is "
                                 f"{'missing' if kind is None else 'not a regular file'}")
        spf = (hdr.samps_per_frame or [1] * hdr.n_sig)[i] or 1
        per_file[fname] = per_file.get(fname, 0.0) + BYTES_PER_SAMPLE[hdr.fmt[i]] * spf
        offsets[fname] = (hdr.byte_offset or [None] * hdr.n_sig)[i] or 0
    sizes = {f: (header.parent / f).stat().st_size - offsets[f] for f in per_file}
    n = hdr.sig_len
    if not n:  # length omitted: wfdb infers it from the file size
        n = max((int(sizes[f] / b) for f, b in per_file.items() if b > 0), default=0)
    if n / fs > MAX_SECONDS or n * hdr.n_sig > MAX_VALUES:
        raise EcgRecordError(header, f"absurd length: {n} samples x {hdr.n_sig} signals "
                             f"({n / fs / 3600:.1f} h)")
    if hdr.sig_len:
        for fname, frame_bytes in per_file.items():
            if frame_bytes == 0:
                continue  # FLAC: compressed, wfdb checks the stream itself
            need = int(np.ceil(frame_bytes * n))
            if sizes[fname] < need:
                raise EcgRecordError(header, f"header/data mismatch: {n} samples declared but "
                                     f"{fname} holds {max(sizes[fname], 0) / frame_bytes:.0f}")


def _check_segments(header: Path, hdr, fs: float) -> None:
    """A multi-segment master header: segment count, names and lengths that add up."""
    lengths = list(hdr.seg_len or [])
    names = list(hdr.seg_name or [])
    if not hdr.n_sig:
        raise EcgRecordError(header, "header declares no signals")
    if not lengths or len(lengths) != len(names) or len(names) != hdr.n_seg:
        raise EcgRecordError(header, f"malformed header: {hdr.n_seg} segments declared but "
                             f"{len(names)} segment lines given")
    if any(n is None or n < 0 for n in lengths):
        raise EcgRecordError(header, "malformed header: a segment length is missing or negative")
    total = sum(lengths)
    if hdr.sig_len and total != hdr.sig_len:
        raise EcgRecordError(header, f"header/data mismatch: {hdr.sig_len} samples declared, "
                             f"the segments hold {total}")
    if total / fs > MAX_SECONDS or total * hdr.n_sig > MAX_VALUES:
        raise EcgRecordError(header, f"absurd length: {total} samples x {hdr.n_sig} signals")
    record = header.with_suffix("").name
    for name in names:
        if name == "~":
            continue
        if name == record:
            raise EcgRecordError(header, "malformed header: a segment is the record itself")
        if _signal_file_kind(header, name + ".hea") != "file":
            raise EcgRecordError(header, f"segment header {_short(name)}.hea is missing")


def _signal_file_kind(header: Path, fname: str) -> str | None:
    """What the header's signal file name points at, beside the header (never above it)."""
    parts = Path(fname).parts if fname and "\x00" not in fname else ()
    if not parts or Path(fname).is_absolute() or ".." in parts or parts == (".",):
        raise EcgRecordError(header, f"signal file name {_short(fname)!r} is not a file name "
                             "beside the header")
    try:
        return _kind(header.parent / fname)
    except EcgRecordError as err:
        raise EcgRecordError(header, f"signal file {_short(fname)}: {err.problem}") from None


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


# --------------------------------------------------------------------------- canonical form


def _to_canonical(header: Path, wrec, hdr, warnings: list[str],
                  recorded_at: str | None) -> EcgRecord:
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
                             f"units (NU); units: {_short(kinds, 60)}")
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
