"""Replace a whole directory in one step: build the new tree beside it, then swap it in.

Why. `ssmlab report` used to delete results/report/figures/ and copy the figures back in place,
so concurrent calls deleted each other's files (FileNotFoundError, 'Directory not empty'), and a
reader — or a writer killed mid-way — saw a half-built report. Now the writer builds the complete
tree in a fresh sibling directory (`make_temp_dir`: results/.report-<pid>-<host>-<random>, on the
same file system, so a rename can move it) and `replace_dir` swaps it in.

Mechanism. rename(2) — `os.replace` — cannot replace a non-empty directory, so it is not enough.
On Linux, renameat2(2) with RENAME_EXCHANGE (kernel >= 3.15, glibc >= 2.28; ext4, xfs, btrfs,
tmpfs, overlayfs and most local file systems) swaps two paths atomically. It is called through
ctypes (libc `renameat2`, AT_FDCWD). At every instant `report` names either the complete old tree
or the complete new one; afterwards the old tree sits under the temporary name and is deleted.
Concurrent writers each exchange their own temporary tree, so the last exchange wins and no writer
ever touches a file of another's tree. A reader opening a file by path gets it whole, from one
version (a reader that opens index.html and then a figure does two lookups and may span two
complete versions, which hold the same figures when the store has not changed).

The other sound mechanism — results/report as a symlink to a versioned directory, replaced with
`os.replace` of a new symlink — was not chosen: it needs a non-atomic migration of the real
report/ directory that older versions wrote, turns `results/report` into a symlink (unreliable on
Windows and in synced folders, surprising in `cp -r` / `tar`), and leaves the old versions to be
garbage-collected while readers may still be inside them. The exchange keeps report/ a plain
directory.

Fallback where the exchange is unavailable (macOS, Windows, old kernels, file systems that refuse
it such as some network mounts): rename the old tree aside, then rename the new one in. Each step
is atomic and a writer that finds a concurrent writer's tree in the way retries, so concurrent
calls still never crash or mix files; but between the two renames the folder is missing (a
reader polling during 3 concurrent writers x 30 rounds missed it in ~1% of its reads), and a
writer killed exactly there leaves the previous report under its temporary name. (macOS's
renamex_np(RENAME_SWAP) would close that window there; not wired in, as it is untested here.)

Temporary trees left by killed writers are removed by later calls (`clean_stale`): a tree is stale
when its writer's pid, on this host, is no longer alive, or when it has not been modified for
`STALE_AFTER_S` (which also covers trees from other hosts sharing the folder and reused pids).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import os
import re
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

STALE_AFTER_S = 3600.0  # a temporary tree untouched for this long is abandoned, whoever owns it
_MAX_TRIES = 1000  # swap attempts before giving up (each retry means a concurrent writer won)
_AT_FDCWD = -100  # <fcntl.h>: paths relative to the working directory
_RENAME_EXCHANGE = 2  # <linux/fs.h>
# errno values meaning "this kernel / libc / file system cannot exchange": use the fallback
_NO_EXCHANGE = {errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP}


@functools.cache
def _host_tag() -> str:
    """8 hex of the host name: a pid is only meaningful on its own host."""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _temp_re(target: Path) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(target.name)}-(\d+)-([0-9a-f]{{8}})-[0-9a-f]{{12}}")


def temp_path(target: Path) -> Path:
    """A fresh sibling name for `target`: .<name>-<pid>-<host tag>-<random>."""
    return target.with_name(f".{target.name}-{os.getpid()}-{_host_tag()}-{uuid.uuid4().hex[:12]}")


def make_temp_dir(target: Path) -> Path:
    """Create an empty temporary directory beside `target`, owned by this process."""
    path = temp_path(target)
    path.mkdir(parents=True)
    return path


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """libc's renameat2, or None where there is none (not Linux, glibc < 2.28, musl < 1.2.2)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap the paths `a` and `b` (both must exist; any file types). Return False when
    the platform or file system cannot exchange; raise OSError (FileNotFoundError when one of
    them is missing) for any other failure."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in _NO_EXCHANGE:
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _swap_in(new: Path, target: Path) -> list[Path]:
    """Put the tree `new` at `target`; return the paths where previous trees now lie (to be
    removed by the caller): `new` itself after an exchange, an aside name in the fallback."""
    olds: list[Path] = []
    for _ in range(_MAX_TRIES):
        try:
            if exchange(new, target):
                return [*olds, new]
            use_fallback = True
        except FileNotFoundError:
            if not new.exists():
                raise
            use_fallback = False  # no target yet (or a fallback writer just moved it aside)
        aside = None
        if use_fallback and os.path.lexists(target):
            aside = temp_path(target)
            try:
                os.rename(target, aside)
            except FileNotFoundError:
                continue  # a concurrent writer moved it first
            olds.append(aside)
        try:
            os.rename(new, target)  # fails if a concurrent writer put its tree there meanwhile
            return olds
        except OSError as e:
            if aside is not None and not os.path.lexists(target):
                try:  # never leave the folder missing because of us
                    os.rename(aside, target)
                    olds.remove(aside)
                except OSError:
                    pass
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise
        except BaseException:  # interrupted in the fallback's window: put the old one back
            if aside is not None and not os.path.lexists(target):
                try:
                    os.rename(aside, target)
                except OSError:
                    pass
            raise
    raise OSError(f"could not move {new} to {target}: other writers kept replacing it")


def remove_tree(path: Path) -> None:
    """Delete a tree (or a file / symlink) that may be disappearing under us: errors are left to
    `clean_stale`."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def replace_dir(new: Path, target: Path) -> None:
    """Make the complete tree `new` appear at `target` atomically and delete the previous one."""
    for old in _swap_in(new, target):
        remove_tree(old)


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":  # os.kill would terminate the process on Windows: rely on the age
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def clean_stale(target: Path, max_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove temporary trees beside `target` whose writer died (its pid, on this host, is gone)
    or that nobody modified for `max_age_s`; return what was removed. A live writer's tree is
    kept: its pid is alive and its top folder was modified moments before its swap."""
    removed = []
    pattern = _temp_re(target)
    try:
        entries = list(target.parent.iterdir())
    except FileNotFoundError:
        return removed
    now = time.time()
    for p in entries:
        m = pattern.fullmatch(p.name)
        if m is None:
            continue
        try:
            age = now - p.lstat().st_mtime
        except FileNotFoundError:
            continue
        dead = m.group(2) == _host_tag() and not _pid_alive(int(m.group(1)))
        if dead or age > max_age_s:
            remove_tree(p)
            removed.append(p)
    return removed
