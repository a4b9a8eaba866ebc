"""Benchmark: ``measure()``'s RR interval and heart rate against annotated beats.

The real records in ``../shared/data/real`` with beat annotations (``.atr``: MIT-BIH 100,
360 Hz, and the CPSC 2021 records, 200 Hz) are cut into 10-s windows; in each window the
truth is the median interval between consecutive annotated beats (every beat symbol:
normal and ectopic, as R-peak detection sees them) and ``measure()`` gives its own median
RR on the same samples, or None (a window too noisy to count beats in). Prints per record
and overall: windows measured, mean absolute error (ms), median error (bias) and the share
of windows within 5 ms; with ``--old`` also the previous method (neurokit2 on lead II,
frozen in ``eval/measure_intervals.py``). Run:

    .venv/bin/python eval/measure_rr.py [--windows 30] [--seconds 10] [--old]

The ground-truth questions of issue 15 need RR MAE <= 5 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ecgqa.records.measure import measure  # noqa: E402
from ecgqa.records.read import read_record  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "real"
BEATS = set("NLRBAaJSVrFejnE/fQ?")          # WFDB beat symbols (not rhythm or noise marks)


def windows(hea: Path, seconds: float, most: int):
    """``(window record, true median RR ms)`` for up to ``most`` windows of ``hea``."""
    import wfdb

    rec = read_record(hea)
    ann = wfdb.rdann(str(hea.with_suffix("")), "atr")
    scale = rec.fs / ann.fs
    beats = np.array([s * scale for s, sym in zip(ann.sample, ann.symbol) if sym in BEATS])
    n = int(seconds * rec.fs)
    for k in range(min(most, rec.n_samples // n)):
        a, b = k * n, (k + 1) * n
        inside = beats[(beats >= a) & (beats < b)]
        if len(inside) < 4:
            continue
        truth = float(np.median(np.diff(inside)) / rec.fs * 1000.0)
        yield replace(rec, signal=np.ascontiguousarray(rec.signal[:, a:b])), truth


def _row(name: str, fs, count: int, errs: list[float]) -> str:
    if not errs:
        return f"| {name} | {fs} | {count} | 0 | - | - | - |"
    mae = statistics.fmean(abs(e) for e in errs)
    within = sum(abs(e) <= 5 for e in errs) / len(errs)
    return (f"| {name} | {fs} | {count} | {len(errs)} | {mae:.1f} | "
            f"{statistics.median(errs):+.1f} | {within:.0%} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--windows", type=int, default=30, help="windows per record (default 30)")
    p.add_argument("--seconds", type=float, default=10.0, help="window length (default 10 s)")
    p.add_argument("--old", action="store_true", help="also the previous method")
    args = p.parse_args(argv)
    methods = {"new": lambda rec: measure(rec).rr_ms}
    if args.old:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from measure_intervals import old_measure

        methods["old"] = lambda rec: old_measure(rec)["rr"]
    records = sorted(REAL.glob("*/*.atr"))
    for name, fn in methods.items():
        print(f"\n{name} method\n")
        print("| record | fs | windows | measured | RR MAE (ms) | bias (ms) | within 5 ms |")
        print("|---|---|---|---|---|---|---|")
        errors_all, count_all = [], 0
        for atr in records:
            errs, count, fs = [], 0, None
            for win, truth in windows(atr.with_suffix(".hea"), args.seconds, args.windows):
                count += 1
                fs = f"{win.fs:g}"
                rr = fn(win)
                if rr is not None:
                    errs.append(rr - truth)
            errors_all += errs
            count_all += count
            print(_row(f"{atr.parent.name}/{atr.stem}", fs, count, errs))
        print(_row("**all**", "", count_all, errors_all))
    return 0


if __name__ == "__main__":
    sys.exit(main())
