"""S6 computes Haar projections: an explicit parameter set, its proof, and the direct transform.

Selectivity paper (Huang et al. 2025, arXiv 2506.11891), approximation claim: "the S6 layer can
represent projections onto Haar wavelets", which S4D (Δ constant) cannot. The paper's
construction was not reachable; this one is derived here.

Glossary (code name -> symbol):
    L = 2^J         grid cells; the signal f is constant on cells [i/L, (i+1)/L), u_t = f(t/L)
    ψ_{j,k}         Haar wavelet 2^{j/2}(1 on the left half of I_{j,k}, -1 on the right half)
    I_{j,k}         dyadic interval [k 2^{-j}, (k+1) 2^{-j}) ("box"), j < J
    bits π(t)       the J binary digits of the position t, most significant first: the clock
                    input that drives Δ (the only selection signal)
    δ               `delta_in`, Δ inside a channel's box
    M               `margin`, pre-activation gap between inside and outside a box
    λ               `lam`, A = -λ

The construction (one S6 channel per box, state size N = 1, B and C constant, only Δ selective):
    channel d ↔ box I_{j,k};  inputs x_t = (u_t, π(t));
    Δ_{t,d} = softplus(z_{t,d}),  z_{t,d} = M (Σ_{i<j} m_i(t) - j + 1/2) + c,
        m_i(t) = π_i(t) if bit i of k is 1 else 1 - π_i(t)     (affine in the bits),
    so z = c + M/2 when t ∈ I_{j,k} (all j leading bits match) and z ≤ c - M/2 otherwise;
    c = softplus^{-1}(δ) - M/2, hence Δ = δ inside the box and Δ ≤ δ e^{-M}(1 + o(1)) outside;
    A = -λ,  B_t = 1 / (L δ),  C_t = 1.

Claim: the channel's output at any t ≥ end of its box is the box integral ∫_{I} f, up to
        |y - ∫_I f| ≤ (λ δ L + e^{-M}·(1 + δ)) · max|f|.
Proof. Unrolling h_t = e^{-λΔ_t} h_{t-1} + Δ_t B u_t (mamba_ssm's discretisation) gives
    y_T = Σ_s Δ_s B u_s exp(-λ Σ_{r=s+1..T} Δ_r).
For s ∈ I: Δ_s B = 1/L, and the decay exponent is at most λ δ |I| + λ Σ_{r ∉ I} Δ_r ≤ λ δ L
(outside terms are e^{-M} smaller), so each term is u_s / L · (1 - ε_s), 0 ≤ ε_s ≤ λ δ L. For
s ∉ I: Δ_s B ≤ e^{-M}(1+δ)/L. Summing, Σ_{s∈I} u_s/L = ∫_I f (f constant on cells), and the
error bound follows. Outside its box a channel is frozen ("Δ → 0 freezes time"): nothing is
written and nothing decays, which is exactly what S4D's constant Δ cannot do. ∎
Then ⟨f, ψ_{j,k}⟩ = 2^{j/2}(∫_{left} f - ∫_{right} f) and P f = ∫f · 1 + Σ ⟨f, ψ⟩ ψ are fixed
linear maps of the final outputs (the layer's output projection). With the defaults δ = 1e-14,
λ = 1, M = 40 the bound is (1e-14·L + 4e-18)·max|f| per box: float64 throughout (B = 1/(Lδ)
≈ 1e14/L is representable; in float32 e^{-λδ} rounds to 1 and only summation error remains).
Derived halves and the synthesis amplify box errors by at most ~2^{J/2}·J, still ≪ 1e-6 for
L ≤ 2^14.

Which inputs: the signal u on every box channel and the J position bits π(t) (plus a constant
channel that carries B and C, because S6's x_proj has no bias). The bits are the same for every
signal and every wavelet set; all wavelet-specific information sits in the Δ weights.

Cost: one channel (one scalar state) per stored box. A wavelet needs its two halves; the right
half is derivable as (parent box) - (left half) whenever the wavelet's support is itself known,
so a wavelet set closed under parents (a tree) costs exactly 1 + #wavelets channels; in general
`boxes_for` stores the root, every left half, and the right halves that are not derivable.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ssmlab.errors import UserError
from ssmlab.layers.s6 import S6, inverse_softplus
from ssmlab.ops.selective_scan import selective_scan

Wavelet = tuple[int, int]  # (j, k)
Box = tuple[int, int]  # (j, k): I_{j,k}


def log2_grid(L: int) -> int:
    if L < 2 or L & (L - 1):
        raise UserError(f"grid length L must be a power of two >= 2, got {L}")
    return L.bit_length() - 1


def check_wavelets(wavelets: Iterable[Wavelet], L: int) -> list[Wavelet]:
    J = log2_grid(L)
    out = []
    for j, k in wavelets:
        if not (0 <= j < J and 0 <= k < 2**j):
            raise UserError(f"wavelet (j={j}, k={k}) not defined on a grid of {L} cells "
                            f"(need 0 <= j < {J}, 0 <= k < 2^j)")
        out.append((int(j), int(k)))
    return out


def all_wavelets(L: int, max_level: int | None = None) -> list[Wavelet]:
    J = log2_grid(L)
    top = J if max_level is None else min(J, max_level + 1)
    return [(j, k) for j in range(top) for k in range(2**j)]


# --- the direct (closed-form) Haar transform -----------------------------------------------

def box_indicator(box: Box, L: int) -> np.ndarray:
    """1 on the cells of I_{j,k}: (L,)."""
    j, k = box
    w = L >> j
    v = np.zeros(L)
    v[k * w:(k + 1) * w] = 1.0
    return v


def haar_wavelet(w: Wavelet, L: int) -> np.ndarray:
    """ψ_{j,k} on the cells: 2^{j/2} on the left half of I_{j,k}, -2^{j/2} on the right: (L,)."""
    j, k = w
    return 2 ** (j / 2) * (box_indicator((j + 1, 2 * k), L) - box_indicator((j + 1, 2 * k + 1), L))


def haar_coefficients(f: np.ndarray, wavelets: Sequence[Wavelet]) -> np.ndarray:
    """⟨f, ψ_{j,k}⟩ = ∫_0^1 f ψ for f constant on the L cells: (len(wavelets),)."""
    L = f.shape[-1]
    return np.array([f @ haar_wavelet(w, L) / L for w in wavelets])


def haar_projection(f: np.ndarray, wavelets: Sequence[Wavelet]) -> np.ndarray:
    """Direct orthogonal projection onto span{1, ψ_w : w ∈ wavelets} (numpy, closed form)."""
    L = f.shape[-1]
    wavelets = check_wavelets(wavelets, L)
    out = np.full(L, f.mean())
    for c, w in zip(haar_coefficients(f, wavelets), wavelets, strict=True):
        out = out + c * haar_wavelet(w, L)
    return out


def _children(box: Box) -> tuple[Box, Box]:
    j, k = box
    return (j + 1, 2 * k), (j + 1, 2 * k + 1)


def _parent(box: Box) -> Box:
    j, k = box
    return (j - 1, k // 2)


class BoxAlgebra:
    """The boxes whose integrals follow from the stored ones by ±1 combinations, kept closed
    under: parent & one child known -> the other child; both children known -> the parent.
    Optionally carries values (arrays over a batch) and propagates them with the same rules."""

    def __init__(self) -> None:
        self.known: dict[Box, np.ndarray | None] = {}

    def __contains__(self, box: Box) -> bool:
        return box in self.known

    def add(self, box: Box, value: np.ndarray | None = None) -> None:
        work = [(box, value)]
        while work:
            bx, val = work.pop()
            if bx in self.known:
                continue
            self.known[bx] = val
            j, _ = bx
            if j > 0:
                par = _parent(bx)
                sib = _children(par)[1 - bx[1] % 2]
                if par in self.known and sib not in self.known:
                    work.append((sib, _sub(self.known[par], val)))
                if sib in self.known and par not in self.known:
                    work.append((par, _add(val, self.known[sib])))
            for a, b in (_children(bx), _children(bx)[::-1]):
                if a in self.known and b not in self.known:
                    work.append((b, _sub(val, self.known[a])))


def _add(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    return None if a is None or b is None else a + b


def _sub(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    return None if a is None or b is None else a - b


def derivable(stored: Iterable[Box]) -> set[Box]:
    """Boxes whose integral is a ±1 combination of the stored ones (and the root)."""
    alg = BoxAlgebra()
    for bx in [(0, 0), *stored]:
        alg.add(bx)
    return set(alg.known)


def _extra_boxes(alg: BoxAlgebra, w: Wavelet) -> list[Box]:
    """Boxes to store so that both halves of w become known (left first)."""
    left, right = _children(w)
    if left in alg and right in alg:
        return []
    if left in alg:
        return [right]
    if right in alg or w in alg:
        return [left]
    return [left, right]


def boxes_for(wavelets: Sequence[Wavelet]) -> list[Box]:
    """The boxes the construction stores (one channel each): the root, the left half of every
    wavelet, and the right half only when it is not derivable from the others (module
    docstring), decided wavelet by wavelet in the given order. For a wavelet set closed under
    parents, listed parents first, this is 1 + #wavelets."""
    alg = BoxAlgebra()
    alg.add((0, 0))
    stored = [(0, 0)]
    for w in wavelets:
        for bx in _extra_boxes(alg, w):
            alg.add(bx)
            stored.append(bx)
    return sorted(stored)


# --- the S6 construction --------------------------------------------------------------------

def position_bits(L: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """π (L, J): π[t, i] = i-th binary digit of t, most significant first."""
    J = log2_grid(L)
    t = torch.arange(L)
    return torch.stack([(t >> (J - 1 - i)) & 1 for i in range(J)], dim=1).to(dtype)


@dataclass(frozen=True)
class HaarS6:
    """Explicit S6 parameters (module docstring): Δ pre-activation z = W π + b per box channel.

    W (D, J), b (D,), A (D, 1), B_value, C_value scalars; boxes[d] is channel d's box."""

    L: int
    boxes: list[Box]
    W: Tensor
    b: Tensor
    A: Tensor
    B_value: float
    C_value: float
    delta_in: float
    margin: float
    lam: float

    def error_bound(self, max_abs_f: float) -> float:
        """|y - ∫_I f| bound of the module docstring."""
        return (self.lam * self.delta_in * self.L
                + math.exp(-self.margin) * (1 + self.delta_in)) * max_abs_f


def haar_s6(L: int, boxes: Sequence[Box], delta_in: float = 1e-14, margin: float = 40.0,
            lam: float = 1.0, dtype: torch.dtype = torch.float64) -> HaarS6:
    """Build the construction for the given boxes (module docstring)."""
    J = log2_grid(L)
    if not 0 < delta_in or margin <= 0 or lam <= 0:
        raise UserError("need delta_in > 0, margin > 0 and lam > 0")
    D = len(boxes)
    W = torch.zeros(D, J, dtype=dtype)
    b = torch.zeros(D, dtype=dtype)
    c = float(inverse_softplus(torch.tensor(delta_in, dtype=torch.float64))) - margin / 2
    for d, (j, k) in enumerate(boxes):
        if not (0 <= j <= J and 0 <= k < 2**j):
            raise UserError(f"box (j={j}, k={k}) not on a grid of {L} cells")
        n_zero = 0
        for i in range(j):  # bit i of k, most significant first
            bit = (k >> (j - 1 - i)) & 1
            W[d, i] = margin if bit else -margin
            n_zero += 1 - bit
        # z = M(Σ m_i - j + 1/2) + c with m_i = π_i or 1 - π_i
        b[d] = margin * (n_zero - j + 0.5) + c
    A = torch.full((D, 1), -lam, dtype=dtype)
    return HaarS6(L=L, boxes=list(boxes), W=W, b=b, A=A, B_value=1.0 / (L * delta_in),
                  C_value=1.0, delta_in=delta_in, margin=margin, lam=lam)


def s6_box_integrals(u: Tensor, con: HaarS6, backend: str = "auto") -> Tensor:
    """Run the construction on the selective-scan op: u (B, L) -> y (B, D, L), where
    y[:, d, t] = ∫_{I_d ∩ [0, (t+1)/L)} f (up to the error bound)."""
    Bsz, L = u.shape
    if L != con.L:
        raise UserError(f"signal length {L} != construction grid {con.L}")
    bits = position_bits(L, u.dtype)  # (L, J)
    D = len(con.boxes)
    delta = (bits @ con.W.T.to(u.dtype)).T[None].expand(Bsz, D, L)  # (B, D, L) pre-activation
    uu = u[:, None, :].expand(Bsz, D, L).contiguous()  # (B, D, L): the signal on every channel
    Bm = torch.full((Bsz, 1, L), con.B_value, dtype=u.dtype)  # (B, N=1, L)
    Cm = torch.full((Bsz, 1, L), con.C_value, dtype=u.dtype)
    return selective_scan(uu, delta.contiguous(), con.A.to(u.dtype), Bm, Cm,
                          delta_bias=con.b.to(u.dtype), delta_softplus=True, backend=backend)


def analysis_from_boxes(box_values: np.ndarray, boxes: Sequence[Box],
                        wavelets: Sequence[Wavelet]) -> tuple[np.ndarray, np.ndarray]:
    """(∫ f, ⟨f, ψ_w⟩ for each w) from the stored box integrals: (..., D) -> (...,), (..., W).
    ⟨f, ψ_{j,k}⟩ = 2^{j/2}(∫_left f - ∫_right f), the halves propagated by `BoxAlgebra`."""
    alg = BoxAlgebra()
    for d, bx in enumerate(boxes):
        alg.add(bx, box_values[..., d])
    mean = alg.known[(0, 0)]
    coefs = []
    for w in wavelets:
        left, right = _children(w)
        if left not in alg or right not in alg:
            raise UserError(f"wavelet {w}: its halves are not derivable from the stored boxes")
        coefs.append(2 ** (w[0] / 2) * (alg.known[left] - alg.known[right]))
    return mean, np.stack(coefs, -1) if coefs else np.zeros(np.shape(mean) + (0,))


def synthesis(mean: np.ndarray, coefs: np.ndarray, wavelets: Sequence[Wavelet], L: int) -> np.ndarray:
    """P f = (∫ f) 1 + Σ_w c_w ψ_w: (...,), (..., W) -> (..., L)."""
    Psi = np.stack([haar_wavelet(w, L) for w in wavelets]) if wavelets else np.zeros((0, L))
    return mean[..., None] + coefs @ Psi


def s6_haar_projection(f: np.ndarray, wavelets: Sequence[Wavelet], backend: str = "auto",
                       **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """P f computed by the S6 construction: f (L,) or (B, L) -> (P f, coefficients)."""
    f2 = np.atleast_2d(np.asarray(f, dtype=np.float64))
    L = f2.shape[-1]
    wavelets = check_wavelets(wavelets, L)
    boxes = boxes_for(wavelets)
    con = haar_s6(L, boxes, **kwargs)
    y = s6_box_integrals(torch.from_numpy(f2), con, backend=backend)  # (B, D, L)
    mean, coefs = analysis_from_boxes(y[:, :, -1].numpy(), boxes, wavelets)
    proj = synthesis(mean, coefs, wavelets, L)
    return (proj[0], coefs[0]) if np.ndim(f) == 1 else (proj, coefs)


# --- the same construction loaded into the real S6 layer -------------------------------------

def haar_s6_layer(con: HaarS6, dtype: torch.dtype = torch.float64) -> S6:
    """An `ssmlab.layers.s6.S6` whose weights implement the construction.

    Channels: [D box channels | J bit channels | 1 constant channel], d_state = 1, dt_rank = J.
    x_proj reads the bits into dt (rank J) and the constant channel into B and C; dt_proj maps
    the bits to each box channel's Δ pre-activation; D skip = 0. Bit and constant channels are
    scanned too (S6 scans every channel) but frozen (Δ ≈ e^{-60}) and ignored. Feed it
    `haar_s6_inputs(u, con)`; channel d < D of the output equals `s6_box_integrals`.
    """
    D, J = con.W.shape
    width = D + J + 1
    layer = S6(width, d_state=1, dt_rank=J).to(dtype)
    with torch.no_grad():
        xp = torch.zeros(J + 2, width, dtype=dtype)
        for i in range(J):
            xp[i, D + i] = 1.0  # dt_i = π_i
        xp[J, width - 1] = con.B_value  # B_t = B_value · 1
        xp[J + 1, width - 1] = con.C_value  # C_t = C_value · 1
        layer.x_proj.weight.copy_(xp)
        dtw = torch.zeros(width, J, dtype=dtype)
        dtw[:D] = con.W
        layer.dt_proj.weight.copy_(dtw)
        bias = torch.full((width,), -60.0, dtype=dtype)
        bias[:D] = con.b
        layer.dt_proj.bias.copy_(bias)
        A = torch.full((width, 1), -con.lam, dtype=dtype)
        A[:D] = con.A
        layer.A_log.copy_(torch.log(-A))
        layer.D.zero_()
    return layer


def haar_s6_inputs(u: Tensor, con: HaarS6) -> Tensor:
    """x (B, L, D + J + 1) = [u on every box channel | position bits | 1]."""
    Bsz, L = u.shape
    D = len(con.boxes)
    bits = position_bits(L, u.dtype)[None].expand(Bsz, L, -1)  # (B, L, J)
    ones = torch.ones(Bsz, L, 1, dtype=u.dtype)
    return torch.cat([u[:, :, None].expand(Bsz, L, D), bits, ones], dim=-1)


# --- N-term approximation for the approximation experiment -----------------------------------

def _coefficients_by_prefix_sums(f: np.ndarray, wavelets: Sequence[Wavelet]) -> np.ndarray:
    """⟨f, ψ_{j,k}⟩ from the prefix sums S of f: 2^{j/2}(2 S(mid) - S(a) - S(b)) / L."""
    L = f.shape[-1]
    S = np.concatenate([[0.0], np.cumsum(f)])
    j = np.array([w[0] for w in wavelets])
    k = np.array([w[1] for w in wavelets])
    width = L >> j
    a, b = k * width, (k + 1) * width
    mid = (a + b) // 2
    return 2.0 ** (j / 2) * (2 * S[mid] - S[a] - S[b]) / L


def greedy_wavelets(f: np.ndarray, state_budget: int) -> list[Wavelet]:
    """Largest-|coefficient| wavelets, added while the construction's channel count
    (`len(boxes_for(chosen))`, scalar states N) stays within `state_budget`. Returned in the
    order chosen, so `boxes_for` reproduces the same stored boxes."""
    L = f.shape[-1]
    cand = all_wavelets(L)
    coefs = _coefficients_by_prefix_sums(f, cand)
    order = np.argsort(-np.abs(coefs), kind="stable")
    chosen: list[Wavelet] = []
    if state_budget < 1:
        return chosen
    alg = BoxAlgebra()
    alg.add((0, 0))
    used = 1
    for i in order:
        if abs(coefs[i]) == 0:
            break
        extra = _extra_boxes(alg, cand[i])
        if used + len(extra) > state_budget:
            continue
        for bx in extra:
            alg.add(bx)
        used += len(extra)
        chosen.append(cand[i])
    return chosen
