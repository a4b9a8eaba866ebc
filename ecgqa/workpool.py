"""Map a function over jobs in worker processes (or in this process), results in order."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor


def ordered_map(fn: Callable, jobs: Sequence, workers: int, *, min_jobs: int = 16,
                chunksize: int = 8) -> Iterator:
    """``fn(job)`` for every job, in order: in ``workers`` processes, or here when
    ``workers <= 1`` or there are fewer than ``min_jobs`` jobs (a pool costs more).

    The pool is shut down (pending jobs cancelled) when the caller stops iterating or
    raises, so an interrupted run leaves no worker behind.
    """
    if workers <= 1 or len(jobs) < min_jobs:
        yield from map(fn, jobs)
        return
    pool = ProcessPoolExecutor(max_workers=workers)
    try:
        results: Iterable = pool.map(fn, jobs, chunksize=chunksize)
        yield from results
    finally:
        pool.shutdown(cancel_futures=True)
