"""Benchmark of `ssmlab probe` on a random model of the 130M shape.

Builds a random Mamba (default: 24 layers, d_model 768, d_state 16, expand 2, vocabulary 50280,
mamba_ssm's initialisation, A_log spread by N(0, 0.5²) like a trained model's) or Mamba-2 model
in ssmlab, exports it as a transformers directory (config.json + model.safetensors, not timed),
then times one full probe on random token ids (default 512 tokens, every layer, 8 channels per
layer) and prints a table: stage -> seconds, the total wall time, the process's CPU time, and
how busy the machine's CPUs were meanwhile (the machine may be shared: compare stages within a
run rather than absolute times across runs).

Modes:
  command  (default) `probe_command`, as the CLI runs it: torch on one thread
  serial   `probe` then `write_report`, torch on --threads threads (2 by default)

`--profile` also runs the probe under torch.profiler and prints the operators that dominate.

Usage: python benchmarks/probe.py [--mode command|serial] [--threads 2] [--arch mamba|mamba2]
       [--tokens 512] [--layers 24] [--d-model 768] [--channels 8] [--profile] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from ssmlab.interop.checkpoint import load_checkpoint, save_transformers
from ssmlab.interop.cli import probe_command
from ssmlab.interop.probe import Stopwatch, probe
from ssmlab.interop.report import write_report
from ssmlab.interop.spec import MambaSpec


def _cpu_busy() -> tuple[int, int]:
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


def build(arch: str, d_model: int, n_layer: int, vocab: int, seed: int) -> torch.nn.Module:
    spec = MambaSpec(arch=arch, d_model=d_model, n_layer=n_layer, vocab_size=vocab,
                     d_state=16 if arch == "mamba" else 128,
                     dt_rank=-(-d_model // 16) if arch == "mamba" else None,
                     headdim=None if arch == "mamba" else 64, ngroups=1)
    torch.manual_seed(seed)
    lm = spec.build()
    with torch.no_grad():  # a trained-looking spread of decays and steps, not the init's
        for layer in lm.backbone.layers:
            layer.mixer.A_log.add_(0.5 * torch.randn_like(layer.mixer.A_log))
    return lm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--arch", choices=["mamba", "mamba2"], default="mamba")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--d-model", type=int, default=768)
    ap.add_argument("--vocab", type=int, default=50280)
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--mode", choices=["command", "serial"], default="command")
    ap.add_argument("--threads", type=int, default=2, help="torch threads in --mode serial")
    ap.add_argument("--profile", action="store_true", help="torch.profiler table of the probe")
    ap.add_argument("--keep", type=Path, help="keep the probe's output in this folder")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)  # probe_command sets its own (one) while it runs
    tmp = Path(tempfile.mkdtemp(prefix="ssmlab-probe-bench-"))
    try:
        t0 = time.perf_counter()
        lm = build(args.arch, args.d_model, args.layers, args.vocab, seed=0)
        ckpt = save_transformers(lm, tmp / "model")
        del lm
        setup = time.perf_counter() - t0
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(0, args.vocab, (args.tokens,), generator=g).tolist()
        n_ch = args.channels
        channels = None if n_ch == 8 else ",".join(str(i) for i in range(n_ch))
        out = args.keep or tmp / "out"
        busy0, w0, c0 = _cpu_busy(), time.perf_counter(), time.process_time()
        if args.mode == "command":
            probe_command(ckpt, out, None, ",".join(map(str, ids)), None, channels, quiet=True)
            timings = json.loads((out / "probe.json").read_text())["timings_s"]
        else:
            sw = Stopwatch()
            with sw("load"):
                loaded = load_checkpoint(ckpt)
            res = probe(loaded, ids, channels=None if channels is None else list(range(n_ch)),
                        sw=sw)
            write_report(res, out, sw)
            timings = dict(sw.seconds)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        busy1 = _cpu_busy()
        busy = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])
        threads = "1" if args.mode == "command" else str(args.threads)
        print(f"# probe benchmark: {args.arch}, {args.layers} layers, d_model {args.d_model}, "
              f"vocabulary {args.vocab}, T = {args.tokens}, {n_ch} channels per layer, "
              f"mode {args.mode}, torch threads {threads}\n")
        print(f"Machine: {os.cpu_count()} CPUs, {100 * busy:.0f}% busy on average during the "
              f"probe (ours included). Setup (build + export, not timed): {setup:.1f} s.\n")
        print("| stage | seconds |")
        print("|---|---|")
        for k, v in sorted(timings.items(), key=lambda kv: -kv[1]):
            print(f"| {k} | {v:.2f} |")
        print(f"| **total wall** | **{wall:.2f}** |")
        print(f"| process CPU time | {cpu:.2f} |")
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                probe_command(ckpt, tmp / "out_prof", None, ",".join(map(str, ids)), None,
                              channels, quiet=True)
            print()
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the 0.5 GB checkpoint; --keep is elsewhere
        sys.stdout.flush()


if __name__ == "__main__":
    main()
