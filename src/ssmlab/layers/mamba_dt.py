"""Mamba-ΔT: the selectivity paper's variant (Huang et al. 2025, arXiv 2506.11891) whose input
dependence runs along the state dimension N instead of the channel dimension.

Glossary (code name -> paper symbol):
    d_inner     d       channels of the SSM (= expand · d_model inside the block)
    d_state     N       state size; h_t ∈ R^{d×N}, one column per "key"
    A_log       log(-Λ); Λ = -exp(A_log) ∈ R^{d×N} (S4D-real init: Λ_{·,n} = -n)
    x_proj      u_t -> (dt_t ∈ R^R, B_t ∈ R^N, C_t ∈ R^N)
    dt_proj     R -> N; Δ(x_t) = softplus(dt_proj(dt_t)) ∈ R^N (one step per state, shared by
                all channels); bias init softplus^-1 of log-uniform [dt_min, dt_max], `_no_reinit`
    D           skip, (d,)
    in_proj, conv1d, z, out_proj   as in the Mamba block (ssmlab.layers.s6.MambaBlock)

Recurrence (the selectivity paper's Mamba-ΔT; its setting: ssmlab/papers/selectivity/README.md):
    h_t = exp(Λ ⊙ (1_d ⊗ Δ(x_t))) ⊙ h_{t-1} + x_t ⊗ B_t,      y_t = h_t C_t  (+ D x_t)
so column n of the memory is erased when Δ_n → ∞ and frozen when Δ_n → 0, independently of
the other columns. The paper's input term carries no Δ; option `input_scaling="delta"` uses
x_t ⊗ (Δ_t ⊙ B_t) instead (Mamba's Euler step) — default "none" (as the paper states it).

Block: identical to the Mamba block with S6 replaced by this SSM, so that Mamba and Mamba-ΔT
compare at equal size: (x, z) = in_proj(h); u = SiLU(conv1d(x)); y = (SSM(u) + D u) ⊙ SiLU(z);
out = out_proj(y). The scan runs on ssmlab.ops.delta_t_scan (fused Numba kernel on the CPU,
(B, L, d) / (B, L, N) inputs as they are, no (B, d, N, L) tensors; backend "reference" = its
loop over time).

Attention lens: per channel e, y_t = Σ_{s≤t} M_{e,t,s} u_s with
    M_{e,t,s} = Σ_n C_t[n] exp(Λ_{e,n} Σ_{j=s+1..t} Δ_j[n]) B_s[n]     (· Δ_s[n] if "delta"),
shape (B, H = d channels, L, L), values u (P = 1). Core output = SSM output before the D skip,
the z gate and out_proj.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssmlab.errors import UserError
from ssmlab.layers.base import Mixer, MixerCore, check_backend
from ssmlab.layers.s6 import (
    check_dims,
    check_dt_init,
    init_dt_proj,
    resolve_dt_rank,
    s4d_real_A_log,
)
from ssmlab.ops.delta_t_scan import delta_t_scan
from ssmlab.ops.segsum import causal_mask, segsum


class MambaDeltaT(Mixer):
    """Mamba block with the ΔT selective SSM (module docstring), on (B, L, d_model).

    Args: d_model; d_state=16; d_conv=4; expand=2; dt_rank="auto" (ceil(d_model/16));
    dt_min=0.001, dt_max=0.1, dt_init="random", dt_scale=1.0, dt_init_floor=1e-4 (Δ init as
    in Mamba, over the N states); conv_bias=True; bias=False; input_scaling="none" | "delta";
    backend="auto" | "fused" | "reference" (passed to ssmlab.ops.delta_t_scan).
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto", dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init: str = "random", dt_scale: float = 1.0, dt_init_floor: float = 1e-4,
                 conv_bias: bool = True, bias: bool = False, input_scaling: str = "none",
                 backend: str = "auto"):
        super().__init__()
        check_dims(d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand)
        check_dt_init(dt_min, dt_max, dt_init, dt_scale, dt_init_floor)
        if input_scaling not in ("none", "delta"):
            raise UserError(f"input_scaling must be 'none' or 'delta', got {input_scaling!r}")
        d_inner = expand * d_model
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner, self.dt_rank = d_inner, resolve_dt_rank(dt_rank, d_model)
        self.input_scaling = input_scaling
        self.backend = check_backend(backend)

        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=bias)
        self.conv1d = nn.Conv1d(d_inner, d_inner, kernel_size=d_conv, groups=d_inner,
                                padding=d_conv - 1, bias=conv_bias)
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_state, bias=True)  # Δ ∈ R^N
        init_dt_proj(self.dt_proj, self.dt_rank, dt_min, dt_max, dt_init, dt_scale, dt_init_floor)
        self.A_log = nn.Parameter(s4d_real_A_log(d_inner, d_state))  # (d, N)
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(d_inner))
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)

    @property
    def Lambda(self) -> Tensor:
        """Λ = -exp(A_log), (d, N)."""
        return -torch.exp(self.A_log)

    def _features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """x (B, L, D) -> u (B, L, d), z (B, L, d), Δ (B, L, N), B (B, L, N), C (B, L, N)."""
        L = x.shape[1]
        xb, z = self.in_proj(x).chunk(2, dim=-1)  # (B, L, d) each
        u = F.silu(self.conv1d(xb.transpose(1, 2))[..., :L]).transpose(1, 2)  # (B, L, d)
        dt, Bm, Cm = torch.split(self.x_proj(u), [self.dt_rank, self.d_state, self.d_state],
                                 dim=-1)
        delta = F.softplus(self.dt_proj(dt))  # (B, L, N)
        return u, z, delta, Bm, Cm

    def delta(self, x: Tensor) -> Tensor:
        """Δ(x_t) ∈ R^N per step, (B, L, N) (for probes)."""
        return self._features(x)[2]

    def _ssm(self, u: Tensor, delta: Tensor, Bm: Tensor, Cm: Tensor) -> Tensor:
        """The ΔT scan: u (B, L, d), Δ, B, C (B, L, N) -> core output (B, L, d)."""
        B_in = Bm * delta if self.input_scaling == "delta" else Bm  # (B, L, N)
        return delta_t_scan(u, delta, self.Lambda, B_in, Cm, backend=self.backend)  # (B, L, d)

    def _readout(self, u: Tensor, z: Tensor, y: Tensor) -> Tensor:
        return self.out_proj((y + self.D * u) * F.silu(z))  # (B, L, D)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, L, D) -> (B, L, D)."""
        u, z, delta, Bm, Cm = self._features(x)
        return self._readout(u, z, self._ssm(u, delta, Bm, Cm))

    def core(self, x: Tensor) -> MixerCore:
        u, _, delta, Bm, Cm = self._features(x)
        y = self._ssm(u, delta, Bm, Cm)  # (B, L, d)
        return MixerCore(values=u.transpose(1, 2)[..., None], output=y.transpose(1, 2)[..., None])

    def attention_matrix(self, x: Tensor) -> Tensor:
        """(B, d, L, L): channel e's causal matrix acting on u[:, :, e]."""
        _, _, delta, Bm, Cm = self._features(x)
        dT = delta.transpose(1, 2)  # (B, N, L)
        log_decay = self.Lambda[None, :, :, None] * dT[:, None]  # (B, d, N, L)
        L = x.shape[1]
        decay = torch.exp(segsum(log_decay)) * causal_mask(L, x.device)  # (B, d, N, L, L)
        B_in = Bm * delta if self.input_scaling == "delta" else Bm  # (B, L, N)
        return torch.einsum("btn,bents,bsn->bets", Cm, decay, B_in)  # (B, d, L, L)

    def readout(self, x: Tensor, core_output: Tensor) -> Tensor:
        """forward(x) == readout(x, core(x).output)."""
        u, z, _, _, _ = self._features(x)
        return self._readout(u, z, core_output.squeeze(-1).transpose(1, 2))
