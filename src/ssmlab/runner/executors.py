"""Executors: where the tasks of a sweep run. All yield (task, outcome) as runs finish, in any
order; the sweep commits each outcome as it arrives.

    serial  in this process, one after another (debugging, tests, tiny sweeps)
    local   a local process pool (joblib's loky), `workers` processes, one torch thread each
    dask    a Dask distributed cluster: `scheduler` = "tcp://HOST:PORT", or "local" to start a
            LocalCluster on 127.0.0.1 with `workers` single-threaded worker processes.
            Dask is an optional extra (pip install 'ssmlab[dask]'), imported only here.

Every executor runs the same `ssmlab.runner.worker.execute`, which seeds and pins threads, so a
run's result does not depend on where it ran.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

from ssmlab.errors import UserError
from ssmlab.runner.worker import crashed_outcome, execute

EXECUTORS = ("serial", "local", "dask")
Task = dict[str, Any]


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def run_serial(tasks: list[Task]) -> Iterator[tuple[Task, dict[str, Any]]]:
    for t in tasks:
        yield t, execute(t)


def run_local(tasks: list[Task], workers: int) -> Iterator[tuple[Task, dict[str, Any]]]:
    from concurrent.futures import as_completed

    from joblib.externals.loky import get_reusable_executor

    # same size every time, so that `reproduce` reuses one pool (and its imports) across
    # experiments; idle workers exit after `timeout` seconds. loky warns when an idle worker
    # exits (or is recycled for memory growth) while tasks are queued; it replaces the worker
    # and the tasks still run, so the warning is noise here (a worker that really dies
    # surfaces as a failed run below).
    warnings.filterwarnings("ignore", message="A worker stopped while some jobs were given",
                            category=UserWarning)
    ex = get_reusable_executor(max_workers=workers, timeout=300)
    futures = {ex.submit(execute, t): t for t in tasks}
    try:
        for fut in as_completed(futures):
            t = futures[fut]
            try:
                out = fut.result()
            except Exception as e:  # the worker process died (killed, OOM, broken pool)
                out = crashed_outcome(t, e)
            yield t, out
    finally:
        for fut in futures:
            fut.cancel()


def _dask_client(scheduler: str | None, workers: int) -> tuple[Any, Any]:
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise UserError(
            "the dask executor needs Dask distributed: pip install 'ssmlab[dask]'"
        ) from None
    if not scheduler:
        raise UserError("--executor dask needs --scheduler tcp://HOST:PORT (or 'local')")
    if scheduler == "local":
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None)
        return Client(cluster), cluster
    try:
        return Client(scheduler, timeout="20s"), None
    except (OSError, TimeoutError, ValueError) as e:
        raise UserError(f"cannot reach Dask scheduler {scheduler!r}: {e}") from None


def run_dask(tasks: list[Task], scheduler: str | None,
             workers: int) -> Iterator[tuple[Task, dict[str, Any]]]:
    from dask.distributed import as_completed

    client, cluster = _dask_client(scheduler, workers)
    try:
        futures = []
        index = {}
        for t in tasks:
            f = client.submit(execute, t, pure=False, key=f"ssmlab-{t['run_id']}-{uuid.uuid4().hex}")
            futures.append(f)
            index[f.key] = t
        for fut in as_completed(futures):
            t = index[fut.key]
            try:
                out = fut.result()
            except Exception as e:  # worker lost, task cancelled
                out = crashed_outcome(t, e)
            yield t, out
            fut.release()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def check_executor(executor: str, workers: int | None, scheduler: str | None) -> int:
    """Validate the executor options before anything runs; return the worker count."""
    if executor not in EXECUTORS:
        raise UserError(f"unknown executor {executor!r}; executors: {', '.join(EXECUTORS)}")
    if scheduler and executor != "dask":
        raise UserError("--scheduler is only used with --executor dask")
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    if executor == "dask":
        if not scheduler:
            raise UserError("--executor dask needs --scheduler tcp://HOST:PORT (or 'local')")
        try:
            import dask.distributed  # noqa: F401
        except ImportError:
            raise UserError(
                "the dask executor needs Dask distributed: pip install 'ssmlab[dask]'"
            ) from None
    return workers


def iterate(tasks: list[Task], executor: str = "local", workers: int | None = None,
            scheduler: str | None = None) -> Iterator[tuple[Task, dict[str, Any]]]:
    workers = check_executor(executor, workers, scheduler)
    if not tasks:
        return iter(())
    if executor == "serial":
        return run_serial(tasks)
    if executor == "local":
        return run_local(tasks, workers)
    if executor == "dask":
        return run_dask(tasks, scheduler, workers)
    raise AssertionError(executor)
