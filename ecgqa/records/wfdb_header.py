"""WFDB header files (``.hea``): read, repair and check them before any sample is read.

    x.hea --read_header_text--> text --repair_header_text--> the CinC 2020 record-line
        quirk fixed (``E00001.mat 12 500 5000``) --header_view--> a base name wfdb reads
    wfdb header --check_header--> refused when impossible: no signals, absurd rate or
        length, missing or foreign signal files, a file shorter than declared

Challenge ``.hea`` + ``.mat`` pairs are WFDB records too. The limits are in
:mod:`ecgqa.records.ecg_record`.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ecgqa.records.ecg_record import (
    MAX_FS,
    MAX_SECONDS,
    MAX_SIGNALS,
    MAX_VALUES,
    MIN_FS,
    EcgRecordError,
    shorten,
)
from ecgqa.records.record_path import file_kind


def read_header_text(header: Path) -> str:
    """The header's text; an unreadable, empty or binary file is refused."""
    try:
        raw = header.read_bytes()
    except OSError as err:
        raise EcgRecordError(header, f"cannot read header: {err.strerror or err}") from None
    if not raw.strip():
        raise EcgRecordError(header, "header file is empty")
    if b"\x00" in raw[:4096]:
        raise EcgRecordError(header, "header is binary, not a WFDB text header")
    return raw.decode("utf-8", errors="replace")


def record_line(text: str) -> str | None:
    """The record line (the first that is neither blank nor a comment), or None."""
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            return line.strip()
    return None


_FS_FIELD = re.compile(r"^(\d+\.?\d*|\.\d+)(e[+-]?\d+)?(/[\d.]+(\([\d.]+\))?)?$", re.I)


def check_record_line(header: Path, line: str) -> bool:
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


def repair_header_text(text: str) -> str | None:
    """Fix the CinC 2020 quirk ``E00001.mat 12 500 5000``: a file name as record name.

    Returns the repaired text, or None when no repair was needed.
    """
    line = record_line(text)
    if line is None:
        return None
    name, _, rest = line.partition(" ")
    fixed = re.sub(r"\.(mat|dat|hea)$", "", name, flags=re.IGNORECASE)
    if fixed == name:
        return None
    return text.replace(line, f"{fixed} {rest}", 1)


class header_view:
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
        name = record_line(self.text).split()[0].split("/")[0]
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


def check_header(header: Path, hdr) -> None:
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
            raise EcgRecordError(header, f"signal file {shorten(fname)} is "
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
            raise EcgRecordError(header, f"segment header {shorten(name)}.hea is missing")


def _signal_file_kind(header: Path, fname: str) -> str | None:
    """What the header's signal file name points at, beside the header (never above it)."""
    parts = Path(fname).parts if fname and "\x00" not in fname else ()
    if not parts or Path(fname).is_absolute() or ".." in parts or parts == (".",):
        raise EcgRecordError(header, f"signal file name {shorten(fname)!r} is not a file name "
                             "beside the header")
    try:
        return file_kind(header.parent / fname)
    except EcgRecordError as err:
        raise EcgRecordError(header, f"signal file {shorten(fname)}: {err.problem}") from None
