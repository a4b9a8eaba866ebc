"""Which file a record name means: ``x.hea``, ``x.mat``, ``x.dat`` or the bare ``x``.

Looking a path up turns every system error (a name too long, a symlink loop, no
permission, an embedded NUL byte) into an :class:`EcgRecordError` naming the path.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from ecgqa.records.ecg_record import EcgRecordError

_SIGNAL_SUFFIXES = {".hea", ".mat", ".dat"}


def resolve_header(path: str | os.PathLike) -> Path:
    """Map any accepted spelling of a record (``x.hea``, ``x.mat``, ``x.dat``, ``x``) to its
    existing ``.hea`` file."""
    try:
        p = Path(path).expanduser()
    except RuntimeError:                   # "~nosuchuser/x": no home folder to put there
        p = Path(path)
    if file_kind(p) == "dir":
        raise EcgRecordError(p, "is a directory; give a record such as DIR/name.hea")
    if p.suffix.lower() in _SIGNAL_SUFFIXES:
        header = p.with_suffix(".hea")
        if file_kind(header) == "file":
            return header
        if file_kind(p) == "file":
            raise EcgRecordError(p, f"no header {header.name} beside the signal file; a WFDB "
                                 "or Challenge record needs its .hea for gains and lead names")
        raise EcgRecordError(p, "no such file")
    header = Path(str(p) + ".hea")  # a bare record name may itself contain dots
    if file_kind(header) == "file":
        return header
    if file_kind(p) == "file":
        raise EcgRecordError(p, f"unsupported file type {p.suffix or '(no extension)'!r}: ecgqa "
                             "reads WFDB records (.hea with .dat/.mat/.flac signals) and "
                             "PhysioNet Challenge .hea + .mat pairs")
    raise EcgRecordError(p, f"no such record (neither {p.name} nor {header.name} exists)")


def file_kind(path: Path) -> str | None:
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
