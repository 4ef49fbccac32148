"""Benchmark of the selective-scan paths: time, peak memory, distance to the I/O bound.

Prints (Markdown tables) forward and forward+backward wall time (median of repeats, float32) and
peak process memory for: the reference loop, the Blelloch pscan baseline, the chunked SSD
(scalar decay per head: a cheaper model, shown for reference), the default fused kernel (the C
kernel, backend "fused") and its Numba fallback (backend "fused_numba"), at
torch threads 1 and 2, for (B, D, N, L) = (8, 64, 16, 256 / 1024 / 4096) and the "many tiny
sequences" shape (256, 16, 8, 64). Also: this machine's copy bandwidth, the I/O lower bound it
sets per shape (inputs read once, outputs written once), each path's ratio to that bound, and
the fused kernels' first-call build time with cold caches (C: compiler run; Numba: JIT).

Method
- Every (path, shape, threads, mode) cell runs in a fresh subprocess: imports, inputs, one
  warm-up call (loads the fused kernel: the C library from its cache, building it if absent, or
  the Numba kernel from Numba's cache), then the timed repeats. Its peak
  memory is the process's peak RSS (PyTorch CPU tensors come from malloc, so RSS sees them):
  after imports + inputs the peak is reset (Linux /proc/self/clear_refs), and "Δpeak" is
  VmHWM minus the RSS at that point, i.e. what the op itself added at its peak. (getrusage's
  ru_maxrss would not do: it survives fork + exec and starts at the parent's RSS.)
- Inputs: u, delta ~ N(0, 1) (delta - 1 then softplus), A = -exp(U(0, 1)), B, C ~ N(0, 1), D;
  forward+backward = forward, then backward of a weighted sum, gradients for every input.
- The reference loop is slow; above L = 1024 it is timed once (no warm-up, one repeat).
- The machine is shared: the header prints how busy the CPUs were during the run (from
  /proc/stat); read ratios measured in the same run rather than absolute times.
- Targets (issue 12), judged on the default path at (8, 64, 16, 4096), forward+backward:
  at most 45 ms at 2 threads and at least 35x the pscan baseline of the same run.

Usage: python benchmarks/scan.py [--quick] [--shapes 8x64x16x256,256x16x8x64] [--threads 1,2]
       [--paths reference,pscan,ssd,fused,fused_numba] [--repeats 7] [--json out.json]
       [--from-json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_SHAPES = ["8x64x16x256", "8x64x16x1024", "8x64x16x4096", "256x16x8x64"]
QUICK_SHAPES = ["8x64x16x256", "256x16x8x64"]
PATHS = ["reference", "pscan", "ssd", "fused", "fused_numba"]
LABEL = {
    "reference": "reference loop",
    "pscan": "pscan (Blelloch, PyTorch)",
    "ssd": "chunked SSD (scalar decay)",
    "fused": "fused C kernel (default)",
    "fused_numba": "fused Numba (fallback)",
}
REF_SINGLE_SHOT_ABOVE = 1024
TARGET_L = 4096
TARGETS = {"pscan": 35, "reference": 100}  # fused f+b speed-up wanted at L = TARGET_L
TARGET_MS = 45.0  # fused f+b wall time wanted at (8, 64, 16, TARGET_L), 2 threads
HERE = Path(__file__).resolve()


# ----------------------------------------------------------------------------- worker side
def _status_bytes(field: str) -> int:
    """VmRSS / VmHWM (peak RSS) of this process from /proc/self/status, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _inputs(shape: tuple[int, int, int, int], path: str, grad: bool):
    import torch

    Bs, Dc, N, L = shape
    g = torch.Generator().manual_seed(0)
    f32 = torch.float32
    if path == "ssd":
        P = min(16, Dc)
        H = Dc // P
        t = dict(
            x=torch.randn(Bs, L, H, P, generator=g, dtype=f32),
            dt=torch.randn(Bs, L, H, generator=g, dtype=f32) - 1,
            A=-torch.exp(torch.rand(H, generator=g, dtype=f32)),
            B=torch.randn(Bs, L, 1, N, generator=g, dtype=f32),
            C=torch.randn(Bs, L, 1, N, generator=g, dtype=f32),
            D=torch.ones(H, dtype=f32),
        )
    else:
        t = dict(
            u=torch.randn(Bs, Dc, L, generator=g, dtype=f32),
            delta=torch.randn(Bs, Dc, L, generator=g, dtype=f32) - 1,
            A=-torch.exp(torch.rand(Dc, N, generator=g, dtype=f32)),
            B=torch.randn(Bs, N, L, generator=g, dtype=f32),
            C=torch.randn(Bs, N, L, generator=g, dtype=f32),
            D=torch.ones(Dc, dtype=f32),
        )
    if grad:
        for v in t.values():
            v.requires_grad_(True)
    return t


def _call(path: str, t: dict):
    if path in ("fused", "fused_numba"):
        from ssmlab.ops.selective_scan import selective_scan

        backend = "fused_c" if path == "fused" else "fused_numba"
        return selective_scan(**t, delta_softplus=True, backend=backend)
    if path == "ssd":
        from ssmlab.ops.ssd import ssd

        return ssd(**t, dt_softplus=True)
    from ssmlab.ops.selective_scan import selective_scan

    return selective_scan(**t, delta_softplus=True, backend=path)


def worker(path: str, shape: tuple[int, int, int, int], threads: int, mode: str, repeats: int):
    import torch

    torch.set_num_threads(threads)
    import ssmlab.ops.selective_scan  # noqa: F401  (numba and the kernels, before the baseline)
    import ssmlab.ops.ssd  # noqa: F401

    grad = mode == "fb"
    # a tiny call first: loads the compiled kernels (same dtypes and ranks, so the same
    # specialisation) before the memory baseline, so Δpeak measures the op, not code loading
    tiny = _inputs((1, 2, 2, 3), path, grad)
    out = _call(path, tiny)
    if grad:
        torch.autograd.grad(out.sum(), list(tiny.values()))
    del tiny, out
    t = _inputs(shape, path, grad)
    weight = None
    base = _status_bytes("VmRSS")
    _reset_peak_rss()
    single = path == "reference" and shape[3] > REF_SINGLE_SHOT_ABOVE
    warmups, reps = (0, 1) if single else (1, repeats)

    def once():
        if grad:
            y = _call(path, t)
            nonlocal weight
            if weight is None:
                weight = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
            torch.autograd.grad((y * weight).sum(), list(t.values()))
        else:
            with torch.no_grad():
                _call(path, t)

    for _ in range(warmups):
        once()
    wall, cpu = [], []
    for _ in range(reps):
        w0, c0 = time.perf_counter(), time.process_time()
        once()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    peak = _status_bytes("VmHWM")
    print(
        json.dumps(
            dict(
                wall_ms=statistics.median(wall) * 1e3,
                cpu_ms=statistics.median(cpu) * 1e3,
                repeats=reps,
                base_mib=base / 2**20,
                peak_mib=peak / 2**20,
            )
        )
    )


def compile_worker(path: str = "fused_numba"):
    """First calls of a fused path (float32) in a process whose Numba / C kernel caches are
    the (possibly empty) directories the driver set in the environment."""
    import torch

    t0 = time.perf_counter()
    from ssmlab.ops.selective_scan import selective_scan

    t_import = time.perf_counter() - t0
    t = _inputs((2, 8, 4, 32), "fused", grad=True)
    backend = "fused_c" if path == "fused" else "fused_numba"
    t0 = time.perf_counter()
    y = selective_scan(**t, delta_softplus=True, backend=backend)
    t_fwd = time.perf_counter() - t0
    t0 = time.perf_counter()
    y.sum().backward()
    t_bwd = time.perf_counter() - t0
    del torch
    print(json.dumps(dict(import_s=t_import, forward_s=t_fwd, backward_s=t_bwd)))


# ----------------------------------------------------------------------------- driver side
def _run_worker(args: list[str], env: dict | None = None, timeout: float = 900) -> dict | str:
    cmd = [sys.executable, str(HERE), *args]
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        return "timeout"
    if out.returncode != 0:
        return "error: " + (out.stderr.strip().splitlines() or ["?"])[-1][:80]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cpu_busy() -> tuple[int, int]:
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


def bandwidth_gbs(threads: int) -> float:
    """Copy bandwidth (read + write bytes per second) of a 256 MiB float32 tensor copy, best of 7
    (a lower bound should use the best the machine does; the median is hit by other load)."""
    import torch

    torch.set_num_threads(threads)
    src = torch.ones(64 * 2**20)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - t0)
    return 2 * src.numel() * 4 / min(times) / 1e9


def io_bytes(shape: tuple[int, int, int, int], mode: str) -> int:
    """Bytes every S6 path must move at least (float32): inputs read once, outputs written once.
    forward: u, delta, B, C, A, D in; y out.  backward adds: u, delta, B, C, A, dy in;
    du, ddelta, dB, dC, dA, dD out."""
    Bs, Dc, N, L = shape
    bdl, bnl = Bs * Dc * L, Bs * N * L
    fwd = 3 * bdl + 2 * bnl + Dc * N + Dc
    bwd = 5 * bdl + 4 * bnl + 2 * Dc * N + Dc
    return 4 * (fwd + (bwd if mode == "fb" else 0))


def _fmt_ms(v) -> str:
    if isinstance(v, str):
        return v
    return f"{v:.1f}" if v >= 1 else f"{v:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="two small shapes, 3 repeats")
    ap.add_argument("--shapes", help="comma list of BxDxNxL")
    ap.add_argument("--threads", default="1,2", help="comma list of torch thread counts")
    ap.add_argument("--paths", default=",".join(PATHS))
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--json", help="also write all measurements to this file")
    ap.add_argument("--from-json", help="print the tables of a saved --json run, measure nothing")
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    ap.add_argument("--compile-worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        path, shape, threads, mode, reps = a.worker
        worker(path, tuple(int(v) for v in shape.split("x")), int(threads), mode, int(reps))
        return
    if a.compile_worker:
        compile_worker(a.compile_worker)
        return
    if a.from_json:
        report(json.loads(Path(a.from_json).read_text()))
        return

    shapes = a.shapes.split(",") if a.shapes else (QUICK_SHAPES if a.quick else DEFAULT_SHAPES)
    threads = [int(t) for t in a.threads.split(",")]
    paths = a.paths.split(",")
    repeats = a.repeats or (3 if a.quick else 7)
    busy0 = _cpu_busy()
    t_start = time.time()

    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        cold = _run_worker(["--compile-worker", "fused_numba"], env=env)
        warm = _run_worker(["--compile-worker", "fused_numba"], env=env)
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "SSMLAB_KERNEL_CACHE": cache}
        c_cold = _run_worker(["--compile-worker", "fused"], env=env)
        c_warm = _run_worker(["--compile-worker", "fused"], env=env)
    bw = {t: bandwidth_gbs(t) for t in threads}

    results: dict[tuple, dict | str] = {}
    for shape in shapes:
        for t in threads:
            for mode in ("fwd", "fb"):
                for path in paths:
                    r = _run_worker(["--worker", path, shape, str(t), mode, str(repeats)])
                    results[(shape, t, mode, path)] = r
                    ms = r["wall_ms"] if isinstance(r, dict) else r
                    print(f"  measured {shape} threads={t} {mode:3s} {path:9s}: {_fmt_ms(ms)} ms",
                          file=sys.stderr, flush=True)  # fmt: skip

    busy1 = _cpu_busy()
    data = dict(
        bandwidth_gbs=bw,
        compile=dict(cold=cold, warm=warm, c_cold=c_cold, c_warm=c_warm),
        cpu_busy=(busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]),
        seconds=time.time() - t_start,
        shapes=shapes,
        threads=threads,
        paths=paths,
        results={"|".join(map(str, k)): v for k, v in results.items()},
    )
    if a.json:
        Path(a.json).write_text(json.dumps(data, indent=1))
    report(data)


def report(data: dict) -> None:
    """Print the Markdown tables from the measurements (also used by --from-json)."""
    shapes, threads, paths = data["shapes"], data["threads"], data["paths"]
    bw = {int(k): v for k, v in data["bandwidth_gbs"].items()}
    cold, warm = data["compile"]["cold"], data["compile"]["warm"]
    c_cold, c_warm = data["compile"].get("c_cold"), data["compile"].get("c_warm")
    results = {}
    for k, v in data["results"].items():
        shape, t, mode, path = k.split("|")
        results[(shape, int(t), mode, path)] = v
    print("# Selective-scan benchmark (float32)\n")
    print(
        f"Machine: {os.cpu_count()} CPUs; CPUs busy {100 * data['cpu_busy']:.0f}% on average "
        f"during the {data['seconds']:.0f} s run (this benchmark uses at most `threads` of them; "
        "the rest is other load on a shared machine, which inflates wall times).  "
    )
    print("Copy bandwidth (256 MiB tensor copy, read+write, best of 7): "
          + ", ".join(f"{bw[t]:.1f} GB/s at {t} thread(s)" for t in threads) + ".  ")  # fmt: skip
    if isinstance(c_cold, dict) and isinstance(c_warm, dict):
        print(
            f"C kernel first call, empty kernel cache: forward {c_cold['forward_s']:.1f} s "
            f"(runs the C compiler), backward {c_cold['backward_s']:.2f} s; from the cache: "
            f"{c_warm['forward_s']:.2f} s + {c_warm['backward_s']:.2f} s.  "
        )
    elif c_cold is not None:
        print(f"C kernel build probe failed: {c_cold} / {c_warm}  ")
    if isinstance(cold, dict) and isinstance(warm, dict):
        print(
            f"Numba kernel first call, cold Numba cache: forward {cold['forward_s']:.1f} s, "
            f"backward {cold['backward_s']:.1f} s (compile, float32); from a warm cache: "
            f"{warm['forward_s']:.2f} s + {warm['backward_s']:.2f} s (cache load). "
            f"`import ssmlab.ops.selective_scan`: {warm['import_s']:.1f} s.\n"
        )
    else:
        print(f"Numba compile-time probe failed: {cold} / {warm}\n")

    print("Wall time, median ms (f+b = forward + backward, gradients of every input); "
          f"reference above L={REF_SINGLE_SHOT_ABOVE}: one shot.\n")  # fmt: skip
    cols = ["threads", "shape (B, D, N, L)", "path", "fwd ms", "f+b ms", "fwd ×IO", "f+b ×IO",
            "fwd Δpeak MiB", "f+b Δpeak MiB", "fwd CPU ms", "f+b CPU ms"]  # fmt: skip
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for t in threads:
        for shape in shapes:
            shp = tuple(int(v) for v in shape.split("x"))
            for path in paths:
                row = [str(t), shape.replace("x", ", "), LABEL[path]]
                for mode in ("fwd", "fb"):
                    r = results[(shape, t, mode, path)]
                    row.append(_fmt_ms(r["wall_ms"]) if isinstance(r, dict) else r)
                for mode in ("fwd", "fb"):
                    r = results[(shape, t, mode, path)]
                    bound_ms = io_bytes(shp, mode) / (bw[t] * 1e9) * 1e3
                    row.append(f"{r['wall_ms'] / bound_ms:.0f}" if isinstance(r, dict) else "—")
                for mode in ("fwd", "fb"):
                    r = results[(shape, t, mode, path)]
                    row.append(
                        f"{r['peak_mib'] - r['base_mib']:.0f}" if isinstance(r, dict) else "—"
                    )
                for mode in ("fwd", "fb"):
                    r = results[(shape, t, mode, path)]
                    row.append(_fmt_ms(r["cpu_ms"]) if isinstance(r, dict) else "—")
                print("| " + " | ".join(row) + " |")
    print()
    print("I/O lower bound per shape (bytes / copy bandwidth at the same thread count), ms:\n")
    print("| shape | threads | fwd bound ms | f+b bound ms | torch + inputs RSS MiB |")
    print("|---|---|---|---|---|")
    for shape in shapes:
        shp = tuple(int(v) for v in shape.split("x"))
        for t in threads:
            r = results.get((shape, t, "fwd", "fused"))
            base = f"{r['base_mib']:.0f}" if isinstance(r, dict) else "—"
            print(f"| {shape.replace('x', ', ')} | {t} | "
                  f"{io_bytes(shp, 'fwd') / (bw[t] * 1e9) * 1e3:.2f} | "
                  f"{io_bytes(shp, 'fb') / (bw[t] * 1e9) * 1e3:.2f} | {base} |")  # fmt: skip
    print()
    print(
        f"Fused forward+backward vs the baselines, same run. The targets of the default path "
        f"(≤{TARGET_MS:.0f} ms at 2 threads, ≥{TARGETS['pscan']}× pscan, "
        f"≥{TARGETS['reference']}× reference, peak memory ≤ pscan's) are stated for "
        f"(8, 64, 16, {TARGET_L}); the Numba fallback and other shapes show the ratios only.\n"
    )
    for fused, t, shape in itertools.product(("fused", "fused_numba"), threads, shapes):
        f = results.get((shape, t, "fb", fused))
        if not isinstance(f, dict):
            continue
        judged = shape == f"8x64x16x{TARGET_L}" and fused == "fused"
        parts = []
        if judged and t == 2:
            verdict = "PASS" if f["wall_ms"] <= TARGET_MS else "FAIL"
            parts.append(f"{f['wall_ms']:.1f} ms — target ≤{TARGET_MS:.0f} ms: {verdict}")
        for other, target in TARGETS.items():
            o = results.get((shape, t, "fb", other))
            if isinstance(o, dict):
                ratio = o["wall_ms"] / f["wall_ms"]
                cpu_ratio = o["cpu_ms"] / f["cpu_ms"]
                verdict = (": PASS" if ratio >= target else ": FAIL") if judged else ""
                parts.append(f"{ratio:.0f}× faster than {other} (CPU-time ratio "
                             f"{cpu_ratio:.0f}×){f' — target ≥{target}×' + verdict if judged else ''}")  # fmt: skip
        o = results.get((shape, t, "fb", "pscan"))
        if isinstance(o, dict):
            fm, pm = f["peak_mib"] - f["base_mib"], o["peak_mib"] - o["base_mib"]
            verdict = (" — PASS" if fm <= pm else " — FAIL") if judged else ""
            parts.append(f"Δpeak {fm:.0f} MiB vs pscan {pm:.0f} MiB{verdict}")
        if parts:
            print(f"- {LABEL[fused]}, threads {t}, {shape}: " + "; ".join(parts))


if __name__ == "__main__":
    main()
