"""Benchmark: ``measure()``'s PR, QRS, QT and RR against synthetic truth, and on real records.

**Synthetic truth.** :mod:`ecgqa.synth` builds every beat from a 3-D dipole whose waves
are cut Gaussians with exact onsets and offsets (``ecgqa/synth/dipole.py``), projected on
the 12 leads. The dipole is zero outside a wave, so the per-lead boundaries can only lie
inside the dipole's, and the *global* boundaries (earliest onset, latest offset over the
leads) are the dipole's: P onset at ``-PR``, QRS from 0 to ``QRS``, T end at ``QT`` (ms
from the QRS onset) of the conducted beats, i.e. ``facts.numeric`` "pr interval", "qrs
duration", "qt interval" (PR is absent in fibrillation and flutter: a PR measured there
counts as a false value). The RR truth is the *median* interval between the beats of
``facts.plan`` whose QRS midpoint lies inside the 10 s (``facts.numeric["rr interval"]`` is
the mean over the beats whose onset does). Each record
is rendered clean and with the generator's labelled noise types put on purpose.

**Real records** (no truth): the 50 CinC 2021 12-lead records (mV, 500 Hz) and a sample of
``ptbxl-zscore-250hz`` (z-scored, 250 Hz): share measurable, median and 5-95th percentile
per interval, and the share of atrial-fibrillation records (PTB-XL label AFIB, SNOMED
164889003) given a PR.

"old" is the previous method, frozen here (neurokit2 peaks and "prominence" delineation
on lead II); "new" is :func:`ecgqa.records.measure.measure`. Prints Markdown tables. Run:

    .venv/bin/python eval/measure_intervals.py [--n 300] [--seed 0] [--ptbxl 300]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ecgqa.records.leads import STANDARD_LEADS  # noqa: E402
from ecgqa.records.measure import measure  # noqa: E402
from ecgqa.records.read import EcgRecord, read_record  # noqa: E402
from ecgqa.synth.ecg import DURATION_S, FS, sample_facts, synthesize  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
INTERVALS = ("rr", "pr", "qrs", "qt")
AF_SNOMED = "164889003"                       # atrial fibrillation
# noise variant -> (noise type, leads); None = the record as sampled without noise
VARIANTS = {
    "clean": None,
    "static noise, 12 leads": ("static noise", STANDARD_LEADS),
    "baseline drift, 12 leads": ("baseline drift", STANDARD_LEADS),
    "burst noise, 12 leads": ("burst noise", STANDARD_LEADS),
    "electrode problem, 2 leads": ("electrodes problems", ("II", "V2")),
}


# --------------------------------------------------------------------------- old method


def old_measure(record: EcgRecord) -> dict:
    """The method before the multi-lead one: neurokit2 on lead II (frozen copy)."""
    import neurokit2 as nk

    fs = int(round(record.fs))
    out = dict.fromkeys(INTERVALS)
    names = [n for n, ok in zip(record.leads, record.lead_mask) if ok]
    name = next((p for p in ("II", "I", "V5", "V2", "III", "aVF") if p in names), None)
    if name is None:
        return out
    x = record.lead(name)[: int(30 * record.fs)].astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            clean = nk.ecg_clean(x, sampling_rate=fs)
            _, info = nk.ecg_peaks(clean, sampling_rate=fs)
            peaks = np.asarray(info["ECG_R_Peaks"], dtype=int)
            if len(peaks) < 3:
                return out
            _, waves = nk.ecg_delineate(clean, peaks, sampling_rate=fs, method="prominence")
        except Exception:
            return out
    out["rr"] = float(np.median(np.diff(peaks))) / fs * 1000.0
    bounds = {"pr": (60, 450), "qrs": (40, 250), "qt": (200, 700)}
    for key, start, end in (("pr", "ECG_P_Onsets", "ECG_R_Onsets"),
                            ("qrs", "ECG_R_Onsets", "ECG_R_Offsets"),
                            ("qt", "ECG_R_Onsets", "ECG_T_Offsets")):
        if start in waves and end in waves:
            a = np.asarray(waves[start], dtype=float)
            b = np.asarray(waves[end], dtype=float)
            k = min(len(a), len(b))
            ms = (b[:k] - a[:k]) / fs * 1000.0
            ok = ms[np.isfinite(ms) & (ms >= bounds[key][0]) & (ms <= bounds[key][1])]
            out[key] = float(np.median(ok)) if len(ok) >= 2 else None
    return out


def new_measure(record: EcgRecord) -> dict:
    m = measure(record)
    return {"rr": m.rr_ms, "pr": m.pr_ms, "qrs": m.qrs_ms, "qt": m.qt_ms}


METHODS = {"old": old_measure, "new": new_measure}


# --------------------------------------------------------------------------- synthetic


def synthetic_truth(facts) -> dict:
    """True RR, PR, QRS, QT in ms. RR: the median interval between the plan's beats whose
    QRS midpoint (onset + QRS / 2, near the R peak that a detector and an annotator see) lies
    inside the record."""
    on = facts.plan.onsets_s
    mid = on + facts.numeric["qrs duration"] / 2000.0
    inside = on[(mid >= 0.0) & (mid < DURATION_S)]
    num = facts.numeric
    return {"rr": float(np.median(np.diff(inside))) * 1000.0, "pr": num.get("pr interval"),
            "qrs": num["qrs duration"], "qt": num["qt interval"]}


def synthetic_record(facts, variant: str, rng: np.random.Generator) -> EcgRecord:
    spec = VARIANTS[variant]
    facts = replace(facts, noise={} if spec is None else {spec[0]: tuple(spec[1])})
    signal = synthesize(facts, rng)
    return EcgRecord(signal=signal, fs=FS, leads=STANDARD_LEADS, lead_mask=np.ones(12, bool))


def run_synthetic(n: int, seed: int) -> dict:
    """``results[variant][method]`` = list of (truth dict, measured dict, rhythm)."""
    rng = np.random.default_rng(seed)
    facts = [sample_facts(rng) for _ in range(n)]
    results: dict = {v: {m: [] for m in METHODS} for v in VARIANTS}
    for k, f in enumerate(facts):
        truth = synthetic_truth(f)
        for v in VARIANTS:
            rec = synthetic_record(f, v, np.random.default_rng([seed, k, len(v)]))
            for name, fn in METHODS.items():
                results[v][name].append((truth, fn(rec), f.scp_codes[0]))
    return results


def _stats(rows: list, key: str) -> dict:
    pairs = [(t[key], m[key]) for t, m, _ in rows if t[key] is not None]
    err = np.array([g - t for t, g in pairs if g is not None])
    false = sum(m[key] is not None for t, m, _ in rows if t[key] is None)
    return {"n": len(pairs), "measured": len(err) / max(len(pairs), 1),
            "mae": float(np.mean(np.abs(err))) if len(err) else math.nan,
            "bias": float(np.mean(err)) if len(err) else math.nan,
            "p90": float(np.percentile(np.abs(err), 90)) if len(err) else math.nan,
            "false": false, "n_none": sum(t[key] is None for t, _, _ in rows)}


def synthetic_table(results: dict) -> str:
    out = ["| variant | interval | n | old: measured | old: MAE | old: bias | old: P90 abs err "
           "| new: measured | new: MAE | new: bias | new: P90 abs err |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for v, by_method in results.items():
        for key in INTERVALS:
            s = {m: _stats(rows, key) for m, rows in by_method.items()}
            cells = []
            for m in METHODS:
                st = s[m]
                cells.append(f"{st['measured']:.0%} | {st['mae']:.1f} | {st['bias']:+.1f} "
                             f"| {st['p90']:.1f}")
            out.append(f"| {v} | {key.upper()} | {s['new']['n']} | " + " | ".join(cells) + " |")
        pr = {m: _stats(rows, "pr") for m, rows in by_method.items()}
        out.append(f"| {v} | PR given in AF/flutter (no P wave) | {pr['new']['n_none']} | "
                   f"{pr['old']['false']} | | | | {pr['new']['false']} | | | |")
    return "\n".join(out)


# --------------------------------------------------------------------------- real


def real_records(ptbxl: int, seed: int) -> dict:
    """``{source: [(record, is_af), ...]}``."""
    import csv

    cinc = [read_record(h) for h in sorted((DATA / "real" / "cinc2021").glob("*.hea"))]
    out = {"cinc2021 (12 leads, mV, 500 Hz)": [(r, AF_SNOMED in r.meta.dx_codes) for r in cinc]}
    z = DATA / "ptbxl-zscore-250hz"
    with open(z / "labels.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    pick = np.random.default_rng(seed).choice(len(rows), min(ptbxl, len(rows)), replace=False)
    out[f"ptbxl-zscore-250hz ({len(pick)} records, NU, 250 Hz)"] = [
        (read_record(z / rows[i]["path"]), "AFIB" in rows[i]["rhythm"].split(";"))
        for i in sorted(pick)]
    return out


def real_table(sources: dict) -> str:
    out = ["| source | method | interval | measured | median | 5th-95th pct |",
           "|---|---|---|---|---|---|"]
    for src, recs in sources.items():
        for name, fn in METHODS.items():
            got = [(fn(rec), af) for rec, af in recs]
            for key in INTERVALS:
                vals = np.array([g[key] for g, _ in got if g[key] is not None])
                if len(vals) == 0:
                    out.append(f"| {src} | {name} | {key.upper()} | 0% | - | - |")
                    continue
                lo, hi = np.percentile(vals, [5, 95])
                out.append(f"| {src} | {name} | {key.upper()} | {len(vals) / len(got):.0%} | "
                           f"{np.median(vals):.0f} | {lo:.0f}-{hi:.0f} |")
            af = [g for g, a in got if a]
            if af:
                given = sum(g["pr"] is not None for g in af)
                out.append(f"| {src} | {name} | PR given in AF records | {given}/{len(af)} "
                           "| | |")
    return "\n".join(out)


def timing(sources: dict, repeat: int = 3) -> str:
    recs = [r for r, _ in next(iter(sources.values()))]
    out = []
    for name, fn in METHODS.items():
        best = math.inf
        for _ in range(repeat):
            t0 = time.perf_counter()
            for rec in recs:
                fn(rec)
            best = min(best, (time.perf_counter() - t0) / len(recs))
        out.append(f"{name} {1000 * best:.0f} ms")
    return (f"Time per 10-s 12-lead 500 Hz record (cinc2021, {len(recs)} records, best of "
            f"{repeat}): " + ", ".join(out))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=300, help="synthetic records (default 300)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--ptbxl", type=int, default=300,
                   help="ptbxl-zscore-250hz records sampled (default 300)")
    p.add_argument("--no-real", action="store_true", help="synthetic records only")
    args = p.parse_args(argv)
    print(f"## Synthetic truth ({args.n} records, seed {args.seed}; ms)\n")
    print(synthetic_table(run_synthetic(args.n, args.seed)), end="\n\n")
    if not args.no_real:
        sources = real_records(args.ptbxl, args.seed)
        print("## Real records (no truth; ms)\n")
        print(real_table(sources), end="\n\n")
        print(timing(sources))
    return 0


if __name__ == "__main__":
    sys.exit(main())
