"""Loader of the C selective-scan kernel (scan_kernel.c): build on first use, cache, ctypes.

The kernel is a plain C ABI on contiguous buffers, so it is independent of the torch version.
On first use it is compiled with the system C compiler (`$CC`, else `cc`, `gcc`, `clang`) as

    cc -O3 -march=native -ffp-contract=fast -fPIC -shared -pthread -fopenmp scan_kernel.c -lm

(without -march=native if the compiler rejects it: the kernel then uses its generic vector
code; without -fopenmp if it has no OpenMP: the kernel then starts its own pthreads). With
OpenMP the library links libgomp.so.1, which inside a PyTorch process resolves to the libgomp
PyTorch already loaded, so the kernel runs on PyTorch's OpenMP team (a separate pool would
compete with PyTorch's threads, which spin for a while after each parallel op).

into `<cache>/scan_kernel-<hash>.so`, where <cache> is `$SSMLAB_KERNEL_CACHE`, else
`$XDG_CACHE_HOME/ssmlab/kernels`, else `~/.cache/ssmlab/kernels`, and <hash> covers the source,
the command line, the compiler's version and this CPU's model and flags (so an edited source, an
other compiler or a shared cache on an other CPU gets its own build; nothing is committed to
git). The build writes a temporary file and renames it, so concurrent first calls from several
processes are safe. Build once ahead of time with
`python -c "from ssmlab.ops.selective_scan import cscan; print(cscan.status())"`. Old builds
(other hashes) are not deleted; removing the cache directory is always safe.

When no compiler is found or the build fails, `load()` returns None, one line on stderr says why
and that the Numba kernel is used instead; `SSMLAB_SCAN_KERNEL=numba` skips the C kernel
(`=c` makes a failed build an error instead).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

SOURCE = Path(__file__).with_name("scan_kernel.c")
FLAGS = ["-O3", "-march=native", "-ffp-contract=fast", "-fPIC", "-shared", "-pthread", "-fopenmp"]
# tried in order: a compiler that rejects -march=native (some clang / non-x86 toolchains) builds
# the generic vector code; one without OpenMP (Apple clang) uses the kernel's pthread pool
FLAG_FALLBACKS = [
    FLAGS,
    [f for f in FLAGS if f != "-march=native"],
    [f for f in FLAGS if f != "-fopenmp"],
    [f for f in FLAGS if f not in ("-march=native", "-fopenmp")],
]
ABI_VERSION = 2
ENV_CHOICE = "SSMLAB_SCAN_KERNEL"  # "auto" (default), "c" (required), "numba" (never C)

_LOCK = threading.Lock()
_STATE: dict[str, object] = {}  # "lib": CDLL | None, "why": str


class KernelBuildError(RuntimeError):
    """The C kernel was required (SSMLAB_SCAN_KERNEL=c) but could not be built or loaded."""


def cache_dir() -> Path:
    if os.environ.get("SSMLAB_KERNEL_CACHE"):
        return Path(os.environ["SSMLAB_KERNEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ssmlab" / "kernels"


def find_compiler() -> str | None:
    """$CC if set (and found), else the first of cc, gcc, clang on PATH; None when there is none."""
    names = [os.environ["CC"]] if os.environ.get("CC") else ["cc", "gcc", "clang"]
    for name in names:
        path = shutil.which(name.split()[0])
        if path:
            return path
    return None


def _cpu_signature() -> str:
    """CPU model + flags (the build uses -march=native), '' where /proc/cpuinfo is absent."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine() + platform.processor()
    keep = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags", "Features"))]
    return platform.machine() + "\n".join(sorted(set(keep)))


def _compiler_version(cc: str) -> str:
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def library_path(cc: str) -> Path:
    h = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(FLAGS).encode(), _compiler_version(cc).encode(),
                 _cpu_signature().encode()):  # fmt: skip
        h.update(part)
        h.update(b"\0")
    return cache_dir() / f"scan_kernel-{h.hexdigest()[:16]}.so"


def build(cc: str, target: Path) -> None:
    """Compile SOURCE into target (atomically: temporary file, then rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp.so", dir=target.parent)
    os.close(fd)
    try:
        for flags in FLAG_FALLBACKS:
            cmd = [cc, *flags, "-o", tmp, str(SOURCE), "-lm"]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if out.returncode == 0:
                break
        else:
            last = (out.stderr.strip().splitlines() or ["?"])[-1]
            raise RuntimeError(f"`{' '.join(cmd)}` failed: {last}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _declare(lib: ctypes.CDLL) -> None:
    P, L, I = ctypes.c_void_p, ctypes.c_long, ctypes.c_int  # noqa: E741,N806
    for suf in ("f32", "f64"):
        f = getattr(lib, f"ssm_scan_forward_{suf}")
        f.argtypes = [P] * 8 + [L] * 9 + [I] + [P] * 3 + [I]
        f.restype = I
        b = getattr(lib, f"ssm_scan_backward_{suf}")
        b.argtypes = [P] * 10 + [L] * 10 + [I] + [P] * 8 + [I]
        b.restype = I
    lib.ssm_abi_version.restype = I


def _load_or_build() -> tuple[ctypes.CDLL | None, str]:
    choice = os.environ.get(ENV_CHOICE, "auto").lower()
    if choice == "numba":
        return None, f"{ENV_CHOICE}=numba"
    cc = find_compiler()
    if cc is None:
        return None, "no C compiler found (set CC, or install cc / gcc / clang)"
    try:
        target = library_path(cc)
        if not target.exists():
            build(cc, target)
        lib = ctypes.CDLL(str(target))
        _declare(lib)
        if lib.ssm_abi_version() != ABI_VERSION:
            return None, f"{target} has ABI {lib.ssm_abi_version()}, expected {ABI_VERSION}"
        return lib, str(target)
    except Exception as exc:  # noqa: BLE001 - any build/load failure means: use Numba
        return None, f"building the C kernel failed: {exc}"


def load() -> ctypes.CDLL | None:
    """The C kernel library, built on first use; None (and one stderr line) when unavailable."""
    with _LOCK:
        if "lib" not in _STATE:
            lib, why = _load_or_build()
            _STATE["lib"], _STATE["why"] = lib, why
            if lib is None:
                if os.environ.get(ENV_CHOICE, "auto").lower() == "c":
                    raise KernelBuildError(f"ssmlab: C scan kernel required but {why}")
                if not why.startswith(ENV_CHOICE):
                    print(f"ssmlab: {why}; the selective scan uses the slower Numba kernel",
                          file=sys.stderr)  # fmt: skip
        return _STATE["lib"]  # type: ignore[return-value]


def status() -> str:
    """Where the kernel came from: the .so path, or why the Numba fallback is used."""
    load()
    return str(_STATE["why"])


def reset() -> None:
    """Forget the loaded library (tests: re-run the build / fallback decision)."""
    with _LOCK:
        _STATE.clear()
