"""Benchmark: ``measure()``'s RR interval and heart rate against annotated beats.

The real records in ``../shared/data/real`` with beat annotations (``.atr``: MIT-BIH 100,
360 Hz, and the CPSC 2021 records, 200 Hz) are cut into 10-s windows; in each window the
truth is the median interval between consecutive annotated beats (every beat symbol:
normal and ectopic, as R-peak detection sees them) and ``measure()`` gives its own median
RR on the same samples. Prints per-record and overall mean absolute error (ms), bias and
the share of windows within 5 ms. Run:

    .venv/bin/python eval/measure_rr.py [--windows 30] [--seconds 10]

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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--windows", type=int, default=30, help="windows per record (default 30)")
    p.add_argument("--seconds", type=float, default=10.0, help="window length (default 10 s)")
    args = p.parse_args(argv)
    records = sorted(REAL.glob("*/*.atr"))
    print("| record | fs | windows | measured | RR MAE (ms) | bias (ms) | within 5 ms |")
    print("|---|---|---|---|---|---|---|")
    errors_all, missed_all = [], 0
    for atr in records:
        hea = atr.with_suffix(".hea")
        errs, missed, count, fs = [], 0, 0, None
        for win, truth in windows(hea, args.seconds, args.windows):
            count += 1
            fs = win.fs
            m = measure(win)
            if m.rr_ms is None:
                missed += 1
                continue
            errs.append(m.rr_ms - truth)
        errors_all += errs
        missed_all += missed
        if errs:
            mae = statistics.fmean(abs(e) for e in errs)
            within = sum(abs(e) <= 5 for e in errs) / len(errs)
            print(f"| {atr.parent.name}/{atr.stem} | {fs:g} | {count} | {len(errs)} | {mae:.1f} | "
                  f"{statistics.median(errs):+.1f} | {within:.0%} |")
    if errors_all:
        mae = statistics.fmean(abs(e) for e in errors_all)
        within = sum(abs(e) <= 5 for e in errors_all) / len(errors_all)
        print(f"| **all** | | {len(errors_all) + missed_all} | {len(errors_all)} | **{mae:.1f}** | "
              f"{statistics.median(errors_all):+.1f} | {within:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
