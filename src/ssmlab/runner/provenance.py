"""Provenance of a sweep: which code ran it (package version, git commit) and how.

Worker-side facts (host, torch version, threads, pid) come from `worker.worker_provenance`; the
two are merged into every stored run.
"""

from __future__ import annotations

import functools
import socket
import subprocess
from pathlib import Path
from typing import Any

import ssmlab


@functools.cache
def git_commit() -> str | None:
    """HEAD of the git checkout holding the ssmlab sources, if any (None when installed)."""
    src = Path(ssmlab.__file__).resolve().parent
    try:
        top = subprocess.run(["git", "-C", str(src), "rev-parse", "--show-toplevel"],
                             capture_output=True, text=True, timeout=5)
        if top.returncode != 0 or not src.is_relative_to(Path(top.stdout.strip()).resolve()):
            return None
        head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return head.stdout.strip() or None if head.returncode == 0 else None


def sweep_provenance(executor: str, workers: int, scheduler: str | None) -> dict[str, Any]:
    return {
        "ssmlab": ssmlab.__version__,
        "git_commit": git_commit(),
        "executor": executor,
        "workers": workers,
        "scheduler": scheduler,
        "submit_host": socket.gethostname(),
    }
