"""The seeded fast subset of the fuzzing campaign (``eval/fuzz.py`` runs the long one).

Every input kind runs a fixed number of mutated cases with a fixed seed; any crash (an
exception other than the library's one-line error, a hang, a multi-GB allocation, a file
written half-way) fails the test with the case's label and the seed that reproduces it:
``python eval/fuzz.py --kinds KIND --index I --seed 0``.
"""

from __future__ import annotations

import time

import pytest

from tests.fuzz.harness import all_kinds, campaign, format_table, plan

SEED = 0
CASES = 3000                   # shared out by weight; about 45 s on 2 cores (<= 60 s)
KINDS = all_kinds()


def test_every_kind_gets_cases():
    counts = plan(KINDS, CASES)
    assert sum(counts.values()) == CASES and min(counts.values()) >= 20, counts


@pytest.mark.parametrize("group", ["records", "qa", "models"])
def test_the_seeded_fast_subset_has_no_crash(group):
    from tests.fuzz import kinds_models, kinds_qa, kinds_records

    module = {"records": kinds_records, "qa": kinds_qa, "models": kinds_models}[group]
    names = [k.name for k in module.KINDS]
    counts = {n: c for n, c in plan(KINDS, CASES).items() if n in names}
    t0 = time.perf_counter()
    tallies = campaign(0, SEED, {n: KINDS[n] for n in names}, per_kind=counts)
    print(f"\n{group}: {time.perf_counter() - t0:.1f} s\n{format_table(tallies)}")
    for name, t in tallies.items():
        assert t.run == counts[name]
        assert t.read + t.refused + t.crashed == t.run
    crashes = [f"{c.kind}[{c.index}] seed {c.seed}: {c.label}: {c.detail}"
               for t in tallies.values() for c in t.crashes]
    assert not crashes, "\n".join(crashes)
    # the mutations reach both outcomes: a fuzzer that only ever refuses tests nothing
    assert sum(t.read for t in tallies.values()) > 0
    assert sum(t.refused for t in tallies.values()) > 0
