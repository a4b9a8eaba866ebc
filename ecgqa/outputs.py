"""Output folders written all at once: a reader never sees one half-written."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_folder(out: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it becomes ``out`` (which must
    be missing or empty) in one rename, on any error or interrupt it is removed.

    Example:
        >>> with atomic_folder(Path("out/data")) as tmp:
        ...     (tmp / "train.json").write_text("[]")
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
