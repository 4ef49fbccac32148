"""The filtering paper's model: a one-layer, one-head selective SSM with gate w_Δ (A = -1) and a
two-layer ReLU head with fixed ±1/√m output weights.

Paper: arXiv 2602.12499 (ICLR 2026); README.md beside this module, "The setting", states the
model in full (our sources give no section or equation numbers).

Glossary (code name -> paper symbol):
    w_delta     w_Δ ∈ R^d       gate vector: Δ_t = softplus(w_Δᵀ x_t), A = -1
    gates       σ(w_Δᵀ x_t)     input weight (1 - exp(-Δ_t)); the decay is 1 - σ(w_Δᵀ x_t)
    W_B, W_C    W_B, W_C ∈ R^{d×n}  b_t = W_Bᵀ x_t, c_t = W_Cᵀ x_t (n = `state_size`)
    W_O         W_O ∈ R^{m×d}   first layer of the head (m = `width` neurons)
    v           v_i ∈ {±1/√m}   fixed second layer of the head
    G           G_{s,t} = σ(w_Δᵀx_s) Π_{j=s+1..t} (1 - σ(w_Δᵀx_j))   the gate matrix, stored [t, s]

Equations implemented:
    y_t  = Σ_{s≤t} G_{s,t} (b_sᵀ c_t) x_s ∈ R^d                        (closed form, default)
    h_t  = (1 - σ_t) h_{t-1} + σ_t x_t b_tᵀ ∈ R^{d×n},   y_t = h_t c_t   (recurrent form)
    F(X) = (1/L) Σ_l Σ_i v_i ReLU(W_O[i,:] · y_l)                        (the head)
The recurrent form is also available through Mamba's selective scan (`form="scan"`): channels =
the d coordinates of x, state = n, A = -1, Δ_t = softplus(w_Δᵀx_t), B_t = b_t, C_t = c_t and input
u_t = x_t σ_t / Δ_t (Mamba's Euler input weight Δ_t turned into the ZOH weight 1 - e^{-Δ_t} = σ_t
that the paper uses).

Choices for unpublished details (defaults first; README.md, "Choices for details the paper
leaves open"):
    - trained: W_O and w_Δ; W_B, W_C frozen (`train_bc=True` trains them too).
    - init: w_Δ = 0 (every gate 1/2, G_{s,t} = (1/2)^{t-s+1}); W_O ~ N(0, wo_std²) with
      wo_std = 0.01 ("small Gaussian"); v_i = ±1/√m, exactly half of each sign ("balanced",
      default) or random signs ("random"). Why balanced: with the identity kernel the head is
      F = Σ_f a_f M_f (a_f = Σ_i v_i ReLU(W_O[i]·o_f), M_f the mean gated mass of feature f), and
      an excess of neurons of one sign adds a class-independent offset to F that the hinge loss
      does not correct while every margin is below 1 (balanced labels cancel its gradient); on
      locality data, whose signal is only ~g/4 of the common mass, that offset keeps the error
      at chance for long. Balanced signs shrink it.
    - W_B, W_C: "identity" (default): W_B = W_C = the first n columns of I_d (n = d), so
      b_sᵀc_t = x_sᵀx_t ≈ 1[same feature] for orthonormal features: y_t then adds up the gated
      tokens carrying x_t's feature and the margin on locality data at w_Δ = 0 is ∝
      (1/2)^{ΔL⁺} - (1/2)^{ΔL⁻}, the gap of Thm 2. "gaussian": entries N(0, 1/n), independent.
    - gate=False: the ablation of Figs. 11-12; Δ is fixed at softplus(0) (all gates 1/2, w_Δ kept
      at zero and not trained).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ssmlab.config import StrictModel
from ssmlab.layers.registry import MixerName, mixer_class, mixer_options
from ssmlab.models.classifier import SequenceBackbone, mamba_init_
from ssmlab.ops.attention_lens import gate_matrix
from ssmlab.seeding import seeded, split_seed

Form = Literal["closed", "recurrent", "scan"]


# Sanity limits (the paper's profiles use m ≤ 64, depth 5, d_state ≤ 16); the experiments'
# memory estimates decide what fits the machine.
MAX_WIDTH = 2**14  # m, neurons of the head
MAX_STATE = 4096  # n, columns of W_B / W_C (the identity init uses n = d ≤ 4096)
MAX_INIT_STD = 10.0  # an init std far above 1 only saturates the ReLUs
MAX_DEPTH = 64
MAX_D_STATE = 1024
MAX_EXPAND = 16
MAX_D_CONV = 64


def balanced_signs(width: int) -> Tensor:
    """+1 for the first ⌊m/2⌋ neurons, -1 for the rest (m,)."""
    return torch.where(torch.arange(width) < width // 2, 1.0, -1.0)


class FilteringMambaConfig(StrictModel):
    """Options of `FilteringMamba` (defaults: the paper's model as stated in README.md, "The
    setting")."""

    width: int = Field(32, ge=1, le=MAX_WIDTH, description="m, neurons of the head")
    state_size: int | None = Field(None, ge=1, le=MAX_STATE,
                                   description="n, columns of W_B, W_C (None = d)")
    bc_init: Literal["identity", "gaussian"] = "identity"
    wo_std: float = Field(0.01, ge=0, le=MAX_INIT_STD,
                          description="std of the Gaussian init of W_O")
    v_signs: Literal["balanced", "random"] = "balanced"
    gate: bool = Field(True, description="False: fixed Δ = softplus(0), w_Δ not trained")
    train_bc: bool = Field(False, description="also train W_B and W_C")


class FilteringMamba(nn.Module):
    """F(X) for X (B, L, d) -> (B,) scores (module docstring). Parameters: w_delta (d,),
    W_O (m, d); W_B, W_C (d, n) are parameters that the trainer sees only when train_bc; v (m,)
    is a buffer. All randomness comes from `seed`'s init stream."""

    def __init__(self, d: int, cfg: FilteringMambaConfig | None = None, seed: int = 0,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.cfg = cfg = cfg or FilteringMambaConfig()
        self.d, self.m = d, cfg.width
        n = cfg.state_size or d
        gen = torch.Generator().manual_seed(split_seed(seed, "init"))
        self.w_delta = nn.Parameter(torch.zeros(d, dtype=dtype), requires_grad=cfg.gate)
        if cfg.bc_init == "identity":
            eye = torch.eye(d, n, dtype=dtype)  # (d, n)
            W_B, W_C = eye.clone(), eye.clone()
        else:
            W_B = torch.randn(d, n, generator=gen, dtype=dtype) / n**0.5
            W_C = torch.randn(d, n, generator=gen, dtype=dtype) / n**0.5
        self.W_B = nn.Parameter(W_B, requires_grad=cfg.train_bc)
        self.W_C = nn.Parameter(W_C, requires_grad=cfg.train_bc)
        self.W_O = nn.Parameter(torch.randn(cfg.width, d, generator=gen, dtype=dtype) * cfg.wo_std)
        if cfg.v_signs == "balanced":
            signs = balanced_signs(cfg.width)
        else:
            signs = torch.randint(0, 2, (cfg.width,), generator=gen) * 2.0 - 1.0
        self.register_buffer("v", (signs / cfg.width**0.5).to(dtype))  # (m,)
        self._k_cache: tuple[Tensor, tuple[int, int, int], Tensor] | None = None

    # --- pieces -------------------------------------------------------------------------------
    def gate_logits(self, X: Tensor) -> Tensor:
        """z_t = w_Δᵀ x_t (B, L); zero when the gate is ablated."""
        return X @ self.w_delta  # (B, L)

    def gates(self, X: Tensor) -> Tensor:
        """σ(w_Δᵀ x_t) (B, L): each token's input weight (its decay is one minus this)."""
        return torch.sigmoid(self.gate_logits(X))

    def gate_matrix(self, X: Tensor) -> Tensor:
        return gate_matrix(self.gate_logits(X))  # (B, L, L) [t, s]

    def kernel(self, X: Tensor) -> Tensor:
        """K[t, s] = b_sᵀ c_t (B, L, L).

        With frozen W_B, W_C the kernel depends on X only, so full-batch GD would recompute the
        same tensor every step: it is cached for the last X object seen (identity of the tensor
        object, which the cache keeps alive so its memory cannot be reused, plus the version
        counters of X, W_B and W_C, so any in-place change recomputes it)."""
        frozen = not (self.W_B.requires_grad or self.W_C.requires_grad or X.requires_grad)
        versions = (X._version, self.W_B._version, self.W_C._version)
        cache = self._k_cache
        if frozen and cache is not None and cache[0] is X and cache[1] == versions:
            return cache[2]
        b = X @ self.W_B  # (B, L, n)
        c = X @ self.W_C  # (B, L, n)
        K = c @ b.transpose(1, 2)  # (B, L, L)
        if frozen:
            self._k_cache = (X, versions, K.detach())
        return K

    def attention_matrix(self, X: Tensor) -> Tensor:
        """The implied causal matrix M[t, s] = G_{s,t} b_sᵀc_t (B, L, L): y = M X."""
        return self.gate_matrix(X) * self.kernel(X)

    def mix(self, X: Tensor, form: Form = "closed") -> Tensor:
        """y_t (B, L, d) by the closed form, the recurrence, or Mamba's selective scan."""
        if form == "closed":
            return self.attention_matrix(X) @ X  # (B, L, d)
        if form == "recurrent":
            return self._recurrent(X)
        if form == "scan":
            return self._scan(X)
        raise ValueError(f"unknown form {form!r}; one of closed, recurrent, scan")

    def _recurrent(self, X: Tensor) -> Tensor:
        """h_t = (1 - σ_t) h_{t-1} + σ_t x_t b_tᵀ, y_t = h_t c_t (the executable spec)."""
        g = self.gates(X)  # (B, L)
        b = X @ self.W_B  # (B, L, n)
        c = X @ self.W_C  # (B, L, n)
        h = X.new_zeros(X.shape[0], self.d, b.shape[-1])  # (B, d, n)
        ys = []
        for g_t, x_t, b_t, c_t in zip(g.unbind(1), X.unbind(1), b.unbind(1), c.unbind(1),
                                      strict=True):
            h = (1 - g_t)[:, None, None] * h + g_t[:, None, None] * x_t[:, :, None] * b_t[:, None, :]
            ys.append((h @ c_t[:, :, None]).squeeze(-1))  # (B, d)
        return torch.stack(ys, 1)  # (B, L, d)

    def _scan(self, X: Tensor) -> Tensor:
        from ssmlab.ops.selective_scan import selective_scan

        z = self.gate_logits(X)  # (B, L)
        delta = F.softplus(z)  # (B, L)
        # ZOH input weight / Euler input weight; → 1 as z → -∞ (both ≈ e^z), where the
        # division would underflow to 0/0
        pos = delta > 0
        safe = torch.where(pos, delta, torch.ones_like(delta))  # no 0/0, even in the gradient
        weight = torch.where(pos, torch.sigmoid(z) / safe, torch.ones_like(z))  # (B, L)
        u = (X * weight[..., None]).transpose(1, 2)  # (B, d, L)
        dl = delta[:, None, :].expand_as(u).contiguous()  # (B, d, L)
        A = -torch.ones(self.d, self.W_B.shape[1], dtype=X.dtype)  # (d, n)
        b = (X @ self.W_B).transpose(1, 2).contiguous()  # (B, n, L)
        c = (X @ self.W_C).transpose(1, 2).contiguous()  # (B, n, L)
        return selective_scan(u.contiguous(), dl, A, b, c).transpose(1, 2)  # (B, L, d)

    def hidden(self, Y: Tensor) -> Tensor:
        """ReLU(W_O y_l) (B, L, m)."""
        return F.relu(Y @ self.W_O.T)

    def head(self, Y: Tensor) -> Tensor:
        """F = (1/L) Σ_l Σ_i v_i ReLU(W_O[i] · y_l) (B,)."""
        return (self.hidden(Y) @ self.v).mean(1)

    def forward(self, X: Tensor, form: Form = "closed") -> Tensor:
        if form == "closed":
            # W_O y_t = Σ_s M[t, s] (W_O x_s): project first (m ≤ d columns instead of d), the
            # same numbers as head(mix(X)) up to float rounding (tested).
            Z = X @ self.W_O.T  # (B, L, m)
            H = F.relu(self.attention_matrix(X) @ Z)  # (B, L, m)
            return (H @ self.v).mean(1)  # (B,)
        return self.head(self.mix(X, form))


PAPER_MIXER: MixerName = "mamba"  # the paper's block (Table 3)


class MixerChoice(StrictModel):
    """The `mixer` of a stack experiment: a name of ssmlab.layers.registry (a typo is a config
    error naming the choices), default the paper's "mamba". Any other mixer changes the config
    hash, so a variant never shares the paper's runs."""

    mixer: MixerName = Field(PAPER_MIXER, description="mixer of every block (registry name)")


def mixer_kwargs(mixer: str, **options) -> dict:
    """The options among `options` (e.g. d_state, expand, d_conv) that `mixer` accepts; the rest
    keep the mixer's own defaults (a softmax attention has no state size)."""
    accepted = mixer_options(mixer)
    return {k: v for k, v in options.items() if k in accepted}


def has_delta(mixer: str) -> bool:
    """Whether the mixer exposes its step sizes Δ (`delta(x)`: s6, mamba, mamba_dt)."""
    return callable(getattr(mixer_class(mixer), "delta", None))


class PaperHead(nn.Module):
    """The paper's head on top of a stack: F = (1/L) Σ_l Σ_i v_i ReLU(W_O[i]·h_l) for h (B, L, d)
    -> (B,), with W_O (m, d) trained, init N(0, wo_std²) from torch's global RNG (build it under
    `seeded`), and v_i = ±1/√m fixed and balanced (a buffer)."""

    def __init__(self, d: int, width: int, wo_std: float):
        super().__init__()
        self.W_O = nn.Parameter(torch.randn(width, d) * wo_std)
        self.register_buffer("v", balanced_signs(width) / width**0.5)  # (m,)

    def forward(self, h: Tensor) -> Tensor:
        return (F.relu(h @ self.W_O.T) @ self.v).mean(1)  # (B,)


class StackWithHead(nn.Module):
    """ssmlab.models.classifier.SequenceBackbone on the tokens (no input projection: d_model = d,
    so the residual stream and W_O live in the data's feature space), then the paper's head."""

    backbone: SequenceBackbone
    head: PaperHead

    def forward(self, X: Tensor) -> Tensor:
        return self.head(self.backbone(X))  # (B,)

    def delta(self, X: Tensor, layer: int = 0) -> Tensor:
        """Step sizes Δ of block `layer` (B, L, ·) (mixers with `delta`: has_delta)."""
        bb = self.backbone
        h = bb.encode(X)
        for blk in bb.layers[:layer]:
            h = blk(h)
        blk = bb.layers[layer]
        return blk.mixer.delta(blk.norm(h))


class MambaStackConfig(MixerChoice):
    """Options of `MambaStack`, the standard multi-block Mamba of the paper's Table 3 (`mixer`:
    the block's mixer; d_state, expand, d_conv reach it when it has those options)."""

    depth: int = Field(5, ge=1, le=MAX_DEPTH, description="number of Mamba blocks (Table 3: 5)")
    d_state: int = Field(16, ge=1, le=MAX_D_STATE, description="N, state size per channel")
    expand: int = Field(2, ge=1, le=MAX_EXPAND, description="E = expand · d inner channels")
    d_conv: int = Field(4, ge=1, le=MAX_D_CONV, description="causal convolution width")
    width: int = Field(32, ge=1, le=MAX_WIDTH, description="m, neurons of the head")
    wo_std: float = Field(0.01, ge=0, le=MAX_INIT_STD,
                          description="std of the Gaussian init of W_O")


class MambaStack(StackWithHead):
    """`depth` pre-norm residual blocks of `cfg.mixer` (default MambaBlock; mamba_ssm layout:
    SequenceBackbone with input_proj=False, RMSNorm, final RMSNorm) acting directly on the
    tokens, then the paper's head (PaperHead, m = width). Every block parameter and W_O train.
    Init, all under `seed`'s init stream: the blocks' own, then mamba_ssm's (mamba_init_), then
    W_O ~ N(0, wo_std²).

    `delta(X)` returns the first block's step sizes Δ (B, L, E) for the Table 3 probe."""

    def __init__(self, d: int, cfg: MambaStackConfig | None = None, seed: int = 0,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.cfg = cfg = cfg or MambaStackConfig()
        with seeded(split_seed(seed, "init")):
            self.backbone = SequenceBackbone(
                cfg.mixer, d, cfg.depth, d_input=d, input_proj=False,
                mixer_kwargs=mixer_kwargs(cfg.mixer, d_state=cfg.d_state, d_conv=cfg.d_conv,
                                          expand=cfg.expand))
            mamba_init_(self.backbone, cfg.depth)
            self.head = PaperHead(d, cfg.width, cfg.wo_std)
        self.to(dtype)


class BidirectionalSoftmaxAttention(nn.Module):
    """One-head softmax attention over the whole sequence (no causal mask, no positional
    encoding): y_t = Σ_s softmax_s(q_t·k_s / √d) W_V x_s. With the head's mean over positions
    the model is permutation invariant, so it cannot see where tokens are (the slides' "global
    attention performs near random" on locality data)."""

    def __init__(self, d: int):
        super().__init__()
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.scale = d**-0.5

    def forward(self, X: Tensor) -> Tensor:
        q, k, v = self.q_proj(X), self.k_proj(X), self.v_proj(X)  # (B, L, d)
        A = torch.softmax(q @ k.transpose(1, 2) * self.scale, dim=-1)  # (B, L, L)
        return A @ v  # (B, L, d)


class MixerHead(StackWithHead):
    """A one-layer baseline for the comparisons (Fig. 6): one mixer from ssmlab.layers.registry
    (e.g. "softmax", "local") or "softmax_bidir" (BidirectionalSoftmaxAttention), with no norm
    and no residual (SequenceBackbone, depth 1), then the paper's head: F = (1/L) Σ_l Σ_i v_i
    ReLU(W_O[i]·mixer(X)_l). The mixer keeps its own init; all its weights and W_O train."""

    def __init__(self, d: int, mixer: MixerName | Literal["softmax_bidir"], width: int = 16,
                 wo_std: float = 0.01, seed: int = 0, **mixer_kwargs):
        super().__init__()
        spec = BidirectionalSoftmaxAttention if mixer == "softmax_bidir" else mixer
        with seeded(split_seed(seed, "init")):
            self.backbone = SequenceBackbone(spec, d, 1, d_input=d, input_proj=False,
                                             residual=False, norm="none", final_norm=False,
                                             mixer_kwargs=mixer_kwargs or None)
            self.head = PaperHead(d, width, wo_std)
