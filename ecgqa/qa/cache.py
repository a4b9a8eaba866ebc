"""Cache of decoded, model-ready signals so repeated epochs do not re-read WFDB files.

Signals are read once with :func:`ecgqa.records.read.read_record` at a fixed rate,
duration and lead set, kept in memory (LRU) and, with ``cache_dir``, stored as ``.npz``
(plain arrays, loaded with ``allow_pickle=False``) keyed by the record's path, size and
modification time plus the read options, so an edited record is read again.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ecgqa.qa.resolve import RecordResolver
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
        sig_sizes = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                           for p in header.parent.glob(header.stem + ".*") if p.is_file())
        raw = repr((CACHE_FORMAT, str(header.resolve()), st.st_mtime_ns, sig_sizes,
                    self.fs, self.duration_s, self.leads))
        return hashlib.sha1(raw.encode()).hexdigest()

    def _load_disk(self, path: Path):
        f = self.dir / f"{self._key(path)}.npz"
        if not f.is_file():
            return None
        try:
            with np.load(f, allow_pickle=False) as z:
                return z["signal"], z["mask"]
        except (OSError, ValueError, KeyError):
            return None        # a damaged cache entry is simply re-read

    def _save_disk(self, path: Path, item) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        f = self.dir / f"{self._key(path)}.npz"
        tmp = f.with_name(f".{f.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, signal=item[0], mask=item[1])
        os.replace(tmp, f)
