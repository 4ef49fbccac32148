"""The generalization paper's selective SSM (Honarpisheh et al., arXiv 2502.01473, Sec. 2-3).

Glossary (code name -> paper symbol):
    d            d        channels = embedding width (u_t ∈ R^d)
    N            N        states per channel
    A            A        (d, N) diagonals of the d continuous-time N×N state matrices
    s_A          s_A      spectral abscissa max_{c,n} A[c, n] (init value; a probe tracks it)
    p, q         p, q     step parameters: Δ_t = softplus(p + q^T u_t), one scalar per step
    W_B, W_C     W_B, W_C (N, d): B_t = W_B u_t, C_t = W_C u_t
    w / W        w / W    readout from the last step: z = w^T y_T (binary), logits = W y_T
    embedding    u_t      token embedding (nn.Embedding, N(0, 1) like PyTorch's default)

Recurrence (zero-order hold for A, Euler for B, per channel c):
    h_t[c, :] = exp(Δ_t A[c, :]) ⊙ h_{t-1}[c, :] + Δ_t B_t u_t[c],     y_t[c] = C_t^T h_t[c, :]

Lens of attention (the paper's Sec. 3): unrolling gives
    y_t[c] = Σ_{s ≤ t} M[c, t, s] u_s[c],
    M[c, t, s] = Σ_n (W_C u_t)[n] (W_B u_s)[n] · Δ_s · exp(A[c, n] Σ_{j=s+1..t} Δ_j),
i.e. query W_C u_t, key W_B u_s, value u_s, with a data-dependent, state-wise decay gate.

Initialisation (authors' code): A = s_A - a_spread · U[0, 1) elementwise with a_spread = 10,
then A[:, 0] = s_A so that max(A) = s_A at init; W_B, W_C, q, p, w ~ N(0, 1). With
`fix_A=True`, A ≡ s_A is a fixed buffer (the code's `fix_sA` mode).

Two forward paths with the same result (tested in float64, outputs and gradients):
    path="scan"       the full recurrence through ssmlab.ops' selective scan (general per-channel,
                      per-state decays: A (d, N), delta (B, d, L) = Δ_t broadcast over channels;
                      backend `scan_backend`, default "auto" = the fused Numba kernel on CPU),
    path="attention"  only the last row of M (the readout needs y_T alone): O(B L d N), fully
                      vectorised, the default for training because the classifier reads y_T only.
Decay sums Σ_{j=s+1..t} Δ_j are accumulated directly (reverse cumulative sums, ssmlab.ops'
segsum), never as differences of prefix sums, which would cancel catastrophically at large T.
The full matrix M comes from ssmlab.ops.attention_lens.implied_attention.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ssmlab.config import StrictModel
from ssmlab.errors import UserError
from ssmlab.ops.attention_lens import implied_attention
from ssmlab.ops.segsum import segsum
from ssmlab.ops.selective_scan import selective_scan

ForwardPath = Literal["scan", "attention"]
# The backends of ssmlab.ops.selective_scan (its BACKENDS; a test keeps the two equal): a typo is a
# config error naming the field, not a failed run (nor, on the attention path, an unused string).
ScanBackend = Literal["auto", "fused", "fused_c", "fused_numba", "pscan", "reference"]


# Ranges (sanity limits; the experiments' memory estimates refuse what a machine cannot hold).
# |s_A| ≤ 10: at a step Δ ≈ 1 the per-step factor exp(Δ s_A) is then already 5e-5 or 2e4, so
# larger magnitudes only underflow / overflow sooner; the paper's values are within ±0.1.
MAX_WIDTH = 4096
MAX_STATES = 1024
MAX_ABS_SA = 10.0
MAX_A_SPREAD = 100.0
MAX_VOCAB = 2**20
MAX_CLASSES = 10_000


class GenSSMConfig(StrictModel):
    """The paper's model. Defaults: the Majority set-up (d = 4, N = 4, s_A = 0, trainable A)."""

    d: int = Field(4, ge=1, le=MAX_WIDTH, description="channels / embedding width")
    N: int = Field(4, ge=1, le=MAX_STATES, description="states per channel")
    s_A: float = Field(0.0, ge=-MAX_ABS_SA, le=MAX_ABS_SA,
                       description="spectral abscissa at init (max(A) = s_A)")
    fix_A: bool = Field(False, description="A ≡ s_A, not trained (the code's fix_sA buffer)")
    a_spread: float = Field(10.0, ge=0, le=MAX_A_SPREAD,
                            description="A = s_A - a_spread·U[0,1), A[:,0] = s_A")
    use_delta: bool = Field(True, description="Δ_t = softplus(p + q^T u_t); False: Δ_t ≡ 1")
    vocab_size: int | None = Field(None, ge=1, le=MAX_VOCAB,
                                   description="token embedding size; None = real inputs")
    num_classes: int = Field(1, ge=1, le=MAX_CLASSES,
                             description="1 = binary score w^T y_T; K > 1 = logits W y_T")
    path: ForwardPath = Field("attention", description="forward path (module docstring)")
    scan_backend: ScanBackend = Field("auto", description="backend of ssmlab.ops' selective scan")


def run_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
             backend: ScanBackend = "auto") -> Tensor:
    """ssmlab.ops' selective scan: u, delta (B, D, L); A (D, N); B, C (B, N, L) -> y (B, D, L)."""
    return selective_scan(u, delta, A, B, C, backend=backend)


def tail_sums(delta: Tensor) -> Tensor:
    """tail[b, s] = Σ_{j=s+1..L} Δ[b, j]: (B, L) -> (B, L), a reverse exclusive cumsum."""
    rev = delta.flip(-1).cumsum(-1).flip(-1)  # (B, L): Σ_{j=s..L}
    return torch.cat([rev[..., 1:], torch.zeros_like(rev[..., :1])], -1)  # shift: Σ_{j=s+1..L}


class GenSelectiveSSM(nn.Module):
    """The selective SSM block on real inputs u (B, L, d) -> y (B, L, d) (module docstring)."""

    def __init__(self, cfg: GenSSMConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.cfg = cfg
        d, N = cfg.d, cfg.N
        g = generator
        if cfg.fix_A:
            self.register_buffer("A", torch.full((d, N), float(cfg.s_A)))
        else:
            A = cfg.s_A - cfg.a_spread * torch.rand(d, N, generator=g)  # (d, N)
            A[:, 0] = cfg.s_A
            self.A = nn.Parameter(A)
        self.W_B = nn.Parameter(torch.randn(N, d, generator=g))
        self.W_C = nn.Parameter(torch.randn(N, d, generator=g))
        self.q = nn.Parameter(torch.randn(d, generator=g))
        self.p = nn.Parameter(torch.randn(1, generator=g))

    # -- the selective pieces
    def step(self, u: Tensor) -> Tensor:
        """Δ_t = softplus(p + q^T u_t): (B, L, d) -> (B, L)."""
        if not self.cfg.use_delta:
            return u.new_ones(u.shape[:-1])
        return F.softplus(self.p + u @ self.q)  # (B, L)

    def projections(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """B_t = W_B u_t (keys), C_t = W_C u_t (queries): (B, L, d) -> 2 × (B, L, N)."""
        return u @ self.W_B.T, u @ self.W_C.T

    # -- forward paths
    def forward(self, u: Tensor) -> Tensor:
        """All outputs y (B, L, d) by the scan (ssmlab.ops)."""
        delta = self.step(u)  # (B, L)
        Bt, Ct = self.projections(u)  # (B, L, N)
        Bsz, L, d = u.shape
        y = run_scan(
            u.transpose(1, 2).contiguous(),  # (B, d, L)
            delta.unsqueeze(1).expand(Bsz, d, L).contiguous(),  # (B, d, L)
            self.A,  # (d, N)
            Bt.transpose(1, 2).contiguous(),  # (B, N, L)
            Ct.transpose(1, 2).contiguous(),  # (B, N, L)
            backend=self.cfg.scan_backend,
        )  # (B, d, L)
        return y.transpose(1, 2)  # (B, L, d)

    def _last_gate(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """gate[b, s, c, n] = exp(A[c, n] Σ_{j=s+1..L} Δ_j) (B, L, d, N) and
        qk[b, s, n] = C_L[n] B_s[n] Δ_s (B, L, N)."""
        delta = self.step(u)  # (B, L)
        Bt, Ct = self.projections(u)  # (B, L, N)
        gate = torch.exp(tail_sums(delta)[:, :, None, None] * self.A)  # (B, L, d, N)
        qk = Ct[:, -1:, :] * Bt * delta[..., None]  # (B, L, N)
        return gate, qk

    def last_row(self, u: Tensor) -> Tensor:
        """M[:, :, L, :] — the implied attention row of the last step: (B, L, d) -> (B, d, L)."""
        gate, qk = self._last_gate(u)
        return torch.matmul(gate, qk[..., None]).squeeze(-1).transpose(1, 2)  # (B, d, L)

    def last_output(self, u: Tensor) -> Tensor:
        """y_L (B, d) by the configured path."""
        if self.cfg.path == "scan":
            return self.forward(u)[:, -1, :]
        gate, qk = self._last_gate(u)
        row = torch.matmul(gate, qk[..., None]).squeeze(-1)  # (B, L, d): M[b, c, L, s]
        return (row * u).sum(1)  # (B, d)

    def attention_matrix(self, u: Tensor) -> Tensor:
        """The implied causal matrix M (B, d, L, L): y[b, t, c] = Σ_s M[b, c, t, s] u[b, s, c]
        (ssmlab.ops.attention_lens.implied_attention with this model's Δ_t, B_t, C_t)."""
        delta = self.step(u)  # (B, L)
        Bt, Ct = self.projections(u)  # (B, L, N)
        Bsz, L, d = u.shape
        return implied_attention(
            delta.unsqueeze(1).expand(Bsz, d, L),  # (B, d, L)
            self.A,  # (d, N)
            Bt.transpose(1, 2),  # (B, N, L)
            Ct.transpose(1, 2),  # (B, N, L)
        )  # (B, d, L, L)

    def attention_parts(self, u: Tensor) -> dict[str, Tensor]:
        """The paper's attention form: queries W_C u_t, keys W_B u_s, values u_s, steps Δ_s and
        decay sums Σ_{j=s+1..t} Δ_j (0 above the diagonal).
        Shapes (B, L, N), (B, L, N), (B, L, d), (B, L), (B, L, L)."""
        delta = self.step(u)
        Bt, Ct = self.projections(u)
        return {"query": Ct, "key": Bt, "value": u, "delta": delta, "decay_sum": segsum(delta)}


class GenSSMClassifier(nn.Module):
    """Embedding (optional) -> GenSelectiveSSM -> readout from the last step.

    Binary (num_classes = 1): z = w^T y_T, shape (B,). Multi-class: logits W y_T, (B, K)."""

    def __init__(self, cfg: GenSSMConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.cfg = cfg
        g = generator
        self.embedding: nn.Embedding | None = None
        if cfg.vocab_size is not None:
            self.embedding = nn.Embedding(cfg.vocab_size, cfg.d)
            with torch.no_grad():
                self.embedding.weight.copy_(torch.randn(cfg.vocab_size, cfg.d, generator=g))
        self.ssm = GenSelectiveSSM(cfg, generator=g)
        if cfg.num_classes == 1:
            self.w = nn.Parameter(torch.randn(cfg.d, generator=g))
        else:
            self.W = nn.Parameter(torch.randn(cfg.num_classes, cfg.d, generator=g))

    def embed(self, x: Tensor) -> Tensor:
        """Tokens (B, L) int -> u (B, L, d); real inputs (B, L, d) pass through."""
        if self.embedding is not None:
            if x.dtype not in (torch.int64, torch.int32):
                raise UserError("GenSSMClassifier with vocab_size expects integer tokens")
            return self.embedding(x.long())
        return x

    def readout_weight(self) -> Tensor:
        """w (d,) or W (K, d)."""
        return self.w if self.cfg.num_classes == 1 else self.W

    def forward(self, x: Tensor) -> Tensor:
        yT = self.ssm.last_output(self.embed(x))  # (B, d)
        return yT @ self.w if self.cfg.num_classes == 1 else yT @ self.W.T
