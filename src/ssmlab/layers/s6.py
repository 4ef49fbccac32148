"""S6 (Mamba-1's selective SSM) and the Mamba block, faithful to mamba_ssm's `Mamba` module.

Glossary (code name -> Mamba paper symbol, Gu & Dao 2023, Alg. 2 and Fig. 3):
    d_model     D       model width (block input / output channels)
    d_inner     E·D     inner channels of the block (= expand · d_model); for bare S6, = d_model
    d_state     N       state size per channel
    dt_rank     R       rank of the Δ projection (x -> R -> channels), "auto" = ceil(d_model / 16)
    x_proj      s_B, s_C, and the first factor of s_Δ: u_t -> (dt_t ∈ R^R, B_t ∈ R^N, C_t ∈ R^N)
    dt_proj     Linear_R->E, the second factor of s_Δ; its bias is the Δ bias (τ_Δ's shift)
    A_log       log(-A); A = -exp(A_log) ∈ R^{E×N}, diagonal per channel (kept negative)
    D           D       skip connection, y += D ⊙ u
    in_proj     the block's input projection to the two branches (x, z)
    conv1d      causal depthwise convolution of width d_conv on the x branch
    z           the gate branch, y <- y ⊙ SiLU(z)
    out_proj    the block's output projection E·D -> D
    u           the SSM input (after conv + SiLU in the block)   (B, E, L)
    delta       Δ = softplus(dt_proj(dt) ), per channel and step  (B, E, L)

Recurrence (zero-order hold for A, Euler for B, as in mamba_ssm):
    h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t B_t u_t,     y_t = C_t · h_t + D u_t.

Initialisation (mamba_ssm `Mamba.__init__`, reproduced parameter by parameter and in the same
order, so that the same torch seed gives the same weights as mamba_ssm / mambapy):
    dt_proj.weight  U(-σ, σ) ("random") or σ ("constant"), σ = dt_rank^-1/2 · dt_scale
    dt_proj.bias    softplus^-1(dt), dt = exp(U(log dt_min, log dt_max)) clamped ≥ dt_init_floor,
                    marked `_no_reinit` so that a backbone's init never zeroes it
    A_log           log(1..N) per channel (S4D-real: A = -(1, 2, ..., N)), `_no_weight_decay`
    D               ones, `_no_weight_decay`
    other layers    torch defaults (nn.Linear / nn.Conv1d)

Deviation from mamba_ssm: A and D are not forced to float32; they follow the module's dtype so
that float64 checks are exact.

Attention lens (unroll the recurrence above from h_0 = 0; docs/ops.md, "Attention lens"): per
channel e the core is y_t = Σ_{s≤t} M_{e,t,s} u_s with
    M_{e,t,s} = Σ_n C_t[n] · exp(A_{e,n} Σ_{j=s+1..t} Δ_j[e]) · Δ_s[e] · B_s[n],
so `attention_matrix` is (B, H = E channels, L, L) acting on the values u (P = 1), computed by
ssmlab.ops.attention_lens.implied_attention. "Core output" is the scan output before the D skip
(and, for the block, before the z gate and out_proj).

Backends: `backend` is passed to ssmlab.ops.selective_scan ("auto" = fused C kernel on CPU (Numba fallback),
"fused", "pscan", "reference").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssmlab.errors import UserError
from ssmlab.layers.base import Mixer, MixerCore, check_backend
from ssmlab.ops.attention_lens import implied_attention
from ssmlab.ops.selective_scan import selective_scan


def inverse_softplus(y: Tensor) -> Tensor:
    """softplus^-1(y) = log(exp(y) - 1), written as y + log(-expm1(-y)) to stay accurate for
    small and large y (pytorch issue 72759)."""
    return y + torch.log(-torch.expm1(-y))


def sample_dt(n: int, dt_min: float, dt_max: float, dt_init_floor: float) -> Tensor:
    """n step sizes, log-uniform in [dt_min, dt_max], clamped below at dt_init_floor (mamba_ssm)."""
    log_dt = torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)  # (n,)
    return torch.exp(log_dt).clamp(min=dt_init_floor)


def s4d_real_A_log(channels: int, d_state: int) -> Tensor:
    """S4D-real init: A = -(1, 2, ..., N) for every channel, stored as log(-A). (channels, N)."""
    A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(channels, 1)  # (E, N)
    return torch.log(A)


def resolve_dt_rank(dt_rank: int | str, d_model: int) -> int:
    if dt_rank == "auto":
        return math.ceil(d_model / 16)
    if isinstance(dt_rank, bool) or not isinstance(dt_rank, int) or dt_rank < 1:
        raise UserError(f"dt_rank must be 'auto' or a positive int, got {dt_rank!r}")
    return dt_rank


def check_dims(**dims: int) -> None:
    for name, value in dims.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{name} must be a positive int, got {value!r}")


def check_dt_init(dt_min: float, dt_max: float, dt_init: str, dt_scale: float,
                  dt_init_floor: float) -> None:
    if not 0 < dt_min <= dt_max:
        raise UserError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    if dt_init not in ("random", "constant"):
        raise UserError(f"dt_init must be 'random' or 'constant', got {dt_init!r}")
    if dt_scale <= 0 or dt_init_floor < 0:
        raise UserError(f"need dt_scale > 0 and dt_init_floor >= 0, got {dt_scale}, {dt_init_floor}")


def init_dt_proj(dt_proj: nn.Linear, dt_rank: int, dt_min: float, dt_max: float, dt_init: str,
                 dt_scale: float, dt_init_floor: float) -> None:
    """mamba_ssm's Δ projection init (weight scale preserves variance; bias puts softplus(bias)
    log-uniformly in [dt_min, dt_max]); marks the bias `_no_reinit` for backbone inits."""
    std = dt_rank**-0.5 * dt_scale
    if dt_init == "constant":
        nn.init.constant_(dt_proj.weight, std)
    else:
        nn.init.uniform_(dt_proj.weight, -std, std)
    dt = sample_dt(dt_proj.out_features, dt_min, dt_max, dt_init_floor)  # (out,)
    with torch.no_grad():
        dt_proj.bias.copy_(inverse_softplus(dt))
    dt_proj.bias._no_reinit = True


class _SelectiveSSM(Mixer):
    """Parameters and maths shared by `S6` and `MambaBlock` (x_proj, dt_proj, A_log, D)."""

    def _init_ssm(self, d_inner: int, d_state: int, dt_rank: int, dt_min: float, dt_max: float,
                  dt_init: str, dt_scale: float, dt_init_floor: float) -> None:
        check_dt_init(dt_min, dt_max, dt_init, dt_scale, dt_init_floor)
        self.d_inner, self.d_state, self.dt_rank = d_inner, d_state, dt_rank
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
        init_dt_proj(self.dt_proj, dt_rank, dt_min, dt_max, dt_init, dt_scale, dt_init_floor)
        self.A_log = nn.Parameter(s4d_real_A_log(d_inner, d_state))  # (E, N)
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(d_inner))  # (E,)
        self.D._no_weight_decay = True

    @property
    def A(self) -> Tensor:
        """A = -exp(A_log), (E, N)."""
        return -torch.exp(self.A_log)

    def _ssm_inputs(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """u (B, E, L) -> dt before bias/softplus (B, E, L), B (B, N, L), C (B, N, L)."""
        x_dbl = self.x_proj(u.transpose(1, 2))  # (B, L, R + 2N)
        dt, Bm, Cm = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = torch.einsum("er,blr->bel", self.dt_proj.weight, dt)  # (B, E, L), bias added in scan
        return dt, Bm.transpose(1, 2), Cm.transpose(1, 2)  # (B, E, L), (B, N, L), (B, N, L)

    def _scan(self, u: Tensor, z: Tensor | None, skip: bool) -> Tensor:
        """Selective scan of u (B, E, L) -> (B, E, L); `skip` adds D u, z gates with SiLU(z)."""
        dt, Bm, Cm = self._ssm_inputs(u)
        return selective_scan(u, dt, self.A, Bm, Cm, D=self.D if skip else None, z=z,
                              delta_bias=self.dt_proj.bias, delta_softplus=True,
                              backend=self.backend)

    def _delta(self, u: Tensor) -> Tensor:
        """Δ = softplus(dt_proj(dt(u))) (B, E, L), the per-channel step size."""
        dt, _, _ = self._ssm_inputs(u)
        return F.softplus(dt + self.dt_proj.bias[:, None])

    def _ssm_core(self, u: Tensor) -> MixerCore:
        y = self._scan(u, z=None, skip=False)  # (B, E, L)
        return MixerCore(values=u.unsqueeze(-1), output=y.unsqueeze(-1))  # (B, E, L, 1)

    def _ssm_matrix(self, u: Tensor) -> Tensor:
        dt, Bm, Cm = self._ssm_inputs(u)
        return implied_attention(dt, self.A, Bm, Cm, delta_bias=self.dt_proj.bias,
                                 delta_softplus=True)  # (B, E, L, L)


class S6(_SelectiveSSM):
    """Bare selective SSM on (B, L, D) inputs: y = SSM_Δ(x)(x) + D ⊙ x, channels = d_model.

    No input/output projection, convolution or gate (those are `MambaBlock`). Parameters:
    x_proj (D -> R + 2N), dt_proj (R -> D), A_log (D, N), D (D,), initialised as in mamba_ssm
    (module docstring). Core: values x (B, D, L, 1); core output = scan before the D skip.

    Args: d_model D; d_state N (16); dt_rank R ("auto" = ceil(D/16)); dt_min, dt_max, dt_init,
    dt_scale, dt_init_floor (mamba_ssm's Δ init, defaults 0.001, 0.1, "random", 1.0, 1e-4);
    backend: passed to ssmlab.ops.selective_scan ("auto").
    """

    def __init__(self, d_model: int, d_state: int = 16, dt_rank: int | str = "auto",
                 dt_min: float = 0.001, dt_max: float = 0.1, dt_init: str = "random",
                 dt_scale: float = 1.0, dt_init_floor: float = 1e-4, backend: str = "auto"):
        super().__init__()
        check_dims(d_model=d_model, d_state=d_state)
        self.d_model = d_model
        self.backend = check_backend(backend)
        self._init_ssm(d_model, d_state, resolve_dt_rank(dt_rank, d_model), dt_min, dt_max,
                       dt_init, dt_scale, dt_init_floor)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, L, D) -> (B, L, D)."""
        return self._scan(x.transpose(1, 2), z=None, skip=True).transpose(1, 2)

    def core(self, x: Tensor) -> MixerCore:
        return self._ssm_core(x.transpose(1, 2))

    def attention_matrix(self, x: Tensor) -> Tensor:
        """(B, D, L, L): channel d's causal matrix acting on x[:, :, d]."""
        return self._ssm_matrix(x.transpose(1, 2))

    def readout(self, x: Tensor, core_output: Tensor) -> Tensor:
        """forward(x) == readout(x, core(x).output): adds the D skip."""
        return (core_output.squeeze(-1) + self.D[:, None] * x.transpose(1, 2)).transpose(1, 2)

    def delta(self, x: Tensor) -> Tensor:
        """Step sizes Δ_t per channel, (B, L, D) (for probes, e.g. histograms of exp(Δ A))."""
        return self._delta(x.transpose(1, 2)).transpose(1, 2)


class MambaBlock(_SelectiveSSM):
    """The Mamba block (Gu & Dao 2023, Fig. 3), with mamba_ssm's parameter names and init.

        (x, z) = in_proj(h)                          (B, L, E) each, E = expand · d_model
        u      = SiLU(conv1d(x))                     causal depthwise conv of width d_conv
        y      = (S6(u) + D ⊙ u) ⊙ SiLU(z)
        out    = out_proj(y)                         (B, L, d_model)

    Parameter names and shapes equal mamba_ssm's `Mamba`: in_proj.weight (2E, D), conv1d.weight
    (E, 1, d_conv), conv1d.bias (E,), x_proj.weight (R + 2N, E), dt_proj.weight (E, R),
    dt_proj.bias (E,), A_log (E, N), D (E,), out_proj.weight (D, E).

    Core: values u (B, E, L, 1) (after conv and SiLU); core output = scan output before the D
    skip, the z gate and out_proj. `attention_matrix` is (B, E, L, L) acting on u.

    Args: d_model, d_state=16, d_conv=4, expand=2, dt_rank="auto", dt_min=0.001, dt_max=0.1,
    dt_init="random", dt_scale=1.0, dt_init_floor=1e-4, conv_bias=True, bias=False (as in
    mamba_ssm); backend="auto" (passed to ssmlab.ops.selective_scan).
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto", dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init: str = "random", dt_scale: float = 1.0, dt_init_floor: float = 1e-4,
                 conv_bias: bool = True, bias: bool = False, backend: str = "auto"):
        super().__init__()
        check_dims(d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand)
        self.d_model, self.d_conv, self.expand = d_model, d_conv, expand
        self.backend = check_backend(backend)
        d_inner = expand * d_model
        # Creation order = mamba_ssm's, so the same seed draws the same weights.
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=bias)
        self.conv1d = nn.Conv1d(d_inner, d_inner, kernel_size=d_conv, groups=d_inner,
                                padding=d_conv - 1, bias=conv_bias)
        self._init_ssm(d_inner, d_state, resolve_dt_rank(dt_rank, d_model), dt_min, dt_max,
                       dt_init, dt_scale, dt_init_floor)
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)

    def _branches(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, L, D) -> u = SiLU(conv(x-branch)) (B, E, L), z (B, E, L)."""
        L = x.shape[1]
        xz = self.in_proj(x).transpose(1, 2)  # (B, 2E, L)
        xb, z = xz.chunk(2, dim=1)  # (B, E, L) each
        u = F.silu(self.conv1d(xb)[..., :L])  # (B, E, L): causal (left padding d_conv - 1)
        return u, z

    def forward(self, x: Tensor) -> Tensor:
        """x (B, L, D) -> (B, L, D)."""
        u, z = self._branches(x)
        y = self._scan(u, z=z, skip=True)  # (B, E, L): (S6(u) + D u) ⊙ SiLU(z)
        return self.out_proj(y.transpose(1, 2))

    def core(self, x: Tensor) -> MixerCore:
        return self._ssm_core(self._branches(x)[0])

    def attention_matrix(self, x: Tensor) -> Tensor:
        """(B, E, L, L): channel e's causal matrix acting on u[:, e] (after conv and SiLU)."""
        return self._ssm_matrix(self._branches(x)[0])

    def delta(self, x: Tensor) -> Tensor:
        """Step sizes Δ_t per inner channel for block input x, (B, L, E) (for probes)."""
        return self._delta(self._branches(x)[0]).transpose(1, 2)

    def scores(self, x: Tensor) -> Tensor:
        """C_t · B_s for block input x, (B, L, L) (rows t, columns s; for probes): the selective
        score without the decay and Δ, the part of the implied matrix shared by all channels
        (M_{e,t,s} = C_t · (exp(Σ Δ A) ⊙ Δ_s B_s), see ssmlab.ops.attention_lens)."""
        _, Bm, Cm = self._ssm_inputs(self._branches(x)[0])  # (B, N, L) each
        return torch.einsum("bnt,bns->bts", Cm, Bm)

    def readout(self, x: Tensor, core_output: Tensor) -> Tensor:
        """The block's output from its core output (B, E, L, 1): adds D u, gates, projects.
        `forward(x) == readout(x, core(x).output)` (tested)."""
        u, z = self._branches(x)
        y = (core_output.squeeze(-1) + self.D[:, None] * u) * F.silu(z)  # (B, E, L)
        return self.out_proj(y.transpose(1, 2))
