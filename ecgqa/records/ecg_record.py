"""EcgRecord: an ECG in canonical form, the error of a record that cannot be read, and
the limits that tell a real recording from a corrupt file.

Every reader in :mod:`ecgqa.records` returns an :class:`EcgRecord` (millivolts, a sampling
rate, canonical lead names, plain metadata) or raises :class:`EcgRecordError`; nothing
outside this package sees a file format's names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from fractions import Fraction

import numpy as np

from ecgqa.errors import EcgqaError
from ecgqa.records.leads import canonical_lead_name, parse_leads
from ecgqa.records.meta import EcgMeta

# Limits that separate a real recording from a corrupt header.
MIN_SECONDS = 1.0
MAX_SECONDS = 48 * 3600.0
MAX_VALUES = 400_000_000          # leads x samples held in memory (1.6 GB of float32)
MAX_FS = 100_000.0
MAX_SIGNALS = 1024                # channels in one record
MIN_FS = 50.0                     # below it no QRS complex can be resolved
# Median over leads of the band-passed 1-99 percentile range of a real surface ECG.
PLAUSIBLE_MEDIAN_RANGE_MV = (0.2, 4.0)


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


def shorten(text: str, n: int = 60) -> str:
    """``text`` cut to at most ``n`` characters (``...`` at the end), for messages."""
    return text if len(text) <= n else text[: n - 3] + "..."
