"""Benchmark: synthetic ECG-QA generation speed (target: 2,000 records < 2 min on 2 cores).

    .venv/bin/python eval/bench_synth.py [--n 2000] [--workers 2] [--seed 0]

Prints wall time, ECGs per second, questions written and the size on disk; the dataset
is written to a temporary folder and removed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from ecgqa.synth.dataset import write_synthetic


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="ECGs to generate (default 2000)")
    ap.add_argument("--workers", type=int, default=os.cpu_count(), help="processes")
    ap.add_argument("--seed", type=int, default=0, help="seed")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        s = write_synthetic(Path(tmp) / "ds", args.n, args.seed, workers=args.workers)
        wall = time.perf_counter() - t
        size = sum(p.stat().st_size for p in (Path(tmp) / "ds").rglob("*") if p.is_file())
    print(f"{args.n} ECGs ({s.n_patients} patients), {sum(s.n_questions.values())} questions, "
          f"{args.workers} workers: {wall:.1f} s wall, {args.n / wall:.1f} ECGs/s, "
          f"{size / 1e6:.0f} MB on disk")
    return 0


if __name__ == "__main__":
    sys.exit(main())
