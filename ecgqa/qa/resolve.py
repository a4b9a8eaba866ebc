"""Map ECG-QA ``ecg_id`` values to record paths: records index, PTB-XL or MIMIC-IV-ECG layout.

- records index: a CSV with columns ``ecg_id,path``; ``path`` names a record without
  extension (``records/00001``), relative to the CSV's folder or absolute. A relative path
  stays inside the CSV's folder: one that climbs out with ``..`` is refused (write an
  absolute path for a record elsewhere, as :func:`write_index` does).
- PTB-XL download: ``records500/02000/02345_hr`` (or ``records100/.../02345_lr``); the
  folder holding ``records500/`` or ``records100/``.
- MIMIC-IV-ECG download: ``record_list.csv`` (``study_id``, ``path``) and ``files/``;
  ECG-QA's MIMIC version uses ``study_id`` as ``ecg_id``.

:func:`make_resolver` picks the right one from a path.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable
from pathlib import Path

from ecgqa.qa.ecgqa import (
    EcgQaError,
    clean,
    is_dir,
    is_file,
    parse_id,
    read_csv_rows,
    show,
    user_path,
)


class RecordResolver:
    """Base: ``path(ecg_id)`` gives the record path (no extension) or None."""

    description = "records"

    def path(self, ecg_id: int) -> Path | None:  # pragma: no cover - interface
        raise NotImplementedError

    def require(self, ecg_id: int, context: str = "") -> Path:
        """The record path, or an EcgQaError naming the id and where it was needed."""
        p = self.path(ecg_id)
        if p is None:
            where = f"{context}: " if context else ""
            raise EcgQaError(f"{where}ecg_id {ecg_id} not found in {self.description}")
        return p

    def available(self, ecg_ids: Iterable[int]) -> set[int]:
        """The ids whose records exist on disk."""
        return {i for i in ecg_ids if self.path(i) is not None}


class RecordsIndex(RecordResolver):
    """``ecg_id,path`` CSV (paths relative to the CSV or absolute)."""

    def __init__(self, csv_path: str | os.PathLike):
        self.csv_path = user_path(csv_path)
        self.description = f"records index {self.csv_path}"
        self._paths = _read_index(self.csv_path)

    def __len__(self) -> int:
        return len(self._paths)

    def ids(self) -> list[int]:
        return sorted(self._paths)

    def raw_path(self, ecg_id: int) -> Path:
        """The listed path of ``ecg_id`` (resolved against the CSV's folder), whether or not
        the record is there."""
        return self._paths[int(ecg_id)]

    def path(self, ecg_id: int) -> Path | None:
        p = self._paths.get(int(ecg_id))
        return p if p is not None and _record_exists(p) else None


def _read_index(path: Path) -> dict[int, Path]:
    rows = read_csv_rows(path, "records index")
    if not rows or [c.strip() for c in rows[0][:2]] != ["ecg_id", "path"]:
        raise EcgQaError(f"{clean(path)}: a records index starts with the header 'ecg_id,path'")
    out: dict[int, Path] = {}
    for n, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2 or not row[1].strip():
            raise EcgQaError(f"{clean(path)}: line {n}: expected 'ecg_id,path'")
        ecg_id = parse_id(row[0])
        if ecg_id is None:
            raise EcgQaError(f"{clean(path)}: line {n}: ecg_id {show(row[0])} is not an integer "
                             "(0 or more)")
        if ecg_id in out:
            raise EcgQaError(f"{clean(path)}: line {n}: ecg_id {ecg_id} listed twice")
        rec = _record_path(row[1].strip(), path.parent, f"{clean(path)}: line {n}")
        if rec.suffix.lower() in (".hea", ".dat", ".mat"):
            rec = rec.with_suffix("")      # tolerate a path given with its extension
        out[ecg_id] = rec
    return out


def _record_path(text: str, base: Path, where: str) -> Path:
    """``text`` (absolute, or relative to ``base`` without climbing out of it) as a path."""
    if "\x00" in text:
        raise EcgQaError(f"{where}: path {show(text)} contains a NUL byte")
    home = text == "~" or text.startswith("~/")        # "~name" is a file name here
    rec = user_path(text) if home else Path(text)
    if rec.is_absolute():
        return rec
    parts = os.path.normpath(rec).split(os.sep)
    if parts[0] in (os.pardir, os.curdir):      # "..", "a/../..", and "." (its .hea is outside)
        raise EcgQaError(f"{where}: path {show(text)} leaves the folder {clean(base)}; give "
                         "a path inside it or an absolute path")
    return base / rec


def _record_exists(base: Path) -> bool:
    return is_file(Path(str(base) + ".hea"))


class PtbxlLayout(RecordResolver):
    """A PTB-XL download (``records500/`` preferred, else ``records100/``)."""

    def __init__(self, root: str | os.PathLike, prefer: str = "records500"):
        self.root = user_path(root)
        self.description = f"PTB-XL folder {self.root}"
        options = [prefer] + [d for d in ("records500", "records100") if d != prefer]
        self.folders = [d for d in options if is_dir(self.root / d)]
        if not self.folders:
            raise EcgQaError(f"{self.root}: not a PTB-XL folder (no records500/ or records100/)")

    def path(self, ecg_id: int) -> Path | None:
        ecg_id = int(ecg_id)
        for folder in self.folders:
            suffix = "hr" if folder == "records500" else "lr"
            p = self.root / folder / f"{ecg_id // 1000 * 1000:05d}" / f"{ecg_id:05d}_{suffix}"
            if _record_exists(p):
                return p
        return None


class MimicIvEcgLayout(RecordResolver):
    """A MIMIC-IV-ECG download: ``record_list.csv`` maps ``study_id`` to ``path``."""

    def __init__(self, root: str | os.PathLike):
        self.root = user_path(root)
        self.description = f"MIMIC-IV-ECG folder {self.root}"
        listing = self.root / "record_list.csv"
        if not is_file(listing):
            raise EcgQaError(f"{clean(self.root)}: not a MIMIC-IV-ECG folder (no "
                             "record_list.csv)")
        rows = read_csv_rows(listing, "record list")
        header = [c.strip() for c in rows[0]] if rows else []
        if not {"study_id", "path"} <= set(header):
            raise EcgQaError(f"{clean(listing)}: expected columns study_id and path")
        sid, col = header.index("study_id"), header.index("path")
        self._paths: dict[int, Path] = {}
        for n, row in enumerate(rows[1:], start=2):
            if not row or not "".join(row).strip():
                continue
            if len(row) <= max(sid, col) or not row[col].strip():
                raise EcgQaError(f"{clean(listing)}: line {n}: expected {len(header)} columns "
                                 f"({', '.join(header)})")
            study = parse_id(row[sid])
            if study is None:
                raise EcgQaError(f"{clean(listing)}: line {n}: study_id {show(row[sid])} is not "
                                 "an integer (0 or more)")
            self._paths[study] = _record_path(row[col].strip(), self.root,
                                              f"{clean(listing)}: line {n}")

    def path(self, ecg_id: int) -> Path | None:
        p = self._paths.get(int(ecg_id))
        return p if p is not None and _record_exists(p) else None


def make_resolver(location: str | os.PathLike) -> RecordResolver:
    """A resolver for a records-index CSV, a PTB-XL folder or a MIMIC-IV-ECG folder."""
    p = user_path(location)
    if is_file(p):
        return RecordsIndex(p)
    if is_file(p / "record_list.csv"):
        return MimicIvEcgLayout(p)
    if is_dir(p / "records500") or is_dir(p / "records100"):
        return PtbxlLayout(p)
    if is_file(p / "records_index.csv"):
        return RecordsIndex(p / "records_index.csv")
    raise EcgQaError(f"{clean(p)}: not a records index CSV, PTB-XL folder (records500/, "
                     "records100/) or MIMIC-IV-ECG folder (record_list.csv)")


def write_index(path: str | os.PathLike, records: dict[int, str | os.PathLike]) -> Path:
    """Write an ``ecg_id,path`` CSV atomically; paths under the CSV's folder become relative."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    base = path.parent.resolve()
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["ecg_id", "path"])
            for ecg_id in sorted(records):
                rec = Path(records[ecg_id]).resolve()
                try:
                    rec = rec.relative_to(base)
                except ValueError:
                    pass
                w.writerow([ecg_id, rec.as_posix()])
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)           # nothing written half-way, nothing left behind
        raise
    return path


# PTB-XL record names that carry the ecg_id: PTB-XL's own 00001_lr / 00001_hr, and the
# PhysioNet/CinC Challenge 2020/2021 copies of PTB-XL, HR00001.
_PTBXL_NAMES = (re.compile(r"^(\d{5})_(?:lr|hr)$"), re.compile(r"^HR(\d{5})$"))


def find_ptbxl_records(folders: Iterable[str | os.PathLike]) -> dict[int, Path]:
    """PTB-XL ecg_ids of the records under ``folders`` whose names carry one.

    Names ``00001_lr``/``00001_hr`` (PTB-XL) and ``HR00001`` (the Challenge copies) map to
    ecg_id 1. When several files give one ecg_id, PTB-XL's own record wins over a copy, then
    the first path in sorted order.

    Returns:
        ecg_id -> record path without extension.
    """
    found: dict[int, tuple[int, Path]] = {}
    for folder in folders:
        root = user_path(folder)
        if not is_dir(root):
            raise EcgQaError(f"{clean(root)}: not a folder")
        for header in sorted(root.rglob("*.hea")):
            for rank, pattern in enumerate(_PTBXL_NAMES):
                m = pattern.match(header.stem)
                if m:
                    ecg_id = int(m.group(1))
                    if ecg_id not in found or rank < found[ecg_id][0]:
                        found[ecg_id] = (rank, header.with_suffix(""))
                    break
    return {k: v for k, (_, v) in sorted(found.items())}
