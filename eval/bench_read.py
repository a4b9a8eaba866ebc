"""Benchmark: record reading throughput on the real records in ../shared/data/real.

Prints, per source folder, milliseconds per record for a plain read and for the
model-input read (500 Hz, 10 s, 12 leads), plus the peak RSS. Run:

    .venv/bin/python eval/bench_read.py [--repeat 3] [--data ../shared/data/real]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

from ecgqa.records.read import EcgRecordError, read_record


def main() -> int:
    root = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=root.parent / "shared" / "data" / "real",
                    help="folder of record folders (default ../shared/data/real)")
    ap.add_argument("--repeat", type=int, default=3, help="timed passes (default 3)")
    args = ap.parse_args()
    headers = sorted(args.data.glob("*/*.hea"))
    if not headers:
        print(f"bench_read: no .hea files under {args.data}", file=sys.stderr)
        return 2
    print(f"{'source':<12} {'records':>7} {'plain ms/rec':>13} {'500Hz/10s/12-lead ms/rec':>25}")
    total = {"plain": [], "model": []}
    for folder in sorted({h.parent for h in headers}):
        recs = [h for h in headers if h.parent == folder]
        timings = {"plain": [], "model": []}
        for _ in range(args.repeat):
            for kind, kwargs in (("plain", {}),
                                 ("model", {"fs": 500, "duration_s": 10, "leads": "12-lead"})):
                t = time.perf_counter()
                ok = 0
                for h in recs:
                    try:
                        read_record(h, **kwargs)
                        ok += 1
                    except EcgRecordError:
                        pass
                timings[kind].append((time.perf_counter() - t) * 1000 / max(ok, 1))
        plain, model = statistics.median(timings["plain"]), statistics.median(timings["model"])
        total["plain"].append(plain * len(recs))
        total["model"].append(model * len(recs))
        print(f"{folder.name:<12} {len(recs):>7} {plain:>13.1f} {model:>25.1f}")
    n = len(headers)
    print(f"{'all':<12} {n:>7} {sum(total['plain']) / n:>13.1f} {sum(total['model']) / n:>25.1f}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
