"""Fuzzing harness: mutated real inputs through every reader of ecgqa, one rule for all.

The rule for every case: a correct result, or one clear error (a subclass of
:class:`ecgqa.errors.EcgqaError` whose message is one line; on the command line one line on
stderr and exit status 2). Never another exception, a hang, a multi-GB allocation, or a
file written half-way.

An input *kind* (WFDB records, ECG-QA JSON, a records index, ...) is a function
``make(rng, work) -> Case``: it writes one mutated input under the empty folder ``work``
(from the real files in ``../shared/data`` and the project's own) and returns what to run
on it. The harness runs each case under a time limit and a memory watch and sorts it as
read, refused or crashed. ``eval/fuzz.py`` runs the long campaign; tests/fuzz/ runs a
seeded fast subset.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import random
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecgqa.errors import EcgqaError

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
TIME_LIMIT_S = 30.0          # one case; a real reader takes well under a second
MEMORY_LIMIT_MB = 1024       # growth of the process's peak RSS in one case
ADDRESS_SPACE_GB = 4         # more virtual memory than this in one case: MemoryError


class CaseTimeout(BaseException):
    """Raised by the alarm inside a case that runs too long (not an ``Exception``, so no
    ``except Exception`` in the code under test can swallow it)."""


@dataclass
class Case:
    """One mutated input and what to run on it.

    Attributes:
        label: what was mutated, e.g. ``"cinc2021/E07500 fs='0'"`` (shown for crashes).
        run: calls the code under test; its return value is checked by ``check``.
        check: raises AssertionError when an accepted result is wrong (e.g. NaN samples).
        cli: ``run`` returns ``(exit status, stdout, stderr)`` of an in-process CLI call:
            0 is read, 2 with one stderr line is refused, anything else a crash.
        outputs: paths that must not exist after a refusal (nothing written half-way).
    """

    label: str
    run: Callable[[], Any]
    check: Callable[[Any], None] | None = None
    cli: bool = False
    outputs: tuple[Path, ...] = ()


@dataclass
class Kind:
    """An input kind: its name, its share of a campaign, and its case maker."""

    name: str
    make: Callable[[random.Random, Path], Case]
    weight: float = 1.0
    setup: Callable[[Path], None] | None = None    # once per campaign (e.g. build a model)


@dataclass
class Outcome:
    kind: str
    index: int
    seed: int
    label: str
    status: str                   # "read", "refused" or "crashed"
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Tally:
    run: int = 0
    read: int = 0
    refused: int = 0
    crashed: int = 0
    seconds: float = 0.0
    crashes: list[Outcome] = field(default_factory=list)

    def add(self, o: Outcome) -> None:
        self.run += 1
        self.seconds += o.seconds
        setattr(self, o.status, getattr(self, o.status) + 1)
        if o.status == "crashed":
            self.crashes.append(o)


def case_seed(seed: int, kind: str, index: int) -> int:
    """A case's own seed, so any one case can be re-run alone."""
    digest = hashlib.sha256(f"{seed}/{kind}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _on_alarm(signum, frame):
    raise CaseTimeout()


def _one_line(text: str) -> bool:
    return bool(text.strip()) and "\n" not in text.strip()


def execute(case: Case, time_limit: float = TIME_LIMIT_S,
            memory_limit_mb: float = MEMORY_LIMIT_MB) -> tuple[str, str]:
    """Run one case under the rule; returns ``(status, detail)``."""
    before = _peak_rss_mb()
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, time_limit)
    try:
        result = case.run()
        signal.setitimer(signal.ITIMER_REAL, 0)
    except CaseTimeout:
        return "crashed", f"hang: still running after {time_limit:g} s"
    except EcgqaError as err:
        signal.setitimer(signal.ITIMER_REAL, 0)
        if not _one_line(str(err)):
            return "crashed", f"{type(err).__name__} message is not one line: {str(err)!r:.300}"
        status, detail = "refused", f"{type(err).__name__}: {err}"
        if "MemoryError" in str(err):         # the cap stopped an allocation the code tried
            return "crashed", f"allocation refused only by the memory cap: {detail[:300]}"
    except BaseException as err:                 # noqa: BLE001 - a crash is what we look for
        signal.setitimer(signal.ITIMER_REAL, 0)
        if isinstance(err, KeyboardInterrupt):
            raise
        tb = traceback.extract_tb(err.__traceback__)
        where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb)
                      if "/ecgqa/" in f.filename), tb[-1].name if tb else "?")
        return "crashed", f"{type(err).__name__} at {where}: {str(err)[:300]}"
    else:
        status, detail = _judge(case, result)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    grew = _peak_rss_mb() - before
    if grew > memory_limit_mb:
        return "crashed", f"allocation: peak RSS grew by {grew:.0f} MB ({detail[:200]})"
    if status == "refused":
        left = [str(p) for p in case.outputs if p.exists()]
        if left:
            return "crashed", f"refused but wrote {', '.join(left)} ({detail[:200]})"
    return status, detail


def _judge(case: Case, result) -> tuple[str, str]:
    if case.cli:
        code, _, err = result
        if code == 0:
            status, detail = "read", ""
        elif code == 2 and _one_line(err) and err.startswith("ecgqa: error:"):
            return "refused", err.strip()
        else:
            return "crashed", f"exit {code}, stderr {err[-300:]!r}"
    else:
        status, detail = "read", ""
    if case.check is not None:
        try:
            case.check(result)
        except AssertionError as err:
            return "crashed", f"accepted a bad result: {err}"
        except Exception as err:                 # noqa: BLE001
            return "crashed", f"result check failed: {type(err).__name__}: {err}"
    return status, detail


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``ecgqa ARGV`` in this process: ``(exit status, stdout, stderr)``."""
    from ecgqa.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as ex:              # argparse --help and the like
            code = ex.code if isinstance(ex.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def all_kinds() -> dict[str, Kind]:
    """Every input kind, by name."""
    from tests.fuzz import kinds_models, kinds_qa, kinds_records

    kinds: dict[str, Kind] = {}
    for module in (kinds_records, kinds_qa, kinds_models):
        for k in module.KINDS:
            kinds[k.name] = k
    return kinds


def plan(kinds: dict[str, Kind], cases: int) -> dict[str, int]:
    """Share ``cases`` out over the kinds by weight (every kind gets at least one)."""
    total = sum(k.weight for k in kinds.values())
    counts = {n: max(1, int(cases * k.weight / total)) for n, k in kinds.items()}
    names = sorted(kinds, key=lambda n: -kinds[n].weight)
    i = 0
    while sum(counts.values()) < cases:
        counts[names[i % len(names)]] += 1
        i += 1
    return counts


def campaign(cases: int, seed: int, kinds: dict[str, Kind] | None = None,
             time_limit: float = TIME_LIMIT_S, keep: Path | None = None,
             progress: bool = False, per_kind: dict[str, int] | None = None
             ) -> dict[str, Tally]:
    """Run ``cases`` cases (shared out by weight, or ``per_kind``) and tally them per kind.

    Args:
        keep: copy the input folder of every crashing case here (for a regression test).
    """
    kinds = kinds or all_kinds()
    counts = per_kind or plan(kinds, cases)
    tallies: dict[str, Tally] = {}
    with tempfile.TemporaryDirectory(prefix="ecgqa-fuzz-") as tmp:
        base = Path(tmp)
        for name in counts:                  # before the cap: setups may import torch
            (base / f"{name}-setup").mkdir()
            if kinds[name].setup is not None:
                kinds[name].setup(base / f"{name}-setup")
        with address_space_cap():
            for name, n in counts.items():
                tally = tallies.setdefault(name, Tally())
                bar = _bar(n, name, progress)
                for i in range(n):
                    o = run_case(kinds[name], seed, i, base, base / f"{name}-setup",
                                 time_limit, keep)
                    tally.add(o)
                    bar.update(1)
                    if o.status == "crashed" and progress:
                        bar.write(f"CRASH {name}[{i}] seed {o.seed}: {o.label}: {o.detail}")
                bar.close()
    return tallies


@contextlib.contextmanager
def address_space_cap(extra_gb: float = ADDRESS_SPACE_GB):
    """Cap this process's virtual memory at its current size plus ``extra_gb`` (restored on
    exit), so a case that tries a multi-GB allocation gets a MemoryError, which counts as a
    crash, instead of the kernel's out-of-memory killer ending the campaign."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as fh:
        vm = int(fh.read().split()[0]) * resource.getpagesize()
    cap = vm + int(extra_gb * 2**30)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield cap
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _bar(n: int, name: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=n, desc=f"fuzz {name}", unit="case", disable=not progress,
                file=sys.stderr, leave=False)


def run_case(kind: Kind, seed: int, index: int, base: Path, shared: Path,
             time_limit: float = TIME_LIMIT_S, keep: Path | None = None) -> Outcome:
    """Make and run case ``index`` of ``kind`` in a fresh folder under ``base``."""
    s = case_seed(seed, kind.name, index)
    work = base / f"{kind.name}-{index}"
    work.mkdir()
    (work / ".setup").symlink_to(shared, target_is_directory=True)
    t0 = time.perf_counter()
    try:
        case = kind.make(random.Random(s), work)
    except Exception as err:                     # noqa: BLE001 - a harness bug, not a crash
        raise RuntimeError(f"fuzz kind {kind.name} could not make case {index} "
                           f"(seed {s})") from err
    status, detail = execute(case, time_limit)
    o = Outcome(kind.name, index, s, case.label, status, detail, time.perf_counter() - t0)
    if status == "crashed" and keep is not None:
        dest = keep / f"{kind.name}-{index}-{s}"
        shutil.rmtree(dest, ignore_errors=True)
        try:
            shutil.copytree(work, dest, symlinks=True)
        except (OSError, shutil.Error) as err:      # a FIFO, a socket: keep what copied
            dest.mkdir(parents=True, exist_ok=True)
            detail += f" (kept partly: {type(err).__name__})"
        (dest / "CRASH.txt").write_text(f"{case.label}\n{detail}\n",
                                        errors="backslashreplace")
    shutil.rmtree(work, ignore_errors=True)
    return o


def format_table(tallies: dict[str, Tally]) -> str:
    """Per kind: cases run, read, refused, crashed (and the total)."""
    lines = [f"{'kind':<16} {'run':>6} {'read':>6} {'refused':>8} {'crashed':>8} {'s/case':>7}"]
    tot = Tally()
    for name, t in tallies.items():
        lines.append(f"{name:<16} {t.run:>6} {t.read:>6} {t.refused:>8} {t.crashed:>8} "
                     f"{t.seconds / max(1, t.run):>7.3f}")
        tot.run += t.run
        tot.read += t.read
        tot.refused += t.refused
        tot.crashed += t.crashed
        tot.seconds += t.seconds
    lines.append(f"{'all':<16} {tot.run:>6} {tot.read:>6} {tot.refused:>8} {tot.crashed:>8} "
                 f"{tot.seconds / max(1, tot.run):>7.3f}")
    return "\n".join(lines)
