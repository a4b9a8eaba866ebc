"""Validate synthetic ECG labels against the project's measurements and time the generator.

Draws ``--n`` records with ``sample_facts``, renders them WITHOUT the labelled noise, and
measures each with :func:`ecgqa.records.measure.measure` (global intervals over the 12
leads, and the I/aVF axis); QRS duration also per lead, as the median and maximum over
leads I, II, V1, V2, V5, V6 (neurokit2's delineation). Prints a Markdown agreement table,
axis-class agreement, an RR-irregularity check of the rhythms and the generator speed. Run:

    .venv/bin/python eval/validate_synth.py --n 200 --seed 0
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from dataclasses import replace

import numpy as np

from ecgqa.records.leads import STANDARD_LEADS
from ecgqa.records.measure import measure
from ecgqa.records.read import EcgRecord
from ecgqa.synth.ecg import AXIS_CLASSES, FS, RHYTHMS, axis_class, sample_facts, synthesize

# quantity -> (tolerance, unit); chosen before looking at the results, see docs/synth.md
TOLERANCES = {"heart rate": (5.0, "bpm"), "PR interval": (30.0, "ms"),
              "QRS duration": (25.0, "ms"), "QT interval": (40.0, "ms"),
              "QRS axis": (20.0, "deg")}


def _record(signal: np.ndarray) -> EcgRecord:
    return EcgRecord(signal=signal, fs=FS, leads=STANDARD_LEADS, lead_mask=np.ones(12, bool))


def _rr_stats(record: EcgRecord) -> tuple[float, float, float] | None:
    """RR coefficient of variation, RR range (ms) and 60000 / mean RR (bpm) from neurokit2's
    R peaks: the median over the 12 leads, so one lead's missed or extra peaks do not
    decide. Peaks within 0.4 s of either end are dropped (filter edge effects, cut beats)."""
    import neurokit2 as nk

    stats = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for row in record.signal.astype(np.float64):
            try:
                _, info = nk.ecg_peaks(nk.ecg_clean(row, sampling_rate=int(FS)),
                                       sampling_rate=int(FS))
            except Exception:
                continue
            peaks = np.asarray(info["ECG_R_Peaks"], dtype=float)
            peaks = peaks[(peaks >= 0.4 * FS) & (peaks < record.n_samples - 0.4 * FS)]
            rr = np.diff(peaks) * 1000.0 / FS
            if len(rr) >= 3:
                stats.append((rr.std() / rr.mean(), np.ptp(rr), 60000.0 / rr.mean()))
    return tuple(np.median(np.array(stats), axis=0)) if stats else None


def _rhythm_group(codes: tuple[str, ...]) -> str:
    return {RHYTHMS[4]: "AF", RHYTHMS[5]: "flutter", RHYTHMS[3]: "sinus arrhythmia"}.get(
        codes[0], "regular sinus")


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def _spatial_qrs_ms(facts, signal: np.ndarray) -> float | None:
    """Self-check, not neurokit2: global QRS width where the 10 ms-smoothed 12-lead spatial
    velocity stays above 10 % of its beat peak (ends after 20 ms below). Beats are located
    from the plan's onsets, so this checks that the labelled width is visible."""
    x = np.apply_along_axis(np.convolve, 1, signal.astype(np.float64), np.ones(5) / 5, "same")
    v = np.sqrt((np.diff(x, axis=1) ** 2).sum(axis=0))                  # (n - 1,)
    p = facts.plan
    keep = (p.kinds == 0) & (p.onsets_s > 0.4) & (p.onsets_s < 9.6)
    widths = []
    for a in np.round(p.onsets_s[keep] * FS).astype(int):
        above = v[a - 20:a + 120] > 0.1 * v[a - 20:a + 120].max()
        start = end = int(np.argmax(above))
        for k in range(start, len(above)):
            if above[k]:
                end = k
            elif k - end >= 10:
                break
        widths.append((end - start + 1) * 1000.0 / FS)
    return float(np.median(widths)) if widths else None


def _net_peak_axis(facts, signal: np.ndarray) -> float | None:
    """Self-check: measure()'s net-peak axis (max + min of I and aVF against the PR
    baseline) but over each whole conducted QRS located from the plan, and with aVF
    scaled by 2/sqrt(3) to the length of lead I."""
    p = facts.plan
    keep = (p.kinds == 0) & (p.onsets_s > 0.4) & (p.onsets_s < 9.6)
    q = int(round(facts.numeric["qrs duration"] * FS / 1000.0))
    nets = []
    for row in (signal[0], signal[5] * 2.0 / np.sqrt(3.0)):           # I, aVF
        x = row.astype(np.float64)
        nets.append(np.median([x[a:a + q].max() + x[a:a + q].min() - 2.0 * x[a - 10]
                               for a in np.round(p.onsets_s[keep] * FS).astype(int)]))
    return float(np.degrees(np.arctan2(nets[1], nets[0]))) if keep.any() else None


def collect(n: int, seed: int) -> list[dict]:
    """Pairs (intended, measured) per quantity, one dict per record."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        facts = replace(sample_facts(rng), noise={})
        signal = synthesize(facts, rng)
        rec = _record(signal)
        m = measure(rec)                                       # global intervals, I/aVF axis
        per_lead = [measure(rec, lead=lead) for lead in STANDARD_LEADS]
        qrs = [x.qrs_ms for x in per_lead if x.qrs_ms is not None]
        num = facts.numeric
        rr = _rr_stats(rec)
        rows.append({
            "facts": facts, "group": _rhythm_group(facts.scp_codes),
            "heart rate, global": (facts.heart_rate_bpm, m.heart_rate_bpm),
            "heart rate, median of 12 leads": (
                facts.heart_rate_bpm, _median([x.heart_rate_bpm for x in per_lead])),
            "heart rate, mean RR, median of 12 leads": (
                facts.heart_rate_bpm, rr[2] if rr is not None else None),
            "PR interval, global": (num.get("pr interval"), m.pr_ms),
            "PR interval, median of 12 leads": (
                num.get("pr interval"), _median([x.pr_ms for x in per_lead])),
            "QRS duration, global": (num["qrs duration"], m.qrs_ms),
            "QRS duration, median of 12 leads": (num["qrs duration"], _median(qrs)),
            "QRS duration, max of 12 leads": (num["qrs duration"], max(qrs) if qrs else None),
            "QRS duration, spatial velocity (self-check)": (num["qrs duration"],
                                                            _spatial_qrs_ms(facts, signal)),
            "QT interval, global": (num["qt interval"], m.qt_ms),
            "QT interval, median of 12 leads": (
                num["qt interval"], _median([x.qt_ms for x in per_lead])),
            "QRS axis, I and aVF": (facts.axis_deg, m.qrs_axis_deg),
            "QRS axis, net peaks over whole QRS (self-check)": (
                facts.axis_deg, _net_peak_axis(facts, signal)),
            "rr": rr[:2] if rr is not None else None,
        })
    return rows


def _error(key: str, truth: float, got: float) -> float:
    if key.startswith("QRS axis"):
        return (got - truth + 180.0) % 360.0 - 180.0
    return got - truth


def agreement_table(rows: list[dict]) -> str:
    """Markdown table: quantity, n intended, n measured, median |error|, bias, % within."""
    out = ["| quantity | n with label | n measured | median abs error | median error (bias) "
           "| % within tolerance | tolerance |", "|---|---|---|---|---|---|---|"]
    for key in [k for k in rows[0] if k not in ("facts", "group", "rr")]:
        tol, unit = TOLERANCES[key.split(",")[0]]
        pairs = [r[key] for r in rows if r[key][0] is not None]
        errs = np.array([_error(key, t, g) for t, g in pairs if g is not None])
        if len(errs) == 0:
            out.append(f"| {key} | {len(pairs)} | 0 | - | - | - | ±{tol:g} {unit} |")
            continue
        within = 100.0 * np.mean(np.abs(errs) <= tol)
        out.append(f"| {key} | {len(pairs)} | {len(errs)} | {np.median(np.abs(errs)):.1f} {unit} "
                   f"| {np.median(errs):+.1f} {unit} | {within:.0f} % | ±{tol:g} {unit} |")
    return "\n".join(out)


def _wide(facts) -> bool:
    return any("bundle" in c for c in facts.scp_codes)


def axis_agreement(rows: list[dict]) -> str:
    """Class of the measured I/aVF axis against the label, overall, per class and per QRS
    width (the label is the area axis of the whole QRS; measure() nets peaks within +-60 ms)."""
    key = "QRS axis, I and aVF"
    got = [(r["facts"].heart_axis, axis_class(r[key][1]), _wide(r["facts"])) for r in rows
           if r[key][1] is not None]
    out = ["| subset | n measured | class agreement |", "|---|---|---|"]
    subsets = [("all", lambda g: True), ("no bundle branch block", lambda g: not g[2]),
               ("bundle branch block (complete or incomplete)", lambda g: g[2])]
    subsets += [(cls, lambda g, c=cls: g[0] == c) for cls in AXIS_CLASSES]
    for name, keep in subsets:
        sub = [g[0] == g[1] for g in got if keep(g)]
        if sub:
            out.append(f"| {name} | {len(sub)} | {100.0 * np.mean(sub):.0f} % |")
    self_key = "QRS axis, net peaks over whole QRS (self-check)"
    far = [r for r in rows if r[key][1] is not None
           and abs((r[key][1] - r[key][0] + 180.0) % 360.0 - 180.0) > 45.0]
    fixed = sum(axis_class(r[self_key][1]) == r["facts"].heart_axis for r in far)
    out.append(f"\nmeasure() axis more than 45 deg from the label: {len(far)} records; the "
               f"same net-peak rule over the whole QRS gives the labelled class in {fixed}.")
    return "\n".join(out)


def rhythm_table(rows: list[dict]) -> str:
    """RR variability measured by neurokit2 (median over leads), per rhythm label."""
    out = ["| rhythm (label), records without extra systoles | n | median RR CV "
           "| % RR CV > 0.12 | median RR range | % RR range > 120 ms |",
           "|---|---|---|---|---|---|"]
    for group in ("regular sinus", "sinus arrhythmia", "AF", "flutter"):
        st = np.array([r["rr"] for r in rows if r["group"] == group and r["rr"] is not None
                       and r["facts"].extra_systole is None]).reshape(-1, 2)
        if len(st):
            out.append(f"| {group} | {len(st)} | {np.median(st[:, 0]):.3f} | "
                       f"{100.0 * np.mean(st[:, 0] > 0.12):.0f} % | {np.median(st[:, 1]):.0f} ms "
                       f"| {100.0 * np.mean(st[:, 1] > 120.0):.0f} % |")
    return "\n".join(out)


def per_group_qrs(rows: list[dict]) -> str:
    """QRS error per conduction group (median of 12 leads), to show where the bias lives."""
    out = ["| conduction | n | median intended QRS | neurokit2 (12-lead median) "
           "| spatial velocity (self-check) |", "|---|---|---|---|---|"]
    groups = {"narrow (no BBB)": lambda c: not any("bundle" in x for x in c),
              "incomplete BBB": lambda c: any("incomplete" in x for x in c),
              "complete BBB": lambda c: any(x.startswith("complete") for x in c)}
    for name, test in groups.items():
        sub = [(r["QRS duration, median of 12 leads"],
                r["QRS duration, spatial velocity (self-check)"][1])
               for r in rows if test(r["facts"].scp_codes)]
        sub = [(t, g, w) for (t, g), w in sub if g is not None and w is not None]
        if sub:
            med = [statistics.median(v[i] for v in sub) for i in range(3)]
            out.append(f"| {name} | {len(sub)} | {med[0]:.0f} ms | {med[1]:.0f} ms "
                       f"| {med[2]:.0f} ms |")
    return "\n".join(out)


def speed(n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    facts = [sample_facts(rng) for _ in range(n)]
    t1 = time.perf_counter()
    for f in facts:
        synthesize(f, rng)
    t2 = time.perf_counter()
    return (f"Speed over {n} records: sample_facts {1000 * (t1 - t0) / n:.2f} ms/record, "
            f"synthesize {1000 * (t2 - t1) / n:.2f} ms/record")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="records to validate (default 200)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ap.add_argument("--speed-n", type=int, default=2000, help="records timed (default 2000)")
    args = ap.parse_args()
    rows = collect(args.n, args.seed)
    print(f"## neurokit2 agreement on {args.n} noise-free records (seed {args.seed})\n")
    print(agreement_table(rows), end="\n\n")
    print("Axis class agreement (class of the measured axis vs the label):\n")
    print(axis_agreement(rows), end="\n\n")
    print(rhythm_table(rows), end="\n\n")
    print(per_group_qrs(rows), end="\n\n")
    print(speed(args.speed_n, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
