"""Independent CPU-bound calls (scikit-learn fits) spread over the machine's cores.

``run_parallel(fn, calls)`` returns ``[fn(*args) for args in calls]``, in order. The first call runs
in this process and the others in spawned worker processes (one per other core), so two TF-IDF
fits on a 2-core machine take the time of one. Results equal the sequential ones: each call is
deterministic and independent. ``fn`` and its arguments must be picklable (module-level functions).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def run_parallel(fn: Callable[..., T], calls: Sequence[tuple[Any, ...]],
                 on_done: Callable[[], None] | None = None) -> list[T]:
    """``[fn(*args) for args in calls]`` on up to :func:`cores` processes; ``on_done`` after each."""
    workers = min(len(calls), cores()) - 1

    def done(result: T) -> T:
        if on_done:
            on_done()
        return result

    if workers <= 0:
        return [done(fn(*args)) for args in calls]
    ctx = multiprocessing.get_context("spawn")  # fork is unsafe once TensorFlow's threads exist
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        futures = [pool.submit(fn, *args) for args in calls[1:]]
        first = done(fn(*calls[0]))
        return [first, *(done(f.result()) for f in futures)]


@contextmanager
def side_worker() -> Iterator[ProcessPoolExecutor | None]:
    """One spawned worker process for calls beside this process's own, reused for many calls
    (spawned once); ``None`` on a single core (run the calls here)."""
    if cores() < 2:
        yield None
        return
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool
