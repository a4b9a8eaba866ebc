"""A record's description as a plain dict (``ecgqa info --json``) and as text."""

from __future__ import annotations

from ecgqa.records.meta import SNOMED_NAMES
from ecgqa.records.read import EcgRecord


def summarize(record: EcgRecord, *, measure: bool = True, measure_lead: str | None = None) -> dict:
    """Describe ``record``: shape, metadata, per-lead amplitude, warnings, measurements.

    Returns:
        A JSON-serialisable dict.
    """
    m = record.meta
    amplitude = {}
    unit = record.units.lower()                     # keys min_mv / max_mv, or min_nu / max_nu
    for lead, row, ok in zip(record.leads, record.signal, record.lead_mask):
        amplitude[lead] = None if not ok else {
            f"min_{unit}": round(float(row.min()), 3), f"max_{unit}": round(float(row.max()), 3)}
    out = {
        "record": record.path,
        "name": m.record_name,
        "format": m.source_format,
        "leads": list(record.leads),
        "missing_leads": [lead for lead, ok in zip(record.leads, record.lead_mask) if not ok],
        "fs_hz": record.fs,
        "original_fs_hz": m.original_fs,
        "n_samples": record.n_samples,
        "duration_s": round(record.duration_s, 3),
        "units": record.units,
        "age": m.age,
        "sex": m.sex,
        "dx_codes": [{"code": c, "name": SNOMED_NAMES.get(c, (None, None))[1]} for c in m.dx_codes],
        "diagnoses": list(m.diagnoses),
        "recorded_at": m.base_datetime,
        "comments": list(m.comments),
        "amplitude": amplitude,
        "warnings": list(m.warnings),
        "measurements": None,
    }
    if measure:
        from ecgqa.records.measure import measure as measure_record

        out["measurements"] = measure_record(record, lead=measure_lead).as_dict()
    return out


def format_summary(s: dict) -> str:
    """Human-readable text of :func:`summarize`'s dict."""
    lines = [
        f"record     {s['record']}",
        f"format     {s['format']}",
        f"leads      {len(s['leads'])}: {' '.join(s['leads'])}"
        + (f"   (not usable: {' '.join(s['missing_leads'])})" if s["missing_leads"] else ""),
        f"sampling   {s['fs_hz']:g} Hz (file {s['original_fs_hz']:g} Hz), {s['n_samples']} "
        f"samples, {s['duration_s']:.2f} s, units {s['units']}",
    ]
    who = [f"{s['age']:g} y" if s["age"] is not None else "age unknown", s["sex"] or "sex unknown"]
    lines.append(f"patient    {', '.join(who)}" + (f"; recorded {s['recorded_at']}"
                                                    if s["recorded_at"] else ""))
    if s["dx_codes"]:
        dx = ", ".join(f"{d['code']} ({d['name']})" if d["name"] else d["code"]
                       for d in s["dx_codes"])
        lines.append(f"Dx (SNOMED) {dx}")
    for d in s["diagnoses"]:
        lines.append(f"diagnosis  {d}")
    others = [c for c in s["comments"] if not c.lower().startswith(("dx:", "age:", "sex:"))]
    if others:
        lines.append(f"comments   {len(others)}: " + " | ".join(others[:4])
                     + (" ..." if len(others) > 4 else ""))
    unit = s["units"]
    lines.append(f"amplitude  lead   {'min ' + unit:>8} {'max ' + unit:>8}")
    lo, hi = f"min_{unit.lower()}", f"max_{unit.lower()}"
    for lead, a in s["amplitude"].items():
        lines.append(f"           {lead:<6} " + (f"{a[lo]:8.3f} {a[hi]:8.3f}" if a
                                                 else "  not recorded / unusable"))
    meas = s.get("measurements")
    if meas:
        lines.append(f"measured   on {meas['lead']}, {meas['n_beats']} beats ({meas['method']})")
        fields = [("heart rate", "heart_rate_bpm", "bpm"), ("RR", "rr_ms", "ms"),
                  ("PR", "pr_ms", "ms"), ("QRS", "qrs_ms", "ms"), ("QT", "qt_ms", "ms"),
                  ("QTc (Bazett)", "qtc_ms", "ms"), ("QRS axis", "qrs_axis_deg", "deg")]
        for label, key, unit in fields:
            v = meas.get(key)
            lines.append(f"           {label:<13}" + (f"{v:7.1f} {unit}" if v is not None
                                                        else "      - (not measurable)"))
        if meas.get("note"):
            lines.append(f"           note: {meas['note']}")
    for w in s["warnings"]:
        lines.append(f"WARNING    {w}")
    return "\n".join(lines)

