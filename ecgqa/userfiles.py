"""Reading a user's small text files safely, for every layer (imports only the errors).

One reader for configs, ECG-QA JSON, answer tables, saved metadata: a regular file (not a
folder, device or pipe, which could block), at most ``limit`` bytes, UTF-8 (a BOM
dropped); any problem is one line naming the file, raised as the caller's error class.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from ecgqa.errors import EcgqaError

_BREAKS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


def clean(path: str | os.PathLike) -> str:
    """A path for a one-line error message: control characters (line breaks) escaped."""
    text = os.fspath(path)
    text = text if isinstance(text, str) else os.fsdecode(text)
    return _BREAKS.sub(lambda m: repr(m.group())[1:-1], text)


def os_reason(err: Exception) -> str:
    """An OS error's reason in one line."""
    return getattr(err, "strerror", None) or " ".join(str(err).split()) or type(err).__name__


def read_text(path: str | os.PathLike, error: type[EcgqaError],
              limit: int | None = None) -> str:
    """The UTF-8 text of a regular file (a leading BOM dropped).

    Args:
        path: the file.
        error: the caller's error class (``ConfigError``, ``EcgQaError`` ...).
        limit: refuse files larger than this many bytes (None: no limit).

    Raises:
        ``error`` naming the file: missing, not a regular file, larger than ``limit``,
        unreadable, or not UTF-8.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise error(f"{clean(p)}: no such file") from None
    except (OSError, ValueError) as err:                 # too long, a loop, an embedded NUL
        raise error(f"{clean(p)}: cannot read ({os_reason(err)})") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{clean(p)}: not a regular file")
    if limit is not None and st.st_size > limit:
        raise error(f"{clean(p)}: {st.st_size} bytes is too large for this file (at most "
                    f"{limit})")
    try:
        with open(p, "rb") as f:
            data = f.read() if limit is None else f.read(limit + 1)
    except OSError as err:
        raise error(f"{clean(p)}: cannot read ({os_reason(err)})") from None
    if limit is not None and len(data) > limit:
        raise error(f"{clean(p)}: too large for this file (at most {limit} bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise error(f"{clean(p)}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset "
                    f"{err.start})") from None
