"""Cache of decoded, model-ready signals so repeated epochs do not re-read WFDB files.

Signals are read once with :func:`ecgqa.records.read.read_record` at a fixed rate,
duration and lead set, kept in memory (LRU) and, with ``cache_dir``, stored as ``.npz``
(plain arrays, loaded with ``allow_pickle=False``) keyed by the record's path, size and
modification time plus the read options, so an edited record is read again. A damaged or
foreign ``.npz`` (truncated, wrong arrays or shapes) is ignored and the record read again; a
cache folder that cannot be written only costs the disk copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ecgqa.qa.resolve import RecordResolver
from ecgqa.records.leads import parse_leads
from ecgqa.records.read import read_record

CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """``$ECGQA_CACHE``, else ``$XDG_CACHE_HOME/ecgqa``, else ``~/.cache/ecgqa``."""
    if os.environ.get("ECGQA_CACHE"):
        return Path(os.environ["ECGQA_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ecgqa"


class SignalCache:
    """``get(ecg_id) -> (signal (leads, fs*duration) float32 mV, lead_mask (leads,) bool)``.

    Args:
        resolver: maps ecg_id to a record path.
        fs, duration_s, leads: the model input spec every record is brought to.
        cache_dir: folder for ``.npz`` files; None keeps the cache in memory only.
        max_items: records kept in memory.
    """

    def __init__(self, resolver: RecordResolver, *, fs: float = 500.0, duration_s: float = 10.0,
                 leads: str = "12-lead", cache_dir: str | os.PathLike | None = None,
                 max_items: int = 4096):
        self.resolver = resolver
        self.fs, self.duration_s, self.leads = float(fs), float(duration_s), leads
        self.dir = Path(cache_dir) / "signals" if cache_dir is not None else None
        self.max_items = max_items
        self._mem: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.reads = 0          # WFDB decodes done (for tests and benchmarks)

    def get(self, ecg_id: int) -> tuple[np.ndarray, np.ndarray]:
        ecg_id = int(ecg_id)
        if ecg_id in self._mem:
            self._mem.move_to_end(ecg_id)
            return self._mem[ecg_id]
        path = self.resolver.require(ecg_id)
        item = self._load_disk(path) if self.dir is not None else None
        if item is None:
            rec = read_record(path, fs=self.fs, duration_s=self.duration_s, leads=self.leads)
            self.reads += 1
            item = (rec.signal, rec.lead_mask)
            if self.dir is not None:
                self._save_disk(path, item)
        self._mem[ecg_id] = item
        if len(self._mem) > self.max_items:
            self._mem.popitem(last=False)
        return item

    def _key(self, path: Path) -> str:
        header = Path(str(path) + ".hea")
        st = header.stat()
        # the record's files: NAME.* (by name, not glob: a name may hold '*', '[' or '**')
        sig_sizes = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                           for p in header.parent.iterdir()
                           if p.name.startswith(header.stem + ".") and p.is_file())
        raw = repr((CACHE_FORMAT, str(header.resolve()), st.st_mtime_ns, sig_sizes,
                    self.fs, self.duration_s, self.leads))
        return hashlib.sha1(raw.encode()).hexdigest()

    def _load_disk(self, path: Path):
        f = self.dir / f"{self._key(path)}.npz"
        if not f.is_file():
            return None
        try:
            with np.load(f, allow_pickle=False) as z:
                item = z["signal"], z["mask"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error):
            return None        # a damaged cache entry is simply re-read
        return item if self._valid(*item) else None

    def _valid(self, signal: np.ndarray, mask: np.ndarray) -> bool:
        """Whether a cached pair has the shapes and types ``read_record`` gives for this spec."""
        try:
            leads = parse_leads(self.leads)
        except ValueError:     # read_record reports a bad lead selection
            return False
        n_leads = len(leads) if leads is not None else signal.shape[0] if signal.ndim else -1
        return (signal.dtype == np.float32 and mask.dtype == np.bool_
                and signal.shape == (n_leads, int(round(self.duration_s * self.fs)))
                and mask.shape == (n_leads,))

    def _save_disk(self, path: Path, item) -> None:
        f = self.dir / f"{self._key(path)}.npz"
        tmp = f.with_name(f".{f.stem}.{os.getpid()}.tmp.npz")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            np.savez(tmp, signal=item[0], mask=item[1])
            os.replace(tmp, f)
        except OSError:        # a read-only or full cache folder: keep the signal in memory
            with contextlib.suppress(OSError):
                tmp.unlink()
