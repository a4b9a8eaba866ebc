"""Fuzz every input ecgqa reads: mutated real records, QA files, indexes, configs, adapters,
encoders and images, each through its reader (and the CLI).

The rule for every case: a correct result or one clear error (``ecgqa.errors.EcgqaError``
with a one-line message; on the command line one stderr line and exit 2); never another
exception, a hang, a multi-GB allocation or a file written half-way. Prints, per input
kind, the cases run, read, refused and crashed, then each crash with the seed that
reproduces it.

    python eval/fuzz.py --cases 10000 --seed 0
    python eval/fuzz.py --kinds wfdb-header,mat --cases 500 --keep out/fuzz-crashes
    python eval/fuzz.py --kinds wfdb-header --index 17 --seed 0      # re-run one case
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fuzz.harness import (  # noqa: E402
    TIME_LIMIT_S,
    Tally,
    address_space_cap,
    all_kinds,
    campaign,
    format_table,
    run_case,
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=1000,
                   help="cases in all, shared out over the kinds by weight (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="campaign seed (default 0)")
    p.add_argument("--kinds", default=None,
                   help="comma-separated input kinds (default: all; see --list)")
    p.add_argument("--list", action="store_true", help="list the input kinds and exit")
    p.add_argument("--index", type=int, default=None,
                   help="re-run only this case index of each kind given (with its seed)")
    p.add_argument("--time-limit", type=float, default=TIME_LIMIT_S,
                   help=f"seconds one case may run before it counts as a hang "
                   f"(default {TIME_LIMIT_S:g})")
    p.add_argument("--keep", type=Path, default=None,
                   help="copy the input files of every crashing case into this folder")
    p.add_argument("--json", type=Path, default=None, help="also write the tallies as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    kinds = all_kinds()
    if args.list:
        for k in kinds.values():
            doc = (k.make.__doc__ or "").strip().splitlines()
            print(f"{k.name:<16} weight {k.weight:g}  {doc[0] if doc else ''}")
        return 0
    if args.kinds:
        unknown = [k for k in args.kinds.split(",") if k not in kinds]
        if unknown:
            print(f"fuzz: unknown kind {unknown[0]!r}; use one of {', '.join(kinds)}",
                  file=sys.stderr)
            return 2
        kinds = {k: kinds[k] for k in args.kinds.split(",")}
    if args.cases < 1:
        print("fuzz: --cases must be >= 1", file=sys.stderr)
        return 2
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.index is not None:
        tallies = {}
        with tempfile.TemporaryDirectory(prefix="ecgqa-fuzz-") as tmp:
            for name, kind in kinds.items():
                shared = Path(tmp, f"{name}-setup")
                shared.mkdir()
                if kind.setup:
                    kind.setup(shared)
                with address_space_cap():
                    o = run_case(kind, args.seed, args.index, Path(tmp), shared,
                                 args.time_limit, args.keep)
                print(f"{name}[{args.index}] seed {o.seed}: {o.label}\n  {o.status}: {o.detail}")
                tallies.setdefault(name, Tally()).add(o)
    else:
        tallies = campaign(args.cases, args.seed, kinds, args.time_limit, args.keep,
                           progress=not args.quiet)
    print(f"fuzz: {sum(t.run for t in tallies.values())} cases, seed {args.seed}, "
          f"{time.perf_counter() - t0:.0f} s")
    print(format_table(tallies))
    crashes = [c for t in tallies.values() for c in t.crashes]
    for c in crashes:
        print(f"CRASH {c.kind}[{c.index}] (seed {c.seed}): {c.label}\n    {c.detail}")
    if args.json:
        args.json.write_text(json.dumps({name: {"run": t.run, "read": t.read,
                                                "refused": t.refused, "crashed": t.crashed}
                                         for name, t in tallies.items()}, indent=2))
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
