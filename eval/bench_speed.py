"""Time the benchmark's fast path beside the per-query path on the same episodes.

    python eval/bench_speed.py --suite eval/suites/default.yaml --episodes 10 --out out/bench-speed

Runs the suite twice into ``OUT/per_query`` (``fast: false``: every query scored and
generated alone, every method from scratch, as before) and ``OUT/fast``, in one process
(the LLM loaded once per run, the signal cache warm for both), then compares every answer
of every cell and method (options, probabilities, prediction, generated text, exact match,
text scores, token accuracy) and prints seconds per episode per method and the wall time of
each run. Generated answers may differ where greedy decoding meets a near-tie (they are
listed apart, with the reported metrics that change); exit status 1 if anything else
differs. ``--threads`` sets torch's CPU threads.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

IGNORED = {"seconds"}
TEXT = {"text", "text_scores", "exact_match"}
"""What greedy decoding fixes: the fast path's decoding may pick another token where two
are near-tied (docs/bench.md), so these are counted apart."""


def _run(suite: str, out: Path, episodes: int, fast: bool, extra: list[str]) -> float:
    from ecgqa.cli import main

    if out.exists():
        shutil.rmtree(out)
    start = time.perf_counter()
    rc = main(["bench", "--suite", suite, "--out", str(out), "--episodes", str(episodes),
               "--quiet", "--set", f"fast={str(fast).lower()}", *extra])
    if rc != 0:
        raise SystemExit(f"bench exited with {rc}")
    return time.perf_counter() - start


def differences(a: Path, b: Path) -> tuple[list[str], list[str]]:
    """Where the cell files of two runs differ (seconds aside): (differences in anything
    but the generated answers, differences in generated answers)."""
    hard, text = [], []
    for fa in sorted((a / "cells").glob("*.json")):
        ca, cb = json.loads(fa.read_text()), json.loads((b / "cells" / fa.name).read_text())
        for name, eps in ca["methods"].items():
            for ea, eb in zip(eps, cb["methods"][name]):
                where = f"{fa.stem} {name} episode {ea['index']}"
                for key in sorted((set(ea) | set(eb)) - IGNORED - {"queries"}):
                    if ea.get(key) != eb.get(key):
                        hard.append(f"{where}: {key}")
                for i, (qa, qb) in enumerate(zip(ea["queries"], eb["queries"])):
                    fields = {k for k in set(qa) | set(qb) if qa.get(k) != qb.get(k)}
                    if fields - TEXT:
                        hard.append(f"{where} query {i}: {', '.join(sorted(fields - TEXT))}")
                    if fields & TEXT:
                        text.append(f"{where} query {i}: {qa['text']!r} -> {qb['text']!r}"
                                    + (" (exact match changed)" if "exact_match" in fields
                                       else ""))
    return hard, text


def table_differences(a: Path, b: Path) -> list[str]:
    """Reported metrics (3 decimals, as in results.md) that differ between two runs."""
    ra, rb = (json.loads((x / "results.json").read_text()) for x in (a, b))
    out = []
    for ca, cb in zip(ra["cells"], rb["cells"]):
        for name, ma in ca["methods"].items():
            for key, va in ma.items():
                vb = cb["methods"][name].get(key)
                if isinstance(va, dict) and "mean" in va and \
                        (round(va["mean"], 3), round(va.get("ci95") or 0, 3)) != \
                        (round(vb["mean"], 3), round(vb.get("ci95") or 0, 3)):
                    out.append(f"{ca['id']} {name} {key}: {va['mean']:.3f} -> "
                               f"{vb['mean']:.3f}")
    return out


def seconds(out: Path) -> dict:
    res = json.loads((out / "results.json").read_text())
    return {c["id"]: {m: v["seconds_per_episode"] for m, v in c["methods"].items()}
            for c in res["cells"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="eval/suites/default.yaml")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--out", default="out/bench-speed")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--set", action="append", default=[], help="suite KEY=VALUE override")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    extra = [x for kv in args.set for x in ("--set", kv)]
    out = Path(args.out)
    walls = {}
    for name, fast in (("per_query", False), ("fast", True)):
        walls[name] = _run(args.suite, out / name, args.episodes, fast, extra)
    old, new = seconds(out / "per_query"), seconds(out / "fast")
    print(f"{'cell':40s} {'method':15s} {'per-query s/ep':>15s} {'fast s/ep':>10s}")
    for cell, methods in old.items():
        for m, s in methods.items():
            print(f"{cell:40s} {m:15s} {s:15.3f} {new[cell][m]:10.3f}")
    n_cells = len(old)
    for name, wall in walls.items():
        per = sum(sum(v.values()) for v in (old if name == "per_query" else new).values())
        print(f"{name}: wall {wall:.1f} s for {n_cells} cells x {args.episodes} episodes; "
              f"methods {per / n_cells:.2f} s per episode")
    hard, text = differences(out / "per_query", out / "fast")
    queries = sum(len(e["queries"]) for f in (out / "fast" / "cells").glob("*.json")
                  for name, eps in json.loads(f.read_text())["methods"].items()
                  for e in eps if name in ("adapted", "no_adaptation", "zero_shot_text",
                                           "in_context"))
    print(f"answers compared: {'identical' if not hard else f'{len(hard)} differ'} "
          f"(everything but generated text); generated answers: {len(text)} of {queries} "
          "differ")
    for d in (hard + text)[:30]:
        print("  ", d)
    table = table_differences(out / "per_query", out / "fast")
    print(f"reported metrics (3 decimals): {'identical' if not table else ''}")
    for d in table:
        print("  ", d)
    return 1 if hard else 0


if __name__ == "__main__":
    raise SystemExit(main())
