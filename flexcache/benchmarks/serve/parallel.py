"""The serving simulator's independent jobs on every core: one system at one budget each, and the measurements.

A simulated run is one Python thread replaying requests through the engine;
runs of different systems (or budgets) share nothing but the trace, the
memoized vectors and prompt splits, and the entry sizes. `run_jobs` forks
one worker process per core after those are in place, so each worker
inherits them (nothing large is pickled), and runs the jobs longest first on
one torch and one FAISS thread each. Each job builds its own `FlexCache`, so
the results are those of running the jobs one after another.

`beside` runs one job in a forked process while the caller goes on (the
entry sizes are measured while the prompts are split).

Forking is what makes this cheap, so it is used only where it is safe
(Linux: `fork` start method); elsewhere, and with ``processes=1``, the jobs
run in this process, in order.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

# A job takes `tick`, called once per request it serves (progress), and returns its (picklable) result.
Job = Callable[[Callable[[], None]], Any]

# The jobs of the pool being run and their request counters: forked workers find them here, so a job
# (a closure over the trace and the embedder) is never pickled, only its index.
_JOBS: list[Job] = []
_SERVED: Any = None
_BESIDE: dict[int, Callable[[], Any]] = {}  # `beside`'s calls, by number, for the same reason
_TARGET: Callable[..., Any] | None = None  # what `forked_calls` workers call


def can_fork() -> bool:
    """Whether jobs can run in forked workers here (Linux; `fork` elsewhere is unsafe or missing)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def default_processes() -> int:
    """One worker per CPU this process may run on; 1 where workers cannot be forked."""
    if not can_fork():
        return 1
    return max(1, len(os.sched_getaffinity(0)))


def run_jobs(jobs: Sequence[Job], *, processes: int, weights: Sequence[float] | None = None,
             on_progress: Callable[[int], None] | None = None) -> list[Any]:
    """Each job's result, in the order of `jobs`.

    Args:
        jobs: the jobs; each is called with a `tick` to call once per request served.
        processes: worker processes; 1 runs the jobs here, one after another.
        weights: each job's expected cost: the heaviest start first (default: as given).
        on_progress: called with the number of requests served since its last call.
    """
    global _JOBS, _SERVED
    progress = on_progress or (lambda served: None)
    if processes <= 1 or len(jobs) <= 1 or not can_fork():
        return [job(lambda: progress(1)) for job in jobs]
    order = sorted(range(len(jobs)), key=lambda i: -weights[i]) if weights is not None else list(range(len(jobs)))
    context = multiprocessing.get_context("fork")
    _JOBS, _SERVED = list(jobs), context.RawArray("q", len(jobs))
    try:
        with ProcessPoolExecutor(min(processes, len(jobs)), mp_context=context,
                                 initializer=_one_thread_each) as pool:
            futures = {pool.submit(_run_job, index): index for index in order}
            pending, reported = set(futures), 0
            while pending:
                _, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                served = sum(_SERVED)
                progress(served - reported)
                reported = served
            results = {futures[future]: future.result() for future in futures}
    finally:
        _JOBS, _SERVED = [], None
    return [results[index] for index in range(len(jobs))]


def beside(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
    """Start ``function(*args, **kwargs)`` in a forked process (on one torch thread); its result's future.

    Where workers cannot be forked it runs here, at once. The caller should
    keep its own work to one thread meanwhile, and call ``.result()`` before
    anything that needs both cores.
    """
    if not can_fork():
        future: Future = Future()
        future.set_result(function(*args, **kwargs))
        return future
    number = len(_BESIDE)
    _BESIDE[number] = lambda: function(*args, **kwargs)
    try:
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"), initializer=_one_thread_each)
        future = pool.submit(_run_beside, number)  # the worker is forked here, with the call in `_BESIDE`
    finally:
        del _BESIDE[number]
    pool.shutdown(wait=False)  # the worker exits when its one call is done
    return future


@contextlib.contextmanager
def forked_calls(target: Callable[..., Any], processes: int) -> Iterator[Callable[..., Future]]:
    """`processes` workers forked now, on one thread each, that call `target` as the caller asks.

    Yields ``call(*args)``, which sends `args` (pickled) to a free worker and returns the future of
    ``target(*args)``. `target` itself is inherited by the workers, never pickled.
    """
    global _TARGET
    _TARGET = target
    pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork"),
                               initializer=_one_thread_each)
    try:
        pool.submit(int).result()  # every worker is forked at the first call, with `_TARGET` in place
        yield lambda *args: pool.submit(_call_target, *args)
    finally:
        pool.shutdown()
        _TARGET = None


def _call_target(*args: Any) -> Any:
    return _TARGET(*args)  # type: ignore[misc]


def _one_thread_each() -> None:
    """A worker's setup: one torch and one FAISS thread, as workers share the cores; freed memory kept."""
    import torch

    _keep_freed_memory()

    torch.set_num_threads(1)
    try:
        import faiss
    except ImportError:
        return
    faiss.omp_set_num_threads(1)


def _keep_freed_memory() -> None:
    """Have glibc's malloc keep freed blocks for reuse instead of handing each large one back to the OS.

    Blocks past its mmap threshold (32 MB at most) are mapped at each allocation and unmapped at each
    free: a 14B 720p latent's int64 noise counters are 39 MB, so the entry-size measurement page-faulted
    its memory in again at every tensor operation, 124 s of system time in 178 s (39 s with this, the
    same sizes). A worker is short-lived; it keeps its peak. No-op where malloc is not glibc's.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    mallopt(m_mmap_threshold, 1 << 30)  # blocks up to 1 GiB come from the heap
    mallopt(m_trim_threshold, 2**31 - 1)  # and freed heap memory stays there


def _run_beside(number: int) -> Any:
    return _BESIDE[number]()


def _run_job(index: int) -> Any:
    served = _SERVED

    def tick() -> None:
        served[index] += 1  # one writer per slot: this job

    return _JOBS[index](tick)
