"""How many cores this process may use, and how many worker processes to start for independent jobs."""
from __future__ import annotations

import os

NESTED_WORKERS = True  # False in evaluate's worker processes (`no_nested_workers`): the cores are shared out already


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it, else the machine's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def parallel_workers(limit: int) -> int:
    """Workers for `limit` independent single-threaded jobs: up to one per core where there are more
    than 2 cores, else 1 (on a shared 2-core machine extra workers only compete with other work), and
    1 inside a process that is itself one of several evaluation workers (NESTED_WORKERS).

    Used for a probe's CV folds and the geometry bootstrap; each worker does the same arithmetic as
    the serial loop, so results do not depend on it (tests/test_probes.py, tests/test_geometry.py).
    """
    cores = available_cores()
    return max(1, min(limit, cores)) if cores > 2 and NESTED_WORKERS else 1


def no_nested_workers() -> None:
    """Called first in a worker process of an evaluation pool: its cores are already shared out, so it
    starts no pools of its own (`parallel_workers` then returns 1)."""
    global NESTED_WORKERS
    NESTED_WORKERS = False
