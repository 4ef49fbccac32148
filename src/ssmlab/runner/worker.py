"""What runs inside a worker: one (cell, seed) of one experiment, isolated and deterministic.

A task is a plain dict (picklable by every executor): the experiment's id and module, the config
as JSON, the cell's params and the seed. `execute(task)` imports the module (which registers the
experiment), rebuilds the config, pins torch to one thread, seeds torch / numpy / random from
`split_seed(seed, "init")` and calls `Experiment.run`. Whatever happens, it returns an outcome
dict; an exception becomes status "failed" with its traceback (a result, not a crash of the
sweep). The parent process, never the worker, writes the store.
"""

from __future__ import annotations

import importlib
import os
import platform
import random
import socket
import sys
import time
import traceback
from typing import Any

from ssmlab.runner.store import now_iso, to_jsonable

_MAX_ERROR = 4000


IN_POOL_WORKER = False  # True in a local pool's worker process (see init_pool_worker)
WATCH_INTERVAL = 0.25  # seconds between two looks at the parent process


def init_pool_worker(sweep_pid: int) -> None:
    """Initializer of a local pool's worker processes: exit as soon as the parent dies.

    A loky worker outlives a parent killed with SIGKILL (it idles up to its timeout, 300 s,
    holding its memory: ~1.8 GB for a paper-scale run). A daemon thread polls os.getppid():
    when the parent dies the worker is re-parented (to init or a subreaper), the value
    changes, and the worker exits at once. loky starts workers directly from the sweep's
    process (`sweep_pid`, checked here); the thread watches the actual parent either way.

    Why not prctl(PR_SET_PDEATHSIG): Linux sends that signal when the *thread* that forked
    the worker exits, not the process. loky forks workers from whichever thread submits (or
    from its manager thread), so a sweep run from a short-lived thread would have its
    healthy workers killed. Polling costs nothing measurable and works on every POSIX system;
    it only waits for the GIL between two Python bytecodes (numba / torch kernels release
    it or return within milliseconds)."""
    import threading

    global IN_POOL_WORKER
    IN_POOL_WORKER = True
    parent = os.getppid()
    if parent != sweep_pid and parent == 1:  # the sweep already died before we started
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(WATCH_INTERVAL)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="ssmlab-parent-watch", daemon=True).start()


def seed_everything(seed: int) -> None:
    """Global RNGs from the run seed's 'init' stream (experiments should still use their own
    generators; this makes any global-RNG use deterministic too)."""
    import numpy as np
    import torch

    from ssmlab.seeding import split_seed

    s = split_seed(seed, "init")
    torch.manual_seed(s)
    np.random.seed(s % (2**32))  # noqa: NPY002 - seeds legacy global-RNG users on purpose
    random.seed(s)


def worker_provenance() -> dict[str, Any]:
    import torch

    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(terse=True),
    }


def _resolve(task: dict[str, Any]) -> Any:
    from ssmlab.experiment import REGISTRY

    module = task.get("module")
    if module and module != "__main__":
        importlib.import_module(module)
    cls = REGISTRY.get(task["experiment"])
    if cls is None:
        from ssmlab.runner.registry import load_registry

        cls = load_registry().get(task["experiment"])
    if cls is None:
        raise LookupError(f"experiment {task['experiment']!r} is not registered in this worker "
                          f"(module {module!r}; set SSMLAB_PLUGINS for plugin experiments)")
    return cls


def _pin_numba(threads: int | None) -> int | None:
    """Numba's parallel kernels get the same thread budget as torch (when numba is loaded by
    the experiment's imports); returns the previous count so it can be restored."""
    nb = sys.modules.get("numba")
    if nb is None or threads is None:
        return None
    try:
        prev = nb.get_num_threads()
        if prev != threads:
            nb.set_num_threads(min(threads, nb.config.NUMBA_NUM_THREADS))
        return prev
    except Exception:  # pragma: no cover - threading layer unavailable
        return None


def execute(task: dict[str, Any]) -> dict[str, Any]:
    """Run one task; never raises for errors of the experiment itself."""
    import torch

    from ssmlab.records import RunResult, SkipRun

    started = now_iso()
    t0 = time.perf_counter()
    prev_threads = torch.get_num_threads()
    threads = int(task.get("threads", 1))
    out: dict[str, Any]
    try:
        if prev_threads != threads:
            torch.set_num_threads(threads)
        cls = _resolve(task)
        numba_prev = _pin_numba(threads)
        cfg = cls.Config.model_validate(task["config"])
        seed_everything(int(task["seed"]))
        prov = worker_provenance()
        try:
            res = cls().run(cfg, dict(task["params"]), int(task["seed"]))
        except SkipRun as skip:  # missing data, an inapplicable cell: stored as skipped
            res = RunResult(status="skipped", reason=str(skip))
        if not isinstance(res, RunResult):
            raise TypeError(f"{cls.__name__}.run returned {type(res).__name__}, not RunResult")
        if res.status not in ("ok", "diverged", "skipped", "failed"):
            raise ValueError(f"{cls.__name__}.run returned unknown status {res.status!r}")
        out = {
            "status": res.status,
            "metrics": to_jsonable(res.metrics),
            "history": to_jsonable(res.history),
            "info": to_jsonable(res.info),
            "reason": res.reason or "",
            "error": res.reason if res.status == "failed" else "",
        }
    except Exception as e:
        tb = traceback.format_exc()
        msg = f"{type(e).__name__}: {e}"
        out = {"status": "failed", "metrics": {}, "history": {}, "info": {}, "reason": msg[:500],
               "error": tb[-_MAX_ERROR:]}
        try:
            prov = worker_provenance()
        except Exception:  # pragma: no cover - provenance must never mask the real error
            prov = {"host": socket.gethostname(), "pid": os.getpid()}
    finally:
        if torch.get_num_threads() != prev_threads:
            torch.set_num_threads(prev_threads)
        _pin_numba(locals().get("numba_prev"))
    out["seconds"] = time.perf_counter() - t0
    out["started"] = started
    out["finished"] = now_iso()
    out["provenance"] = prov
    return out


def crashed_outcome(task: dict[str, Any], err: BaseException | str) -> dict[str, Any]:
    """Outcome for a task whose worker died (killed, out of memory) or was lost."""
    msg = err if isinstance(err, str) else f"{type(err).__name__}: {err}"
    return {"status": "failed", "metrics": {}, "history": {}, "info": {},
            "reason": " ".join(f"worker died: {msg}".split())[:500],
            "error": str(msg)[-_MAX_ERROR:],
            "seconds": 0.0, "started": None, "finished": now_iso(),
            "provenance": {"host": socket.gethostname(), "python": sys.version.split()[0]}}
