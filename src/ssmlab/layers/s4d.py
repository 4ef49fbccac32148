"""S4D: the diagonal linear time-invariant SSM (Gu, Gupta, Goel, Ré 2022), the selectivity paper's
non-selective baseline (Δ ≡ constant per channel: only exponential basis functions).

Glossary (code name -> paper symbol):
    d_model     D       channels; each channel is an independent single-input SSM
    d_state     N       state size per channel ("lin": N/2 complex modes + conjugates)
    log_dt      log Δ   per-channel step size, input-independent, (D,)
    A           A_n     diagonal state matrix, (D, N) real or (D, N/2) complex
      A_log     log(-Re A)          stored, keeps Re A < 0
      A_imag    Im A                ("lin" only)
    B           B_n     input vector, (D, N) (real or complex), init 1
    C           C_n     output vector, (D, N) (real or complex), init N(0, 1)
    D           D       skip connection, (D,), init 1
    K           K_l     convolution kernel, (D, L)

Discretisation (option `discretization`, default "euler" = mamba_ssm's: ZOH for A, Euler for B,
so S4D differs from S6 only in selectivity):
    Ā = exp(Δ A),   B̄ = Δ B ("euler")  or  B̄ = (exp(ΔA) - 1)/A · B ("zoh", S4D paper)
    recurrent:     h_t = Ā ⊙ h_{t-1} + B̄ u_t,   y_t = Re Σ_n c_n C_n h_{t,n} + D u_t
    convolution:   y = K * u + D u,   K_l = Re Σ_n c_n C_n exp(Δ A_n l) B̄_n
with c_n = 1 for "real" and c_n = 2 for "lin" (the conjugate pair of each complex mode).

Initialisation (option `init`):
    "real"  S4D-Real  A_n = -(n + 1),          n = 0..N-1
    "lin"   S4D-Lin   A_n = -1/2 + iπn,        n = 0..N/2-1 (N must be even)
    Δ: log-uniform in [dt_min, dt_max] per channel (S4D paper: [0.001, 0.1]).

Modes (option `mode`): "conv" (FFT convolution with K, torch.fft, O(L log L)) or "recurrent"
(the scan, ssmlab.ops.linear_recurrence); they are equal (tested).

Attention lens: the implied matrix is the causal Toeplitz matrix M_{d,t,s} = K_{d,t-s}, the same
for every input (B, H = D channels, L, L), acting on values u (P = 1). Core output = K * u,
before the D skip.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ssmlab.errors import UserError
from ssmlab.layers.base import Mixer, MixerCore, check_backend, toeplitz_causal
from ssmlab.layers.s6 import check_dims
from ssmlab.ops.linear_recurrence import linear_recurrence


class S4D(Mixer):
    """Diagonal LTI SSM mixer on (B, L, D): y = K * x + D ⊙ x, per channel (module docstring).

    Args: d_model D; d_state N (16); init "real" (default) | "lin"; dt_min 0.001, dt_max 0.1;
    discretization "euler" (default, as mamba_ssm) | "zoh" (S4D paper); mode "conv" (default) |
    "recurrent"; backend (passed to ssmlab.ops.linear_recurrence in recurrent mode, "auto").
    """

    def __init__(self, d_model: int, d_state: int = 16, init: str = "real",
                 dt_min: float = 0.001, dt_max: float = 0.1, discretization: str = "euler",
                 mode: str = "conv", backend: str = "auto"):
        super().__init__()
        check_dims(d_model=d_model, d_state=d_state)
        if init not in ("real", "lin"):
            raise UserError(f"S4D init must be 'real' or 'lin', got {init!r}")
        if init == "lin" and d_state % 2:
            raise UserError(f"S4D-Lin needs an even d_state (conjugate pairs), got {d_state}")
        if discretization not in ("euler", "zoh"):
            raise UserError(f"discretization must be 'euler' or 'zoh', got {discretization!r}")
        if mode not in ("conv", "recurrent"):
            raise UserError(f"S4D mode must be 'conv' or 'recurrent', got {mode!r}")
        if not 0 < dt_min <= dt_max:
            raise UserError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        self.d_model, self.d_state, self.init = d_model, d_state, init
        self.discretization, self.mode = discretization, mode
        self.backend = check_backend(backend)

        log_dt = torch.rand(d_model) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)  # (D,)
        self.log_dt._no_reinit = True
        if init == "real":
            modes = d_state
            A_re = torch.arange(1, modes + 1, dtype=torch.float32).repeat(d_model, 1)  # (D, N)
            self.A_log = nn.Parameter(torch.log(A_re))
            self.A_imag = None
            self.B = nn.Parameter(torch.ones(d_model, modes))  # (D, N)
            self.C = nn.Parameter(torch.randn(d_model, modes))  # (D, N)
        else:
            modes = d_state // 2
            self.A_log = nn.Parameter(torch.full((d_model, modes), math.log(0.5)))  # (D, N/2)
            self.A_imag = nn.Parameter(math.pi * torch.arange(modes, dtype=torch.float32)
                                       .repeat(d_model, 1))  # (D, N/2)
            # complex B, C stored as real pairs (..., 2) so every parameter is real
            self.B = nn.Parameter(torch.stack([torch.ones(d_model, modes),
                                               torch.zeros(d_model, modes)], -1))  # (D, N/2, 2)
            self.C = nn.Parameter(torch.view_as_real(
                torch.randn(d_model, modes, dtype=torch.complex64)).clone())  # (D, N/2, 2)
        for p in (self.A_log, self.A_imag):
            if p is not None:
                p._no_weight_decay = True
                p._no_reinit = True
        self.D = nn.Parameter(torch.ones(d_model))  # (D,)
        self.D._no_weight_decay = True

    # -- discretised parameters ------------------------------------------------------------
    def _complex(self, p: Tensor) -> Tensor:
        return torch.view_as_complex(p.contiguous()) if self.init == "lin" else p

    def _A(self) -> Tensor:
        """A (D, modes): real -(exp A_log) or complex -exp(A_log) + i A_imag."""
        if self.init == "real":
            return -torch.exp(self.A_log)
        return torch.complex(-torch.exp(self.A_log), self.A_imag)

    def _discrete(self) -> tuple[Tensor, Tensor, Tensor]:
        """(dtA = Δ A, B̄, C·c_n), each (D, modes)."""
        dt = torch.exp(self.log_dt)[:, None]  # (D, 1)
        A = self._A()  # (D, modes)
        dtA = dt * A  # (D, modes)
        B = self._complex(self.B)  # (D, modes)
        if self.discretization == "euler":
            B_bar = dt * B
        else:
            B_bar = torch.expm1(dtA) / A * B
        C = self._complex(self.C) * (2.0 if self.init == "lin" else 1.0)  # (D, modes)
        return dtA, B_bar, C

    def kernel(self, L: int) -> Tensor:
        """K (D, L): K_l = Re Σ_n c_n C_n exp(Δ A_n l) B̄_n (Vandermonde, vectorised)."""
        dtA, B_bar, C = self._discrete()
        l = torch.arange(L, device=dtA.device, dtype=self.log_dt.dtype)  # (L,)
        powers = torch.exp(dtA[:, :, None] * l)  # (D, modes, L)
        K = torch.einsum("dn,dnl->dl", C * B_bar, powers)  # (D, L)
        return K.real if K.is_complex() else K

    # -- the two modes ---------------------------------------------------------------------
    def _conv(self, u: Tensor) -> Tensor:
        """Causal convolution K * u via FFT with zero padding to 2L: u (B, D, L) -> (B, D, L)."""
        L = u.shape[-1]
        K = self.kernel(L)  # (D, L)
        n = 2 * L
        y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(K, n=n), n=n)  # (B, D, 2L)
        return y[..., :L]

    def _recurrent(self, u: Tensor) -> Tensor:
        """The scan h_t = Ā h_{t-1} + B̄ u_t, y_t = Re Σ_n c_n C_n h_t: u (B, D, L) -> (B, D, L).

        The fused linear-recurrence kernel handles complex decays, so S4D-Lin runs on it too."""
        dtA, B_bar, C = self._discrete()
        a = torch.exp(dtA)[..., None]  # (D, modes, 1): the same decay at every step
        b = u[:, :, None, :] * B_bar[..., None]  # (B, D, modes, L)
        h = linear_recurrence(a, b, backend=self.backend)  # (B, D, modes, L)
        y = torch.einsum("bdnl,dn->bdl", h, C)  # (B, D, L)
        return y.real if y.is_complex() else y

    def _core_output(self, u: Tensor) -> Tensor:
        return self._conv(u) if self.mode == "conv" else self._recurrent(u)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, L, D) -> (B, L, D)."""
        u = x.transpose(1, 2)  # (B, D, L)
        return (self._core_output(u) + self.D[:, None] * u).transpose(1, 2)

    def core(self, x: Tensor) -> MixerCore:
        u = x.transpose(1, 2)  # (B, D, L)
        return MixerCore(values=u.unsqueeze(-1), output=self._core_output(u).unsqueeze(-1))

    def attention_matrix(self, x: Tensor) -> Tensor:
        """(B, D, L, L): the causal Toeplitz matrix of K, identical for every input."""
        Bsz, L, _ = x.shape
        return toeplitz_causal(self.kernel(L), L).expand(Bsz, -1, -1, -1)

    def readout(self, x: Tensor, core_output: Tensor) -> Tensor:
        """forward(x) == readout(x, core(x).output): adds the D skip."""
        return (core_output.squeeze(-1) + self.D[:, None] * x.transpose(1, 2)).transpose(1, 2)
