"""Run one independent job per trajectory over a process pool, with a progress bar: the researcher commands' `--jobs`.

    for traj_id, result in run_jobs(verify_one, ids, jobs=4, setup=settings.open_store, label="verify"):
        ...

`fn(context, item)` runs in a worker process (a top-level function, so it pickles); `context` is what `setup()`
returned in that worker, once per worker (the store, a speech recogniser: things that are slow to make or do not
pickle). Results come back in the order of `items`, whatever order the workers finish in, so a command's report and
files are the same for any `jobs`; at most 2 * jobs results wait to be taken (an episode can be large). `jobs=1`
runs everything in this process, without a pool.

The progress bar (tqdm) goes to stderr, only when stderr is a terminal and not `quiet`.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_CONTEXT: dict[str, Any] = {}
_END: Any = object()


def default_jobs() -> int:
    """All cores this process may run on (a container's or `taskset`'s limit, where there is one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def add_jobs_arguments(p: argparse.ArgumentParser, progress: bool = True) -> None:
    """`--jobs N` (default: all cores) and, with `progress`, `--quiet` (no progress bar)."""
    p.add_argument(
        "--jobs",
        type=int,
        default=default_jobs(),
        help=f"trajectories processed at once, one process each (default: all cores, here {default_jobs()})",
    )
    if progress:
        p.add_argument("--quiet", action="store_true", help="no progress bar")


def progress_bar(total: int, label: str, quiet: bool = False, unit: str = "traj"):
    """A tqdm bar on stderr, disabled when stderr is not a terminal or `quiet`."""
    from tqdm import tqdm

    return tqdm(total=total, desc=label, unit=unit, file=sys.stderr, disable=quiet or not sys.stderr.isatty())


def _identity(value: T) -> T:
    return value


def constant(value: T) -> Callable[[], T]:
    """A `setup` that gives every worker `value` (inherited when the pool forks, else pickled)."""
    return functools.partial(_identity, value)


def _init(setup: Callable[[], Any] | None) -> None:
    # One BLAS thread in each worker: the pool already gives every core a job, and OpenBLAS would start a thread per
    # core in every worker for numpy's matrix products (the T-REX observations' resize). Measured (docs/benchmarks.md,
    # the pipeline): two jobs then took 1.5x the CPU of one, and ran 1.3x faster instead of 1.7x.
    from threadpoolctl import threadpool_limits

    _CONTEXT["blas"] = threadpool_limits(limits=1, user_api="blas")
    _CONTEXT["ctx"] = setup() if setup is not None else None


def _call(fn: Callable[[Any, T], R], item: T) -> R:
    return fn(_CONTEXT["ctx"], item)


def run_jobs(
    fn: Callable[[Any, T], R],
    items: Iterable[T],
    jobs: int = 1,
    setup: Callable[[], Any] | None = None,
    label: str = "",
    quiet: bool = False,
    context: Any = None,
) -> Iterator[tuple[T, R]]:
    """(item, fn(context, item)) for every item, in order; `jobs` worker processes (at most one per item).

    With one job, `context` (if given) is used as is instead of calling `setup`. An exception raised by `fn` is
    raised here, at its item: catch the expected ones inside `fn` and return them.
    """
    items = list(items)
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    with progress_bar(len(items), label, quiet) as bar:
        if jobs == 1 or len(items) <= 1:
            ctx = context if context is not None else (setup() if setup is not None else None)
            for item in items:
                result = fn(ctx, item)
                bar.update(1)
                yield item, result
            return
        with ProcessPoolExecutor(max_workers=min(jobs, len(items)), initializer=_init, initargs=(setup,)) as pool:
            # at most 2 * jobs items in flight or finished and not yet taken: a result may be large (an episode)
            pending: deque[tuple[T, Future]] = deque()
            todo = iter(items)
            try:
                while True:
                    while len(pending) < 2 * jobs:
                        item = next(todo, _END)
                        if item is _END:
                            break
                        f = pool.submit(_call, fn, item)
                        f.add_done_callback(lambda _f: bar.update(1))
                        pending.append((item, f))
                    if not pending:
                        break
                    item, f = pending.popleft()
                    yield item, f.result()
            except BaseException:
                for _, f in pending:
                    f.cancel()
                raise


def report_jobs(
    fn: Callable[[Any, T], tuple[bool, str]],
    items: Iterable[T],
    args: argparse.Namespace,
    setup: Callable[[], Any] | None,
    label: str,
    context: Any = None,
) -> int:
    """run_jobs for a command whose `fn` returns (ok, report line): print each line in order; the number not ok."""
    failed = 0
    for _, (ok, line) in run_jobs(fn, items, args.jobs, setup, label, args.quiet, context=context):
        failed += not ok
        print(line, flush=True)
    return failed
