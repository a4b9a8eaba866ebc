"""Map ECG-QA ``ecg_id`` values to record paths: records index, PTB-XL or MIMIC-IV-ECG layout.

- records index: a CSV with columns ``ecg_id,path``; ``path`` names a record without
  extension (``records/00001``), relative to the CSV's folder or absolute.
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

from ecgqa.qa.ecgqa import EcgQaError


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
        self.csv_path = Path(csv_path).expanduser()
        self.description = f"records index {self.csv_path}"
        self._paths = _read_index(self.csv_path)

    def __len__(self) -> int:
        return len(self._paths)

    def ids(self) -> list[int]:
        return sorted(self._paths)

    def path(self, ecg_id: int) -> Path | None:
        p = self._paths.get(int(ecg_id))
        return p if p is not None and _record_exists(p) else None


def _read_index(path: Path) -> dict[int, Path]:
    if not path.is_file():
        raise EcgQaError(f"{path}: records index not found")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise EcgQaError(f"{path}: cannot read records index ({err})") from None
    if not rows or [c.strip() for c in rows[0][:2]] != ["ecg_id", "path"]:
        raise EcgQaError(f"{path}: a records index starts with the header 'ecg_id,path'")
    out: dict[int, Path] = {}
    for n, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2 or not row[1].strip():
            raise EcgQaError(f"{path}: line {n}: expected 'ecg_id,path'")
        try:
            ecg_id = int(row[0])
        except ValueError:
            raise EcgQaError(f"{path}: line {n}: ecg_id {row[0]!r} is not an integer") from None
        if ecg_id in out:
            raise EcgQaError(f"{path}: line {n}: ecg_id {ecg_id} listed twice")
        rec = Path(row[1].strip()).expanduser()
        if rec.suffix.lower() in (".hea", ".dat", ".mat"):
            rec = rec.with_suffix("")      # tolerate a path given with its extension
        out[ecg_id] = rec if rec.is_absolute() else (path.parent / rec)
    return out


def _record_exists(base: Path) -> bool:
    return Path(str(base) + ".hea").is_file()


class PtbxlLayout(RecordResolver):
    """A PTB-XL download (``records500/`` preferred, else ``records100/``)."""

    def __init__(self, root: str | os.PathLike, prefer: str = "records500"):
        self.root = Path(root).expanduser()
        self.description = f"PTB-XL folder {self.root}"
        options = [prefer] + [d for d in ("records500", "records100") if d != prefer]
        self.folders = [d for d in options if (self.root / d).is_dir()]
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
        self.root = Path(root).expanduser()
        self.description = f"MIMIC-IV-ECG folder {self.root}"
        listing = self.root / "record_list.csv"
        if not listing.is_file():
            raise EcgQaError(f"{self.root}: not a MIMIC-IV-ECG folder (no record_list.csv)")
        self._paths: dict[int, Path] = {}
        with open(listing, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not {"study_id", "path"} <= set(reader.fieldnames or []):
                raise EcgQaError(f"{listing}: expected columns study_id and path")
            for row in reader:
                self._paths[int(row["study_id"])] = self.root / row["path"]

    def path(self, ecg_id: int) -> Path | None:
        p = self._paths.get(int(ecg_id))
        return p if p is not None and _record_exists(p) else None


def make_resolver(location: str | os.PathLike) -> RecordResolver:
    """A resolver for a records-index CSV, a PTB-XL folder or a MIMIC-IV-ECG folder."""
    p = Path(location).expanduser()
    if p.is_file():
        return RecordsIndex(p)
    if (p / "record_list.csv").is_file():
        return MimicIvEcgLayout(p)
    if (p / "records500").is_dir() or (p / "records100").is_dir():
        return PtbxlLayout(p)
    if p.is_dir() and (p / "records_index.csv").is_file():
        return RecordsIndex(p / "records_index.csv")
    raise EcgQaError(f"{p}: not a records index CSV, PTB-XL folder (records500/, records100/) "
                     "or MIMIC-IV-ECG folder (record_list.csv)")


def write_index(path: str | os.PathLike, records: dict[int, str | os.PathLike]) -> Path:
    """Write an ``ecg_id,path`` CSV atomically; paths under the CSV's folder become relative."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    base = path.parent.resolve()
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
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise EcgQaError(f"{root}: not a folder")
        for header in sorted(root.rglob("*.hea")):
            for rank, pattern in enumerate(_PTBXL_NAMES):
                m = pattern.match(header.stem)
                if m:
                    ecg_id = int(m.group(1))
                    if ecg_id not in found or rank < found[ecg_id][0]:
                        found[ecg_id] = (rank, header.with_suffix(""))
                    break
    return {k: v for k, (_, v) in sorted(found.items())}
