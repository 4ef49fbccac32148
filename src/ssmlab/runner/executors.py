"""Executors: where the tasks of a sweep run. Each is a `Pool` fed incrementally (the sweep
submits a task whenever a worker is idle, so that sweeps sharing a store can split the work as
they lease it) that returns (task, outcome) pairs as runs finish, in any order; the sweep
commits each outcome as it arrives. `iterate` runs a fixed list of tasks the same way.

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
import time
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


class Pool:
    """Where a sweep's tasks run, fed incrementally: the sweep submits a task whenever `free()`
    says a worker is idle (so that several sweeps on one store can split the work as they
    claim it) and `collect`s outcomes as they arrive. Use as a context manager."""

    def free(self) -> int:
        """How many more tasks may be submitted now."""
        raise NotImplementedError

    def busy(self) -> int:
        """Tasks submitted whose outcome has not been collected yet."""
        raise NotImplementedError

    def submit(self, task: Task) -> None:
        raise NotImplementedError

    def collect(self, timeout: float) -> list[tuple[Task, dict[str, Any]]]:
        """Outcomes that arrived, waiting up to `timeout` s for the first one."""
        raise NotImplementedError

    def close(self) -> None:
        """Cancel what has not started; keep reusable workers."""

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SerialPool(Pool):
    """In this process: `collect` runs the one submitted task."""

    def __init__(self) -> None:
        self.queue: list[Task] = []

    def free(self) -> int:
        return 1 - len(self.queue)

    def busy(self) -> int:
        return len(self.queue)

    def submit(self, task: Task) -> None:
        self.queue.append(task)

    def collect(self, timeout: float) -> list[tuple[Task, dict[str, Any]]]:
        if not self.queue:
            return []
        t = self.queue.pop(0)
        return [(t, execute(t))]


class LocalPool(Pool):
    """joblib's loky process pool, `workers` processes with one torch thread each.

    A worker that dies (killed, out of memory) breaks a loky pool: every task in flight then
    fails with TerminatedWorkerError, the healthy ones included. Those tasks are suspects, not
    failures: each is rerun alone on a fresh pool, and only one that breaks the pool again
    while it runs alone is stored as failed, "worker died: ..." (it ran twice; a worker killed
    from outside once costs no run). Healthy runs complete normally. Workers watch their parent and exit when it dies
    (`worker.init_pool_worker`), so a killed sweep leaves no process holding memory."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.futures: dict[Any, Task] = {}
        self.suspects: list[Task] = []  # run one at a time after a break
        self.alone = False  # the task in flight runs alone (identifying a killer)

    def _executor(self) -> Any:
        from joblib.externals.loky import get_reusable_executor

        from ssmlab.runner.worker import init_pool_worker

        # same size and initializer every time, so that `reproduce` reuses one pool (and its
        # imports) across experiments; idle workers exit after `timeout` seconds. loky warns
        # when an idle worker exits (or is recycled for memory growth) while tasks are queued;
        # it replaces the worker and the tasks still run, so the warning is noise here.
        warnings.filterwarnings("ignore", message="A worker stopped while some jobs were given",
                                category=UserWarning)
        return get_reusable_executor(max_workers=self.workers, timeout=300,
                                     initializer=init_pool_worker, initargs=(os.getpid(),))

    def free(self) -> int:
        if self.suspects or self.alone:
            return 0
        return self.workers - len(self.futures)

    def busy(self) -> int:
        return len(self.futures) + len(self.suspects)

    def submit(self, task: Task) -> None:
        self.futures[self._executor().submit(execute, task)] = task

    def collect(self, timeout: float) -> list[tuple[Task, dict[str, Any]]]:
        from concurrent.futures import FIRST_COMPLETED, wait

        if not self.futures and self.suspects:
            self.alone = True
            self.submit(self.suspects.pop(0))
        if not self.futures:
            return []
        done, _ = wait(list(self.futures), timeout=timeout, return_when=FIRST_COMPLETED)
        out, broken = self._outcomes(done)
        if broken:
            # the pool is broken: every other task in flight fails the same way, promptly
            rest, _ = wait(list(self.futures), timeout=60)
            more, more_broken = self._outcomes(rest)
            out += more
            broken += more_broken
            for fut in list(self.futures):  # pragma: no cover - loky always fails them
                broken.append((self.futures.pop(fut), RuntimeError("lost in a broken pool")))
            if self.alone:  # it broke a fresh pool running alone: it is the killer
                out += [(t, crashed_outcome(t, err)) for t, err in broken]
            else:
                self.suspects += [t for t, _ in broken]
        if not self.futures:
            self.alone = False
        return out

    def _outcomes(self, done: Any) -> tuple[list[tuple[Task, dict[str, Any]]],
                                            list[tuple[Task, BaseException]]]:
        from joblib.externals.loky.process_executor import BrokenProcessPool

        out, broken = [], []
        for fut in done:
            t = self.futures.pop(fut)
            try:
                out.append((t, fut.result()))
            except BrokenProcessPool as e:
                broken.append((t, e))
            except Exception as e:  # e.g. a result that cannot be unpickled
                out.append((t, crashed_outcome(t, e)))
        return out, broken

    def close(self) -> None:
        for fut in self.futures:
            fut.cancel()
        self.futures.clear()
        self.suspects.clear()


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


class DaskPool(Pool):
    """A Dask cluster. A remote scheduler is connected to when the pool is made (before the
    sweep writes anything, so that an unreachable one leaves the store untouched); a
    `--scheduler local` cluster starts at the first task. The pool keeps as many tasks in
    flight as the cluster has worker threads (`workers` for a local cluster). Dask itself
    retries a task whose worker died and fails it (KilledWorker) after repeated deaths."""

    def __init__(self, scheduler: str | None, workers: int) -> None:
        self.scheduler, self.workers = scheduler, workers
        self.client: Any = None
        self.cluster: Any = None
        self.slots = workers
        self.futures: dict[Any, Task] = {}
        if scheduler != "local":
            self._connect()

    def _connect(self) -> None:
        if self.client is None:
            self.client, self.cluster = _dask_client(self.scheduler, self.workers)
            if self.cluster is None:
                threads = sum(self.client.nthreads().values())
                self.slots = max(1, int(threads))

    def free(self) -> int:
        return self.slots - len(self.futures)

    def busy(self) -> int:
        return len(self.futures)

    def submit(self, task: Task) -> None:
        self._connect()
        f = self.client.submit(execute, task, pure=False,
                               key=f"ssmlab-{task['run_id']}-{uuid.uuid4().hex}")
        self.futures[f] = task

    def collect(self, timeout: float) -> list[tuple[Task, dict[str, Any]]]:
        # polls rather than distributed.wait, which uses the *default* client
        deadline = time.monotonic() + timeout
        while self.futures:
            done = [f for f in self.futures if f.done()]
            if done or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        else:
            return []
        out = []
        for f in done:
            t = self.futures.pop(f)
            try:
                o = f.result()
            except Exception as e:  # worker lost repeatedly (KilledWorker), task cancelled
                o = crashed_outcome(t, e)
            out.append((t, o))
            f.release()
        return out

    def close(self) -> None:
        for f in self.futures:
            f.cancel()
        self.futures.clear()
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        self.client = self.cluster = None


def probe_scheduler(scheduler: str, timeout: float = 5.0) -> None:
    """A quick TCP connection to a `tcp://` / `tls://` scheduler address (Dask's client would
    retry for 20 s before failing); other protocols are left to the client."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(scheduler if "://" in scheduler else f"tcp://{scheduler}")
    if url.scheme not in ("tcp", "tls"):
        return
    try:
        host, port = url.hostname, url.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise UserError(f"Dask scheduler address {scheduler!r} is not tcp://HOST:PORT")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise UserError(f"cannot reach Dask scheduler {scheduler!r}: "
                        f"{e.strerror or type(e).__name__}") from None


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


def open_pool(executor: str, workers: int, scheduler: str | None) -> Pool:
    """The pool of a validated executor (see `check_executor`). A remote Dask scheduler is
    connected to here: an unreachable one raises UserError before anything else happens."""
    if executor == "serial":
        return SerialPool()
    if executor == "local":
        return LocalPool(workers)
    if executor == "dask":
        return DaskPool(scheduler, workers)
    raise AssertionError(executor)


def iterate(tasks: list[Task], executor: str = "local", workers: int | None = None,
            scheduler: str | None = None) -> Iterator[tuple[Task, dict[str, Any]]]:
    """All `tasks`, (task, outcome) in the order they finish (no leases: a plain batch)."""
    workers = check_executor(executor, workers, scheduler)
    if not tasks:
        return iter(())
    return _iterate(list(tasks), open_pool(executor, workers, scheduler))


def _iterate(tasks: list[Task], pool: Pool) -> Iterator[tuple[Task, dict[str, Any]]]:
    with pool:
        while tasks or pool.busy():
            while tasks and pool.free() > 0:
                pool.submit(tasks.pop(0))
            yield from pool.collect(timeout=1.0)
