"""Standard 12-lead paper layout: 3 x 4 panels of 2.5 s + a 10 s lead II rhythm strip.

Drawn in millimetres on ECG paper (1 mm minor / 5 mm major grid) at 25 mm/s and
10 mm/mV, with a 1 mV calibration pulse at the start of each row, so a printout at the
figure's physical size measures like a paper ECG. A record in normalised units (``NU``,
e.g. z-scored by its source) has no voltage to calibrate: it is drawn at ``gain_mm_nu``
without a calibration pulse, and the scale line says so. Records without the 12 standard leads
are drawn as one full-length strip per lead. :class:`PlotStyle` varies the look (grid
colour, line width, resolution) for the image path, which renders training images here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgqa.records.leads import STANDARD_LEADS
from ecgqa.records.read import EcgRecord

# Panel order of the standard printout: columns of (I, II, III), (aVR, aVL, aVF) ...
LAYOUT_3X4: tuple[tuple[str, ...], ...] = (
    ("I", "aVR", "V1", "V4"),
    ("II", "aVL", "V2", "V5"),
    ("III", "aVF", "V3", "V6"),
)
SUPPORTED_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


@dataclass(frozen=True)
class PlotStyle:
    """How the paper and trace look; the defaults mimic a standard printout."""

    speed_mm_s: float = 25.0        # paper speed
    gain_mm_mv: float = 10.0        # amplitude scale
    gain_mm_nu: float = 2.5         # normalised-unit records: 1 NU (a lead's SD, ~0.25 mV)
    row_height_mm: float = 38.0     # vertical space per row
    minor_color: str = "#f7c6c6"    # 1 mm grid
    major_color: str = "#e88b8b"    # 5 mm grid
    trace_color: str = "#000000"
    trace_width: float = 0.6
    dpi: int = 150
    show_grid: bool = True
    highpass_hz: float | None = 0.5  # zero-phase baseline-wander removal; None draws raw


def render(record: EcgRecord, *, style: PlotStyle | None = None, start_s: float = 0.0,
           rhythm_lead: str = "II", title: str | None = None):
    """Draw ``record`` on ECG paper and return the matplotlib Figure.

    Args:
        record: the ECG (any rate; drawn from ``start_s`` for 10 s).
        style: paper/trace look; default a standard printout.
        start_s: first second to draw.
        rhythm_lead: lead of the bottom 10 s rhythm strip in the 12-lead layout.
        title: text above the grid; default record name, rate and scale.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    style = style or PlotStyle()
    record = _baseline_removed(record, style.highpass_hz)
    rows = _rows_12(rhythm_lead) if _is_twelve(record) else _rows_strips(record)
    left, cal = 5.0, 0.2 * style.speed_mm_s + 4.0
    width, height = paper_size_mm(record, style)
    fig = Figure(figsize=(width / 25.4, height / 25.4), dpi=style.dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")
    if style.show_grid:
        _grid(ax, width, height, style)
    x0 = left + cal
    for r, panels in enumerate(rows):
        base = height - 10.0 - (r + 0.55) * style.row_height_mm
        if record.normalised:
            ax.text(left, base + 1.0, "NU", fontsize=6, color="#777777", va="bottom")
        else:
            _calibration(ax, left, base, style)
        for lead, t0, dur in panels:
            _trace(ax, record, lead, start_s + t0, dur, x0 + t0 * style.speed_mm_s, base, style)
    ax.text(left, height - 4.0, title if title is not None else _title(record, style),
            fontsize=7, va="center", family="monospace")
    return fig


def paper_size_mm(record: EcgRecord, style: PlotStyle | None = None) -> tuple[float, float]:
    """Width and height in mm of the paper :func:`render` draws ``record`` on."""
    style = style or PlotStyle()
    n_rows = len(LAYOUT_3X4) + 1 if _is_twelve(record) else len(record.leads)
    width = 5.0 + (0.2 * style.speed_mm_s + 4.0) + 10.0 * style.speed_mm_s + 5.0
    return width, n_rows * style.row_height_mm + 12.0


def _is_twelve(record: EcgRecord) -> bool:
    return all(lead in record.leads for lead in STANDARD_LEADS)


def plot_ecg(record: EcgRecord, out: str | os.PathLike, **kwargs) -> Path:
    """Render ``record`` (see :func:`render`) and write it atomically to ``out``.

    Returns:
        The written path. The file appears complete or not at all.
    """
    out = Path(out)
    if out.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise ValueError(f"cannot write {out.suffix or 'a file without extension'!r}; use one of "
                         + ", ".join(SUPPORTED_SUFFIXES))
    fig = render(record, **kwargs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        fig.savefig(tmp, format=out.suffix.lstrip(".").replace("jpg", "jpeg"))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _baseline_removed(record: EcgRecord, cutoff: float | None) -> EcgRecord:
    from dataclasses import replace

    if not cutoff or record.n_samples < 3 * record.fs:
        return record
    from scipy.signal import butter, sosfiltfilt

    sos = butter(2, cutoff, btype="highpass", fs=record.fs, output="sos")
    return replace(record, signal=sosfiltfilt(sos, record.signal, axis=1).astype(np.float32))


def _rows_12(rhythm_lead: str):
    rows = [[(lead, c * 2.5, 2.5) for c, lead in enumerate(row)] for row in LAYOUT_3X4]
    rows.append([(rhythm_lead, 0.0, 10.0)])
    return rows


def _rows_strips(record: EcgRecord):
    return [[(lead, 0.0, 10.0)] for lead in record.leads]


def _grid(ax, width: float, height: float, style: PlotStyle) -> None:
    from matplotlib.collections import LineCollection

    for step, color, lw in ((1.0, style.minor_color, 0.25), (5.0, style.major_color, 0.5)):
        xs = np.arange(0, width + 1e-6, step)
        ys = np.arange(0, height + 1e-6, step)
        segs = [((x, 0), (x, height)) for x in xs] + [((0, y), (width, y)) for y in ys]
        ax.add_collection(LineCollection(segs, colors=color, linewidths=lw, zorder=0))


def _calibration(ax, x: float, base: float, style: PlotStyle) -> None:
    w = 0.2 * style.speed_mm_s
    h = 1.0 * style.gain_mm_mv
    ax.plot([x, x + 1, x + 1, x + 1 + w, x + 1 + w, x + 2 + w],
            [base, base, base + h, base + h, base, base],
            color=style.trace_color, lw=style.trace_width, zorder=2)


def _trace(ax, record: EcgRecord, lead: str, t0: float, dur: float, x: float, base: float,
           style: PlotStyle) -> None:
    label_kw = dict(fontsize=7, va="bottom", zorder=3)
    if lead not in record.leads or not record.lead_mask[record.leads.index(lead)]:
        ax.text(x + 1.0, base + 5.0, f"{lead} (not recorded)", color="#777777", **label_kw)
        return
    ax.text(x + 1.0, base + 12.0, lead, **label_kw)
    y = record.lead(lead)
    a = int(round(t0 * record.fs))
    b = min(len(y), int(round((t0 + dur) * record.fs)))
    if b <= a:
        return
    seg = y[a:b].astype(np.float64)
    seg = seg - np.median(y)                               # centre on the lead's baseline
    t = np.arange(a, b) / record.fs - t0
    gain = style.gain_mm_nu if record.normalised else style.gain_mm_mv
    ax.plot(x + t * style.speed_mm_s, base + seg * gain,
            color=style.trace_color, lw=style.trace_width, zorder=2)


def _title(record: EcgRecord, style: PlotStyle) -> str:
    m = record.meta
    who = ", ".join(x for x in (f"{m.age:g} y" if m.age is not None else "", m.sex or "") if x)
    name = m.record_name or Path(record.path).stem
    scale = (f"{style.gain_mm_nu:g} mm/NU (normalised units, not mV)" if record.normalised
             else f"{style.gain_mm_mv:g} mm/mV")
    return (f"{name}  {who}  {record.fs:g} Hz  {record.duration_s:.1f} s   "
            f"{style.speed_mm_s:g} mm/s  {scale}")
