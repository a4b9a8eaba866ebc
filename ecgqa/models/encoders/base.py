"""The encoder contract and the input spec every encoder declares.

Every encoder is an ``nn.Module`` with

- ``input_spec``: an :class:`InputSpec` (leads, rate, duration, normalisation),
- ``out_dim``: feature size of each output token,
- ``n_tokens``: tokens produced for an input of ``input_spec.n_samples`` samples,
- ``forward(x, lead_mask=None)``: ``x`` ``(b, leads, t)`` in mV, ``lead_mask`` ``(b, leads)``
  bool (False = lead missing) -> ``(b, n_tokens, out_dim)``.

Masked leads are zeroed before the network sees them, so their content never matters.
:func:`prepare` brings any :class:`~ecgqa.records.read.EcgRecord` to the spec.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from ecgqa.errors import EcgqaError
from ecgqa.records.leads import STANDARD_LEADS, parse_leads
from ecgqa.records.read import MAX_FS, EcgRecord

NORMALISATIONS = ("zscore", "record", "none")
# A lead whose standard deviation is below this (mV) is treated as flat by the z-score:
# it is divided by this floor instead, so an all-zero (masked) lead stays exactly zero.
MIN_STD_MV = 1e-3


class EncoderError(EcgqaError):
    """An encoder could not be built, saved or loaded; the message says what is supported."""


MAX_INPUT_SAMPLES = 2_000_000          # samples per lead an encoder input may hold
MAX_ENCODER_PARAMS = 500_000_000       # 2 GB of float32: far beyond any ECG encoder


def check_size(name: str, n_params: int) -> None:
    """Refuse an architecture whose estimated parameter count is absurd, before building it
    (a config or saved folder must not make the process allocate gigabytes)."""
    if n_params > MAX_ENCODER_PARAMS:
        raise EncoderError(f"{name}: these settings ask for about {n_params:.3g} parameters "
                           f"(at most {MAX_ENCODER_PARAMS:.0e}); use smaller widths or depth")


@dataclass(frozen=True)
class InputSpec:
    """What an encoder expects as input.

    Attributes:
        leads: lead names in input order (canonical spelling).
        fs: sampling rate in Hz.
        duration_s: input length in seconds; ``n_samples = round(fs * duration_s)``.
        normalisation: done inside ``forward``: ``"zscore"`` (each lead to zero mean and
            unit standard deviation over time), ``"record"`` (each lead to zero mean, then
            one scale for the whole record, the RMS over its non-flat leads: keeps the
            leads' relative amplitudes) or ``"none"`` (millivolts as given).
    """

    leads: tuple[str, ...] = STANDARD_LEADS
    fs: float = 500.0
    duration_s: float = 10.0
    normalisation: str = "zscore"

    def __post_init__(self):
        if not isinstance(self.leads, (tuple, list)) or not all(isinstance(x, str)
                                                               for x in self.leads):
            raise EncoderError("input_spec.leads must be a list of lead names")
        try:
            leads = parse_leads(tuple(self.leads))
        except ValueError as err:
            raise EncoderError(f"input_spec.leads: {err}") from None
        object.__setattr__(self, "leads", leads)
        for name in ("fs", "duration_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise EncoderError(f"input_spec.{name} must be a number, got {value!r:.40}")
            object.__setattr__(self, name, float(value))
        if not (0 < self.fs <= MAX_FS and 0 < self.duration_s
                and self.fs * self.duration_s <= MAX_INPUT_SAMPLES):
            raise EncoderError(f"input_spec: need 0 < fs <= {MAX_FS:g} Hz, duration_s > 0 and "
                               f"at most {MAX_INPUT_SAMPLES} samples, got fs={self.fs}, "
                               f"duration_s={self.duration_s}")
        if self.normalisation not in NORMALISATIONS:
            raise EncoderError(f"input_spec.normalisation must be one of "
                               f"{', '.join(NORMALISATIONS)}, got {self.normalisation!r}")

    @property
    def n_leads(self) -> int:
        return len(self.leads)

    @property
    def n_samples(self) -> int:
        return int(round(self.fs * self.duration_s))

    def to_dict(self) -> dict:
        """JSON-ready form (``leads`` as a list)."""
        d = asdict(self)
        d["leads"] = list(self.leads)
        return d

    @classmethod
    def from_dict(cls, data: dict | InputSpec | None) -> InputSpec:
        """Build from a dict (``config.json``), pass an InputSpec through, None = defaults."""
        if data is None:
            return cls()
        if isinstance(data, InputSpec):
            return data
        known = {"leads", "fs", "duration_s", "normalisation"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise EncoderError(f"input_spec: unknown key(s) {', '.join(unknown)}; "
                               f"known: {', '.join(sorted(known))}")
        return cls(**{k: (tuple(v) if k == "leads" and isinstance(v, (list, tuple)) else v)
                      for k, v in data.items()})


def prepare(record: EcgRecord, spec: InputSpec | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Bring a record to an encoder's input spec: resample, crop/pad, select leads.

    Args:
        record: from :func:`ecgqa.records.read.read_record`.
        spec: the encoder's ``input_spec`` (default: 12 leads, 500 Hz, 10 s).

    Returns:
        ``(signal, mask)``: float32 ``(leads, n_samples)`` in mV and bool ``(leads,)``;
        leads the record lacks are zero rows with mask False.

    Example:
        >>> rec = read_record("../shared/data/real/ptbxl/00001_lr")
        >>> x, m = prepare(rec)            # (12, 5000), (12,)
    """
    spec = spec or InputSpec()
    rec = record.select_leads(spec.leads).resample(spec.fs).fit_duration(spec.duration_s)
    signal = np.ascontiguousarray(rec.signal, dtype=np.float32)     # (leads, t)
    mask = np.asarray(rec.lead_mask, dtype=bool)                     # (leads,)
    signal[~mask] = 0.0
    return signal, mask


def preprocess(x: torch.Tensor, lead_mask: torch.Tensor | None,
               spec: InputSpec) -> torch.Tensor:
    """Check shape, zero masked leads and normalise, as every encoder does first.

    Args:
        x: ``(b, leads, t)`` in mV.
        lead_mask: ``(b, leads)`` bool, False where a lead is missing; None = all present.
        spec: the encoder's input spec.

    Returns:
        ``(b, leads, t)`` float tensor, masked leads exactly zero.
    """
    if x.dim() != 3 or x.shape[1] != spec.n_leads:
        raise EncoderError(f"encoder input must be (batch, {spec.n_leads} leads, samples), "
                           f"got {tuple(x.shape)}")
    x = x.float()
    if lead_mask is not None:
        if lead_mask.shape != x.shape[:2]:
            raise EncoderError(f"lead_mask must be (batch, leads) = {tuple(x.shape[:2])}, "
                               f"got {tuple(lead_mask.shape)}")
        keep = lead_mask.to(device=x.device, dtype=torch.bool).unsqueeze(-1)   # (b, leads, 1)
        x = torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))
    if spec.normalisation == "zscore":
        x = zscore(x)
    elif spec.normalisation == "record":
        x = record_scale(x)
    return x


def zscore(x: torch.Tensor) -> torch.Tensor:
    """Per-lead z-score over time; a flat (e.g. all-zero) lead maps to zeros.

    Args:
        x: ``(b, leads, t)``.

    Returns:
        ``(b, leads, t)`` with zero mean and unit standard deviation per non-flat lead.
    """
    mean = x.mean(dim=-1, keepdim=True)                                   # (b, leads, 1)
    std = x.std(dim=-1, keepdim=True, unbiased=False).clamp_min(MIN_STD_MV)
    return (x - mean) / std


def record_scale(x: torch.Tensor) -> torch.Tensor:
    """Per-lead mean removed, then divided by one RMS over the record's non-flat leads.

    Args:
        x: ``(b, leads, t)``.

    Returns:
        ``(b, leads, t)``; invariant to a gain common to all leads and to per-lead offsets.
    """
    x = x - x.mean(dim=-1, keepdim=True)                                  # (b, leads, t)
    var = x.pow(2).mean(dim=-1)                                           # (b, leads)
    live = (var > MIN_STD_MV**2).float()
    rms = ((var * live).sum(-1) / live.sum(-1).clamp_min(1.0)).sqrt()      # (b,)
    return x / rms.clamp_min(MIN_STD_MV)[:, None, None]


def conv_out_len(n: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a 1-D convolution or pooling (dilation 1, floor mode)."""
    return (n + 2 * padding - kernel) // stride + 1


def check_contract(encoder: torch.nn.Module, name: str = "encoder") -> torch.nn.Module:
    """Raise :class:`EncoderError` unless ``encoder`` declares the contract's attributes."""
    spec = getattr(encoder, "input_spec", None)
    if not isinstance(encoder, torch.nn.Module) or not isinstance(spec, InputSpec):
        raise EncoderError(f"{name}: an encoder is an nn.Module with an InputSpec input_spec")
    for attr in ("out_dim", "n_tokens"):
        value = getattr(encoder, attr, None)
        if not isinstance(value, int) or value < 1:
            raise EncoderError(f"{name}: {attr} must be a positive int, got {value!r}")
    if not isinstance(getattr(encoder, "config", None), dict):
        raise EncoderError(f"{name}: config (its constructor kwargs) must be a dict")
    return encoder
