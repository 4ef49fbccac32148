"""Mamba-ΔT scan: decays that depend on the input along the state axis N.

Glossary (code name -> paper symbol; Mamba-ΔT, Huang et al. 2025, arXiv 2506.11891):
    u (B, L, d) x_t;  delta (B, L, N) Δ_t (already softplus-ed);  A (d, N) Λ (negative reals);
    Bin (B, L, N) B_t (or Δ_t ⊙ B_t);  C (B, L, N) C_t.  Time-major: the layer's layout.

    h_t[e, n] = exp(Λ[e, n] Δ_t[n]) h_{t-1}[e, n] + u_t[e] B_t[n],   h_{-1} = 0,
    y_t[e]    = Σ_n C_t[n] h_t[e, n]                                  -> y (B, L, d).

Backends (explicit): "fused" (Numba, CPU, float32/float64: one forward pass over L per batch
element keeping its (N, d) state in a small local array, never materialising (B, d, N, L); a
checkpointed reverse pass for the gradients of every input, kernels.py), "reference" (the
loop of reference.py, the specification; autograd), "auto" = "fused" on CPU, "reference"
elsewhere.

Backward of the fused path (g_t = dLoss/dh_t, ā_t = exp(Λ Δ_t)):
    g_t = dy_t ⊗ C_t + ā_{t+1} ⊙ g_{t+1};   dC_t = Σ_e dy_t[e] h_t[e, ·];   du_t = g_t B_t;
    dB_t = Σ_e g_t[e, ·] u_t[e];   dΔ_t = Σ_e g_t ⊙ h_{t-1} ⊙ ā_t ⊙ Λ;
    dΛ = Σ_{b, t} g_t ⊙ h_{t-1} ⊙ ā_t Δ_t[n].
The forward keeps the state before every K-th step (`checkpoint_every`, default 64) in a
(B, ceil(L/K), d, N) tensor; the reverse pass recomputes each block of K states from it.
Single backward only (no double backward). The Function has a vmap rule (the vmapped axis is
folded into the batch axis; a vmapped Λ becomes one (d, N) block per sample, which the kernel
indexes per batch element), so torch.func.vmap, grad and vmap(grad) work.
"""

from __future__ import annotations

import operator

import torch
from torch import Tensor
from torch.autograd import Function

from ssmlab.ops._numba import kernel_threads, to_numpy
from ssmlab.ops.delta_t_scan import kernels
from ssmlab.ops.delta_t_scan.reference import delta_t_scan_ref
from ssmlab.ops.errors import OpsInputError

BACKENDS = ("auto", "fused", "reference")
DEFAULT_CHECKPOINT_EVERY = 64

__all__ = ["BACKENDS", "DEFAULT_CHECKPOINT_EVERY", "delta_t_scan", "delta_t_scan_ref"]


def _a3(A: Tensor) -> Tensor:
    """Λ as (Ba, d, N)."""
    return A.unsqueeze(0) if A.dim() == 2 else A


def _fold(x: Tensor, dim: int | None, S: int) -> Tensor:
    """Move the vmapped axis to the front (expanding an unbatched x) and fold it into axis 1:
    (S, Bx, ...) -> (S·Bx, ...)."""
    x = x.movedim(dim, 0) if dim is not None else x.expand(S, *x.shape)
    return x.reshape(S * x.shape[1], *x.shape[2:])


def _fold_A(A: Tensor, dim: int | None, S: int) -> Tensor:
    """Λ (d, N) or (Ba, d, N), vmapped or not -> (S·Ba, d, N)."""
    A = A.movedim(dim, 0) if dim is not None else A.expand(S, *A.shape)  # (S, [Ba,] d, N)
    return A.reshape(-1, *A.shape[-2:])


def _unfold(x: Tensor, S: int) -> Tensor:
    return x.view(S, x.shape[0] // S, *x.shape[1:])


def _forward(
    u: Tensor, delta: Tensor, A: Tensor, Bin: Tensor, C: Tensor, K: int
) -> tuple[Tensor, Tensor]:
    Bk, L, d = u.shape
    N = delta.shape[-1]
    y = u.new_empty(Bk, L, d)  # (B, L, d)
    ckpt = u.new_empty(Bk, -(-L // K), d, N)  # (B, L/K, d, N)
    with kernel_threads():
        kernels.dts_forward(
            to_numpy(u),
            to_numpy(delta),
            to_numpy(_a3(A)),
            to_numpy(Bin),
            to_numpy(C),
            K,
            y.numpy(),
            ckpt.numpy(),
        )
    return y, ckpt


class _DeltaTScanBackwardFn(Function):
    """(dy, u, delta, Λ, Bin, C, ckpt, K) -> du, ddelta, dA_k (Bk, d, N), dBin, dC."""

    @staticmethod
    def forward(dy, u, delta, A, Bin, C, ckpt, K):
        Bk, L, d = u.shape
        N = delta.shape[-1]
        du = torch.empty_like(u)  # (B, L, d)
        ddelta, dBin, dC = (torch.empty_like(delta) for _ in range(3))  # (B, L, N)
        dA_k = u.new_empty(Bk, d, N)  # (B, d, N)
        with kernel_threads():
            kernels.dts_backward(
                to_numpy(dy), to_numpy(u), to_numpy(delta), to_numpy(_a3(A)), to_numpy(Bin),
                to_numpy(C), to_numpy(ckpt), K, du.numpy(), ddelta.numpy(), dA_k.numpy(),
                dBin.numpy(), dC.numpy(),
            )  # fmt: skip
        return du, ddelta, dA_k, dBin, dC

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(
            "delta_t_scan (fused): double backward is not supported; use backend='reference'"
        )

    @staticmethod
    def vmap(info, in_dims, dy, u, delta, A, Bin, C, ckpt, K):
        S = info.batch_size
        dy_d, u_d, delta_d, A_d, Bin_d, C_d, ck_d, _ = in_dims
        outs = _DeltaTScanBackwardFn.apply(
            _fold(dy, dy_d, S), _fold(u, u_d, S), _fold(delta, delta_d, S), _fold_A(A, A_d, S),
            _fold(Bin, Bin_d, S), _fold(C, C_d, S), _fold(ckpt, ck_d, S), K,
        )  # fmt: skip
        return tuple(_unfold(o, S) for o in outs), (0,) * 5


class DeltaTScanFn(Function):
    """(u, delta, Λ (d, N) or (Ba, d, N), Bin, C, K) -> y (B, L, d), ckpt (not differentiable)."""

    @staticmethod
    def forward(u, delta, A, Bin, C, K):
        return _forward(u, delta, A, Bin, C, K)

    @staticmethod
    def setup_context(ctx, inputs, output):
        u, delta, A, Bin, C, K = inputs
        _, ckpt = output
        ctx.mark_non_differentiable(ckpt)
        ctx.save_for_backward(u, delta, A, Bin, C, ckpt)
        ctx.K = K

    @staticmethod
    def backward(ctx, dy, _dckpt):
        u, delta, A, Bin, C, ckpt = ctx.saved_tensors
        du, ddelta, dA_k, dBin, dC = _DeltaTScanBackwardFn.apply(
            dy, u, delta, A, Bin, C, ckpt, ctx.K
        )
        if A.dim() == 2:
            dA = dA_k.sum(0)  # (d, N)
        else:  # (Ba, d, N): sum the batches that read the same block
            dA = dA_k.view(A.shape[0], dA_k.shape[0] // A.shape[0], *A.shape[1:]).sum(1)
        return du, ddelta, dA, dBin, dC, None

    @staticmethod
    def vmap(info, in_dims, u, delta, A, Bin, C, K):
        S = info.batch_size
        u_d, delta_d, A_d, Bin_d, C_d, _ = in_dims
        y, ckpt = DeltaTScanFn.apply(
            _fold(u, u_d, S), _fold(delta, delta_d, S), _fold_A(A, A_d, S),
            _fold(Bin, Bin_d, S), _fold(C, C_d, S), K,
        )  # fmt: skip
        return (_unfold(y, S), _unfold(ckpt, S)), (0, 0)


def _check_inputs(u: Tensor, delta: Tensor, A: Tensor, Bin: Tensor, C: Tensor) -> None:
    named = (("u", u), ("delta", delta), ("A", A), ("Bin", Bin), ("C", C))
    for name, x in named:
        if not isinstance(x, Tensor):
            raise OpsInputError(f"delta_t_scan: {name} must be a tensor, got {type(x).__name__}")
    if u.dim() != 3:
        raise OpsInputError(f"delta_t_scan: u has shape {tuple(u.shape)}, expected (B, L, d)")
    Bsz, L, d = u.shape
    if A.dim() != 2 or A.shape[0] != d:
        raise OpsInputError(f"delta_t_scan: A has shape {tuple(A.shape)}, expected ({d}, N)")
    want = (Bsz, L, A.shape[1])
    for name, x in (("delta", delta), ("Bin", Bin), ("C", C)):
        if tuple(x.shape) != want:
            raise OpsInputError(
                f"delta_t_scan: {name} has shape {tuple(x.shape)}, expected {want} = (B, L, N)"
            )
    for name, x in named:
        if not x.dtype.is_floating_point:
            raise OpsInputError(
                f"delta_t_scan: {name} has dtype {x.dtype}; it must be a real floating-point tensor"
            )
    devices = {x.device for _, x in named}
    if len(devices) != 1:
        raise OpsInputError(
            f"delta_t_scan: inputs on several devices {sorted(str(v) for v in devices)}"
        )


def delta_t_scan(
    u: Tensor, delta: Tensor, A: Tensor, Bin: Tensor, C: Tensor, backend: str = "auto",
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
) -> Tensor:  # fmt: skip
    """y (B, L, d) of the Mamba-ΔT recurrence (module doc); gradients for every input.

    `backend`: "auto" (fused on CPU, reference elsewhere), "fused", "reference".
    `checkpoint_every` (fused only): the reverse pass keeps one (d, N) state per this many
    steps, memory O(B·d·N·L/K).
    """
    if backend not in BACKENDS:
        raise OpsInputError(
            f"unknown delta_t_scan backend {backend!r}; choose one of {', '.join(BACKENDS)}"
        )
    _check_inputs(u, delta, A, Bin, C)
    name = backend
    if backend == "auto":
        name = "fused" if u.device.type == "cpu" else "reference"
    if name == "reference":
        return delta_t_scan_ref(u, delta, A, Bin, C)
    if u.device.type != "cpu":
        raise OpsInputError(
            f"backend 'fused' is a CPU (Numba) kernel but the inputs are on {u.device}; move "
            "them to the CPU or use backend='reference'"
        )
    dtypes = {x.dtype for x in (u, delta, A, Bin, C)}
    if len(dtypes) != 1 or next(iter(dtypes)) not in (torch.float32, torch.float64):
        raise OpsInputError(
            "delta_t_scan: backend 'fused' needs every tensor in one dtype, float32 or float64; "
            f"got {sorted(str(t) for t in dtypes)}: cast them, or use backend='reference'"
        )
    try:
        K = operator.index(checkpoint_every)
    except TypeError:
        K = 0
    if isinstance(checkpoint_every, bool) or K < 1:
        raise OpsInputError(
            f"delta_t_scan: checkpoint_every must be a positive integer, got {checkpoint_every!r}"
        )
    y, _ = DeltaTScanFn.apply(u, delta, A, Bin, C, K)
    return y
