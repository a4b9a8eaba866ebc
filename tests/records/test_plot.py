"""Paper layout geometry: 25 mm/s, 10 mm/mV, 3x4 panels + rhythm strip."""

from __future__ import annotations

import numpy as np

from ecgqa.records.leads import STANDARD_LEADS
from ecgqa.records.plot import LAYOUT_3X4, PlotStyle, render
from ecgqa.records.read import read_record
from tests.conftest import REAL


def _lines(fig):
    return [line for line in fig.axes[0].lines]


def test_twelve_lead_layout_geometry():
    rec = read_record(REAL / "cinc2021" / "E07500")
    style = PlotStyle(highpass_hz=None)
    fig = render(rec, style=style)
    lines = _lines(fig)
    calib = [ln for ln in lines if len(ln.get_xdata()) == 6]
    traces = [ln for ln in lines if len(ln.get_xdata()) > 6]
    assert len(calib) == 4                                   # one 1 mV pulse per row
    for ln in calib:
        y = np.asarray(ln.get_ydata())
        assert np.ptp(y) == style.gain_mm_mv                 # 1 mV = 10 mm
        assert np.ptp(ln.get_xdata()) == 2 + 0.2 * style.speed_mm_s
    assert len(traces) == 13                                  # 12 panels + rhythm strip
    widths = sorted(np.ptp(ln.get_xdata()) for ln in traces)
    assert abs(widths[0] - 2.5 * style.speed_mm_s) < 0.1     # 2.5 s panels
    assert abs(widths[-1] - 10 * style.speed_mm_s) < 0.1     # 10 s rhythm strip
    # amplitudes: a panel's vertical extent equals the lead's range in mV x 10 mm/mV
    first = traces[0]
    lead = rec.lead(LAYOUT_3X4[0][0])[: int(2.5 * rec.fs)]
    assert abs(np.ptp(first.get_ydata()) - np.ptp(lead) * style.gain_mm_mv) < 1e-3
    labels = {t.get_text() for t in fig.axes[0].texts}
    assert set(STANDARD_LEADS) <= labels


def test_records_without_twelve_leads_are_strips_and_missing_leads_are_labelled():
    two = read_record(REAL / "cpsc2021" / "data_101_6")
    fig = render(two)
    traces = [ln for ln in _lines(fig) if len(ln.get_xdata()) > 6]
    assert len(traces) == 2
    masked = read_record(REAL / "cinc2021" / "JS20004")      # V2, V4, V6 flat
    labels = {t.get_text() for t in render(masked).axes[0].texts}
    assert {"V2 (not recorded)", "V4 (not recorded)", "V6 (not recorded)"} <= labels
