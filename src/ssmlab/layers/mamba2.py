"""Mamba-2 mixer (Dao & Gu 2024, "Transformers are SSMs"): scalar decay per head, the SSD scan.
Parameter names, order and init follow mamba_ssm's `Mamba2Simple`.

Glossary (code name -> paper symbol):
    d_model     D       model width
    d_inner     E·D     inner width = expand · d_model = nheads · headdim
    nheads      H       heads; headdim P = value width per head
    ngroups     G       groups sharing B, C (head h reads group h // (H/G)); the paper's "multi-value"
    d_state     N       state size per head (state is P × N)
    in_proj     D -> [z (E·D), x (E·D), B (G·N), C (G·N), dt (H)], in this order
    conv1d      causal depthwise conv (width d_conv) over the concatenation [x, B, C], then SiLU
    dt_bias     Δ bias: Δ_t = softplus(dt_t + dt_bias), (H,)
    A_log       A = -exp(A_log) < 0, one scalar per head, (H,)
    D           skip, per head, (H,)
    norm        gated RMSNorm: RMSNorm(y ⊙ SiLU(z)) (norm_before_gate=False); option rmsnorm=False
                replaces it by y ⊙ SiLU(z); norm_per_group=True normalises each of the G groups of
                d_inner / G channels separately (mamba_ssm's Mamba2, transformers' Mamba2Mixer),
                False (default) over all of d_inner (Mamba2Simple); norm_eps its ε (1e-5)
    out_proj    E·D -> D

Recurrence per head h (state (P, N)):
    h_t = exp(Δ_t A_h) h_{t-1} + Δ_t x_t ⊗ B_t,    y_t = h_t C_t + D_h x_t.

Initialisation (mamba_ssm Mamba2Simple): dt_bias = softplus^-1(dt), dt log-uniform in
[dt_min, dt_max] clamped ≥ dt_init_floor; A uniform in A_init_range = (1, 16), stored as log;
D = 1; projections and conv torch defaults. dt_bias / A_log / D are marked `_no_reinit`.

Attention lens: per head, y_t = Σ_{s≤t} M_{h,t,s} x_s with
    M_{h,t,s} = (C_t · B_s) · exp(A_h Σ_{j=s+1..t} Δ_j[h]) · Δ_s[h]
(the SSD "masked attention" form, ssmlab.ops.attention_lens.ssd_implied_attention), shape
(B, H, L, L), values x (B, H, L, P). Core output = SSD
output before the D skip, the gated norm and out_proj.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssmlab.errors import UserError
from ssmlab.layers.base import Mixer, MixerCore, check_backend
from ssmlab.layers.norms import GatedRMSNorm
from ssmlab.layers.s6 import check_dims, inverse_softplus, sample_dt
from ssmlab.ops.attention_lens import ssd_implied_attention
from ssmlab.ops.ssd import ssd


class Mamba2(Mixer):
    """Mamba-2 mixer on (B, L, d_model) (module docstring).

    Args (defaults as mamba_ssm's Mamba2Simple, except headdim=64 and chunk_size=64):
    d_model; d_state=64; d_conv=4; expand=2; headdim=64 (must divide expand·d_model);
    ngroups=1; A_init_range=(1, 16); dt_min=0.001; dt_max=0.1; dt_init_floor=1e-4;
    rmsnorm=True (gated RMSNorm before out_proj); conv_bias=True; bias=False;
    chunk_size=64 (passed to ssmlab.ops.ssd); backend="auto" (passed to ssmlab.ops.ssd: "auto" =
    "scan" on the CPU, "chunked" elsewhere; "scan", "chunked", "reference"); norm_per_group=False (True: the gated norm normalises
    each group of d_inner / ngroups channels on its own, as mamba_ssm's Mamba2 and transformers'
    Mamba2Mixer — needed to load their checkpoints with ngroups > 1); norm_eps=1e-5.
    """

    def __init__(self, d_model: int, d_state: int = 64, d_conv: int = 4, expand: int = 2,
                 headdim: int = 64, ngroups: int = 1,
                 A_init_range: tuple[float, float] = (1.0, 16.0), dt_min: float = 0.001,
                 dt_max: float = 0.1, dt_init_floor: float = 1e-4, rmsnorm: bool = True,
                 conv_bias: bool = True, bias: bool = False, chunk_size: int = 64,
                 backend: str = "auto", norm_per_group: bool = False, norm_eps: float = 1e-5):
        super().__init__()
        check_dims(d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand,
                   headdim=headdim, ngroups=ngroups, chunk_size=chunk_size)
        d_inner = expand * d_model
        if d_inner % headdim:
            raise UserError(f"headdim={headdim} must divide d_inner = expand·d_model = {d_inner}")
        nheads = d_inner // headdim
        if nheads % ngroups:
            raise UserError(f"ngroups={ngroups} must divide nheads={nheads}")
        lo, hi = A_init_range
        if not 0 < lo <= hi:
            raise UserError(f"need 0 < A_init_range[0] <= A_init_range[1], got {A_init_range}")
        if not 0 < dt_min <= dt_max:
            raise UserError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner, self.headdim, self.nheads, self.ngroups = d_inner, headdim, nheads, ngroups
        self.chunk_size = chunk_size
        self.backend = check_backend(backend)

        # Creation order = mamba_ssm's Mamba2Simple.
        d_in_proj = 2 * d_inner + 2 * ngroups * d_state + nheads
        self.in_proj = nn.Linear(d_model, d_in_proj, bias=bias)
        conv_dim = d_inner + 2 * ngroups * d_state
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, kernel_size=d_conv, groups=conv_dim,
                                padding=d_conv - 1, bias=conv_bias)
        dt = sample_dt(nheads, dt_min, dt_max, dt_init_floor)  # (H,)
        self.dt_bias = nn.Parameter(inverse_softplus(dt))
        A = torch.empty(nheads).uniform_(lo, hi)  # (H,)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(nheads))
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True
            p._no_reinit = True
        if not norm_eps > 0:
            raise UserError(f"norm_eps must be > 0, got {norm_eps}")
        group_size = d_inner // ngroups if norm_per_group else None
        self.norm = GatedRMSNorm(d_inner, eps=norm_eps, group_size=group_size) if rmsnorm else None
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)

    @property
    def A(self) -> Tensor:
        return -torch.exp(self.A_log)  # (H,)

    def _features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """x (B, L, D) -> xh (B, L, H, P), dt (B, L, H) (positive), B, C (B, L, G, N),
        z (B, L, E·D)."""
        Bsz, L, _ = x.shape
        G, N = self.ngroups, self.d_state
        z, xBC, dt = torch.split(self.in_proj(x), [self.d_inner, self.d_inner + 2 * G * N,
                                                   self.nheads], dim=-1)
        xBC = F.silu(self.conv1d(xBC.transpose(1, 2))[..., :L]).transpose(1, 2)  # (B, L, conv_dim)
        xs, Bm, Cm = torch.split(xBC, [self.d_inner, G * N, G * N], dim=-1)
        dt = F.softplus(dt + self.dt_bias)  # (B, L, H)
        xh = xs.reshape(Bsz, L, self.nheads, self.headdim)  # (B, L, H, P)
        return xh, dt, Bm.reshape(Bsz, L, G, N), Cm.reshape(Bsz, L, G, N), z

    def _ssd(self, xh: Tensor, dt: Tensor, Bm: Tensor, Cm: Tensor) -> Tensor:
        return ssd(xh, dt, self.A, Bm, Cm, chunk_size=self.chunk_size,
                   backend=self.backend)  # (B, L, H, P)

    def _readout(self, xh: Tensor, y: Tensor, z: Tensor) -> Tensor:
        """y (B, L, H, P) core output -> (B, L, D): D skip, gate (+ norm), out_proj."""
        y = y + self.D[:, None] * xh  # (B, L, H, P)
        y = y.flatten(2)  # (B, L, E·D)
        y = self.norm(y, z) if self.norm is not None else y * F.silu(z)
        return self.out_proj(y)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, L, D) -> (B, L, D)."""
        xh, dt, Bm, Cm, z = self._features(x)
        return self._readout(xh, self._ssd(xh, dt, Bm, Cm), z)

    def core(self, x: Tensor) -> MixerCore:
        xh, dt, Bm, Cm, _ = self._features(x)
        y = self._ssd(xh, dt, Bm, Cm)  # (B, L, H, P)
        return MixerCore(values=xh.transpose(1, 2), output=y.transpose(1, 2))  # (B, H, L, P)

    def attention_matrix(self, x: Tensor) -> Tensor:
        """(B, H, L, L): head h's causal matrix acting on its values x_h (B, L, P)."""
        _, dt, Bm, Cm, _ = self._features(x)
        return ssd_implied_attention(dt, self.A, Bm, Cm)

    def readout(self, x: Tensor, core_output: Tensor) -> Tensor:
        """forward(x) == readout(x, core(x).output)."""
        xh, _, _, _, z = self._features(x)
        return self._readout(xh, core_output.transpose(1, 2), z)
