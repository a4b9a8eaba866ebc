"""Output folders written all at once: a reader never sees one half-written."""

from __future__ import annotations

import os
import secrets
import shutil
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
    tmp = _new_folder(out.parent, f".{out.name}.")
    try:
        yield tmp
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _new_folder(parent: Path, prefix: str) -> Path:
    """A new folder ``parent/prefix<random>`` made by a plain mkdir, so it gets the mode any
    folder would (``0o777 & ~umask``), not ``tempfile.mkdtemp``'s private 0700."""
    for _ in range(100):
        tmp = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            tmp.mkdir()
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"{parent}: no free name for a temporary folder {prefix}*")
