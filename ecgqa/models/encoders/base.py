"""The encoder contract and the input spec every encoder declares.

Every encoder is an ``nn.Module`` with

- ``input_spec``: an :class:`InputSpec` (leads, rate, duration, normalisation),
- ``out_dim``: feature size of each output token,
- ``n_tokens``: tokens produced for an input of ``input_spec.n_samples`` samples,
- ``forward(x, lead_mask=None)``: ``x`` ``(b, leads, t)`` in mV (or normalised units),
  ``lead_mask`` ``(b, leads)`` bool (False = lead missing) -> ``(b, n_tokens, out_dim)``.

Every encoder starts with :func:`preprocess`: masked leads are zeroed (so their content
never matters), then the optional band-pass (``InputSpec.bandpass``) and the normalisation
run. Doing them inside ``forward`` means every path into an encoder (``prepare``, the
signal cache of the fusion model, chat) gets the same pipeline, so a record in mV and a
record its source already filtered and z-scored (units ``NU``) look alike to the network.
:func:`prepare` brings any :class:`~ecgqa.records.read.EcgRecord` to the spec's leads,
rate and duration.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

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
        bandpass: ``(low, high)`` Hz of a zero-phase 4th-order Butterworth band-pass done
            inside ``forward`` before the normalisation (:func:`bandpass_filter`); None
            (the default, and what a ``config.json`` without the key means) = no filter.
    """

    leads: tuple[str, ...] = STANDARD_LEADS
    fs: float = 500.0
    duration_s: float = 10.0
    normalisation: str = "zscore"
    bandpass: tuple[float, float] | None = None

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
        object.__setattr__(self, "bandpass", _check_band(self.bandpass, self.fs))

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
        if self.bandpass is None:
            del d["bandpass"]          # a config.json older encoders can read stays as it was
        else:
            d["bandpass"] = list(self.bandpass)
        return d

    @classmethod
    def from_dict(cls, data: dict | InputSpec | None) -> InputSpec:
        """Build from a dict (``config.json``), pass an InputSpec through, None = defaults."""
        if data is None:
            return cls()
        if isinstance(data, InputSpec):
            return data
        known = {"leads", "fs", "duration_s", "normalisation", "bandpass"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise EncoderError(f"input_spec: unknown key(s) {', '.join(unknown)}; "
                               f"known: {', '.join(sorted(known))}")
        return cls(**{k: (tuple(v) if k == "leads" and isinstance(v, (list, tuple)) else v)
                      for k, v in data.items()})


def _check_band(band, fs: float) -> tuple[float, float] | None:
    if band is None:
        return None
    ok = (isinstance(band, (tuple, list)) and len(band) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in band))
    if not ok or not 0 < band[0] < band[1] < fs / 2:
        raise EncoderError(f"input_spec.bandpass must be [low, high] Hz with 0 < low < high "
                           f"< fs/2 = {fs / 2:g}, got {band!r:.60}")
    return float(band[0]), float(band[1])


def prepare(record: EcgRecord, spec: InputSpec | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Bring a record to an encoder's input spec: resample, crop/pad, select leads.

    The band-pass and normalisation of the spec are not done here but inside the
    encoder's ``forward`` (:func:`preprocess`), so that they also reach signals that come
    by other paths.

    Args:
        record: from :func:`ecgqa.records.read.read_record`.
        spec: the encoder's ``input_spec`` (default: 12 leads, 500 Hz, 10 s).

    Returns:
        ``(signal, mask)``: float32 ``(leads, n_samples)`` in the record's units (mV, or NU
        for a normalised record) and bool ``(leads,)``; leads the record lacks are zero
        rows with mask False.

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
    """Check shape, zero masked leads, band-pass and normalise, as every encoder does first.

    Args:
        x: ``(b, leads, t)`` in mV (or normalised units).
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
    if spec.bandpass is not None:
        x = bandpass_filter(x, spec.fs, spec.bandpass)
    if spec.normalisation == "zscore":
        x = zscore(x)
    elif spec.normalisation == "record":
        x = record_scale(x)
    return x


BANDPASS_ORDER = 4          # Butterworth order of each pass (zero phase: magnitude squared)
BANDPASS_PAD_S = 2.0        # odd-reflection padding on each side against edge transients


def bandpass_filter(x: torch.Tensor, fs: float, band: tuple[float, float]) -> torch.Tensor:
    """Zero-phase 4th-order Butterworth band-pass along the last axis, in the FFT domain.

    The gain is ``|H(f)|^2`` of the digital Butterworth filter, which is what a
    forward-backward ``scipy.signal.filtfilt`` applies; the signal is padded by an odd
    reflection of up to :data:`BANDPASS_PAD_S` seconds on each side first, as ``filtfilt``
    pads, so that the circular FFT wraps no step into the record. Two seconds or more from
    the edges the result matches ``filtfilt`` to ~1% of a lead's SD (RMS). Nearer the edges
    they differ by up to a few tenths of an SD in the last 0.5 s: a 0.5 Hz high-pass on a
    10 s record has edge transients of that size whichever way the unknown signal beyond
    the edges is modelled (tested on real records: neither method is closer to the
    filtered longer record). An all-zero lead stays zero.

    Args:
        x: ``(b, leads, t)``.
        fs: sampling rate in Hz.
        band: ``(low, high)`` cut-offs in Hz, ``0 < low < high < fs / 2``.

    Returns:
        ``(b, leads, t)`` filtered, same dtype and device.
    """
    n = x.shape[-1]
    pad = min(n - 1, int(round(BANDPASS_PAD_S * fs)))
    if pad > 0:
        left = 2 * x[..., :1] - x[..., 1:pad + 1].flip(-1)                  # (b, leads, pad)
        right = 2 * x[..., -1:] - x[..., -pad - 1:-1].flip(-1)
        x = torch.cat([left, x, right], dim=-1)                              # (b, leads, n+2pad)
    gain = torch.as_tensor(_bandpass_gain(x.shape[-1], float(fs), tuple(band)),
                           dtype=x.dtype, device=x.device)                   # (n_freq,)
    y = torch.fft.irfft(torch.fft.rfft(x) * gain, n=x.shape[-1])
    return y[..., pad:pad + n]


@lru_cache(maxsize=16)
def _bandpass_gain(n: int, fs: float, band: tuple[float, float]) -> np.ndarray:
    """``|H(f)|^2`` of the Butterworth band-pass at the ``rfft`` frequencies of ``n`` samples."""
    from scipy.signal import butter, sosfreqz

    sos = butter(BANDPASS_ORDER, band, btype="bandpass", fs=fs, output="sos")
    _, h = sosfreqz(sos, worN=np.fft.rfftfreq(n, 1.0 / fs), fs=fs)
    return (np.abs(h) ** 2).astype(np.float32)


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
