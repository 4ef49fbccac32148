"""Seed ensembles: vmap over seeds vs a Python loop of sequential `train` calls.

The filtering paper's model (arXiv 2602.12499; src/ssmlab/papers/filtering/README.md): one-layer
selective SSM with gate w_Δ (A = -1), input weight σ(w_Δᵀx_t),
    y_t = Σ_{s≤t} [Π_{j=s+1..t} (1 - σ(w_Δᵀx_j))] σ(w_Δᵀx_s) (b_sᵀc_t) x_s,
head F(X) = (1/L) Σ_l Σ_i v_i ReLU(W_O[i,:]·y_l), trained with full-batch GD on the hinge loss
(w_Δ and W_O trained, W_B, W_C frozen), at d = 32, L = 20, m = 32, N = 256, S = 32 seeds.

The model is `ssmlab.papers.filtering.model.FilteringMamba` when it imports, else the local copy
below (same closed form, same defaults: w_Δ = 0, W_B = W_C = I, W_O ~ N(0, 0.01²), v = ±1/√m
with random signs, a buffer). Data: majority-voting sequences (α_r = 0.4, α_c = 0.2, τ = 0.01),
one training and one test set of N sequences per seed.

Prints, for each torch thread count: seconds of the loop and of the vmap ensemble, seed-steps per
second, and the throughput ratio (target in the brief: >= 8x), plus the largest difference of
the final train losses between the two (they must agree to float32 rounding), whether every
seed's status and steps_to_converge agree, and the mean final train error (to show the runs
learn). Timings exclude model and data construction and follow one short warm-up run of each
mode. Wall-clock seconds are what a user waits; CPU seconds (process time, all threads) are
less sensitive to other jobs on a shared machine (but count OpenMP spin-waiting with 2 threads).
The load average at start is printed: compare tables only at similar load.

    .venv/bin/python benchmarks/ensemble.py                       # the table of the brief
    .venv/bin/python benchmarks/ensemble.py --sweep-n 16,64,256   # where vmap pays off
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssmlab.seeding import generator
from ssmlab.train.ensemble import train_ensemble_models
from ssmlab.train.trainer import TrainConfig


class LocalFiltering(nn.Module):
    """Closed form of the filtering model (see the module docstring). X (B, L, d) -> (B,)."""

    def __init__(self, d: int, width: int = 32, seed: int = 0, wo_std: float = 0.01):
        super().__init__()
        g = generator(seed, "init")
        self.w_delta = nn.Parameter(torch.zeros(d))
        self.W_B = nn.Parameter(torch.eye(d), requires_grad=False)  # (d, n = d)
        self.W_C = nn.Parameter(torch.eye(d), requires_grad=False)  # (d, n = d)
        self.W_O = nn.Parameter(torch.randn(width, d, generator=g) * wo_std)  # (m, d)
        signs = torch.randint(0, 2, (width,), generator=g) * 2.0 - 1.0
        self.register_buffer("v", signs / math.sqrt(width))  # (m,)

    def forward(self, X: Tensor) -> Tensor:
        L = X.shape[1]
        z = X @ self.w_delta  # (B, L): w_Δᵀ x_t
        log_keep = F.logsigmoid(-z)  # (B, L): log(1 - σ(z_j))
        P = torch.cumsum(log_keep, -1)  # (B, L)
        causal = torch.ones(L, L, dtype=torch.bool, device=X.device).tril()  # [t, s]: s <= t
        logG = P[:, :, None] - P[:, None, :] + F.logsigmoid(z)[:, None, :]  # (B, t, s)
        G = torch.where(causal, logG, -math.inf).exp()  # (B, t, s) = G_{s,t}
        K = (X @ self.W_C) @ (X @ self.W_B).transpose(1, 2)  # (B, t, s) = b_sᵀ c_t
        Y = (G * K) @ X  # (B, L, d): y_t
        return (F.relu(Y @ self.W_O.T) @ self.v).mean(1)  # (B,)


def make_model_factory(d: int, width: int, which: str):
    if which in ("auto", "ssmlab"):
        try:
            from ssmlab.papers.filtering.model import FilteringMamba, FilteringMambaConfig

            mcfg = FilteringMambaConfig(width=width)
            return (lambda s: FilteringMamba(d, mcfg, seed=s)), "ssmlab.papers.filtering.model.FilteringMamba"
        except Exception as e:  # the shared model may not be importable yet
            if which == "ssmlab":
                raise
            note = f"local copy (FilteringMamba not importable: {type(e).__name__})"
            return (lambda s: LocalFiltering(d, width, seed=s)), note
    return (lambda s: LocalFiltering(d, width, seed=s)), "local copy"


def majority(seed: int, split: str, n: int, L: int, d: int, alpha_r: float = 0.4,
             alpha_c: float = 0.2, tau: float = 0.01) -> tuple[Tensor, Tensor]:
    """Majority-voting sequences in the standard basis: round(α_r L) tokens o_z, round(α_c L)
    tokens o_-z, the rest irrelevant e_j (j >= 2), random positions; noise N(0, τ² I / d)."""
    g = generator(seed, split)
    y = torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0)[torch.randperm(n, generator=g)]  # (n,)
    n_r, n_c = round(alpha_r * L), round(alpha_c * L)
    feats = torch.randint(2, d, (n, L), generator=g)  # (n, L)
    pos = torch.argsort(torch.rand(n, L, generator=g), dim=1)  # (n, L)
    own = torch.where(y > 0, 0, 1)[:, None]  # (n, 1)
    rows = torch.arange(n)[:, None]
    feats[rows, pos[:, :n_r]] = own
    feats[rows, pos[:, n_r : n_r + n_c]] = 1 - own
    X = torch.eye(d)[feats] + tau / math.sqrt(d) * torch.randn(n, L, d, generator=g)  # (n, L, d)
    return X, y


def run(args: argparse.Namespace, n: int, threads: int, factory) -> dict[str, float]:
    torch.set_num_threads(threads)
    seeds = list(range(args.seeds))
    cfg = TrainConfig(optimizer="gd", loss="hinge", lr=args.lr, epochs=args.steps,
                      eval_every=args.eval_every)
    datas = [(majority(s, "train", n, args.L, args.d), majority(s, "test", n, args.L, args.d))
             for s in seeds]
    warm = cfg.model_copy(update={"epochs": 2})
    out: dict[str, float] = {}
    results = {}
    for mode in ("loop", "vmap"):
        train_ensemble_models([factory(s) for s in seeds[:2]], seeds[:2], warm, datas[:2],
                              mode=mode)
        models = [factory(s) for s in seeds]
        t0, c0 = time.perf_counter(), time.process_time()
        res = train_ensemble_models(models, seeds, cfg, datas, mode=mode)
        out[mode] = time.perf_counter() - t0
        out[mode + "_cpu"] = time.process_time() - c0
        assert res.mode == mode, res.reason
        results[mode] = res
    lo, vm = results["loop"], results["vmap"]
    out["max_dloss"] = max(abs(a.final.get("train_loss", math.nan) - b.final.get("train_loss", math.nan))
                           for a, b in zip(lo, vm, strict=True))
    out["same_status"] = float(all((a.status, a.steps_to_converge) == (b.status, b.steps_to_converge)
                                   for a, b in zip(lo, vm, strict=True)))
    out["mean_final_err"] = sum(r.final.get("train_error", math.nan) for r in vm) / len(vm)
    return out


def roofline(factory, n: int, args: argparse.Namespace, threads: int) -> str:
    """Matmul FLOPs of one seed's GD step and this machine's fp32 matmul rate: the loop's
    GFLOP/s against that peak bounds what any batching of seeds (vmap) can gain."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(threads)
    model = factory(0)
    X, y = majority(0, "train", n, args.L, args.d)
    with FlopCounterMode(display=False) as fc:
        torch.clamp(1 - y * model(X), min=0).mean().backward()
    flops = fc.get_total_flops()
    a = torch.randn(1024, 1024)
    a @ a
    t0 = time.perf_counter()
    for _ in range(5):
        a @ a
    peak = 5 * 2 * 1024**3 / (time.perf_counter() - t0)
    return (f"N={n}, {threads} thread(s): {flops / 1e6:.1f} MFLOP (matmul) per seed-step; "
            f"fp32 matmul peak here {peak / 1e9:.0f} GFLOP/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=32)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--n", type=int, default=256, help="training (and test) sequences per seed")
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--L", type=int, default=20)
    ap.add_argument("--width", type=int, default=32, help="m, neurons of the head")
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--sweep-n", default="", help="comma list of N for an extra table")
    ap.add_argument("--model", choices=("auto", "ssmlab", "local"), default="auto")
    args = ap.parse_args()

    factory, source = make_model_factory(args.d, args.width, args.model)
    threads = [int(t) for t in args.threads.split(",")]
    ns = [args.n] + [int(x) for x in args.sweep_n.split(",") if x and int(x) != args.n]
    print(f"model: {source}; S={args.seeds} seeds, d={args.d}, L={args.L}, m={args.width}, "
          f"steps={args.steps}, full-batch GD hinge lr={args.lr}, eval_every={args.eval_every}, "
          f"float32, torch {torch.__version__}")
    print()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print()
    print("| N | threads | loop s | vmap s | loop seed-steps/s | vmap seed-steps/s | ratio |"
          " loop CPU s | vmap CPU s | CPU ratio | max Δ final loss | same status/stc |"
          " mean final train err |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    bounds = []
    for n in ns:
        for th in threads:
            r = run(args, n, th, factory)
            work = args.seeds * args.steps
            bounds.append((roofline(factory, n, args, th), r["loop_cpu"] / work))
            print(f"| {n} | {th} | {r['loop']:.2f} | {r['vmap']:.2f} | {work / r['loop']:.0f} | "
                  f"{work / r['vmap']:.0f} | {r['loop'] / r['vmap']:.2f}x | {r['loop_cpu']:.2f} | "
                  f"{r['vmap_cpu']:.2f} | {r['loop_cpu'] / r['vmap_cpu']:.2f}x | {r['max_dloss']:.1e} | "
                  f"{'yes' if r['same_status'] else 'NO'} | {r['mean_final_err']:.3f} |", flush=True)
    print()
    print("Roofline: the loop's CPU seconds per seed-step against the matmul peak bound the")
    print("vmapped speed-up (max gain = peak / loop GFLOP/s, when the step is matmul-bound):")
    for text, sec in bounds:
        print(f"- {text}; loop CPU {sec * 1e3:.2f} ms per seed-step")


if __name__ == "__main__":
    main()
