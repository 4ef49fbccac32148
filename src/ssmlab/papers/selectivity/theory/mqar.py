"""One-layer analytical MQAR solutions for Mamba (S6), Mamba-2 and S4D (selectivity paper,
Huang et al. 2025, associative-recall claim). Weights are loaded into ssmlab's real layers
(`MambaBlock`, `Mamba2`, and `S4DBlock` = the Mamba block around `S4D`) inside the paper's `token_lm`
(ssmlab.models.lm.CausalLM) with no residual and no norms, so the proofs are about the actual modules.

Glossary (code name -> symbol):
    K, V            number of keys / values of the vocabulary (ssmlab.papers.selectivity.data.mqar layout:
                    blank 0, keys 1..K, values K+1..K+V when vocab_size = 2(K+1))
    e_i             embedding: key i -> unit vector i, value v -> unit vector K + v, blank -> 0
                    (keys and values in orthogonal subspaces; d_model = K + V)
    s               SiLU(m), the conv branch's "on" level (m = `scale`)
    δ_w, δ_0        Δ at value tokens (write) and elsewhere (idle, ≈ e^{-20})
    λ               |A|
    pair            (key, value) = (x_{t-1}, x_t), seen by a width-2 causal convolution

Common mechanism: the width-2 convolution (taps on x_{t-1}, x_t) forms the (key, value) pair at
the value position; the state dedicates one column per key; the gate SiLU(z) opens only when the
current token is a key (a query); the head (tied to the embedding) reads the value. Wrong values'
logits are exactly 0 (the readout is a one-hot column selection) and the right one is > 0, so
argmax is exact: 100% accuracy for every sequence length, for up to min(K, V) pairs (all keys of
a sequence distinct, the data's invariant). The total decay is ≥ exp(-λ(P δ_w + L δ_0)), so the
right logit stays far from underflow for any practical L.

Mamba (S6), `mamba_construction`: d_model = K + V, expand = 1 (E = K + V), N = K, d_conv = 2,
dt_rank = 1. Inner channels = [K key channels | V value channels].
    conv: key channels taps (1, 1): u_key(t) = s·(e_{key}(x_{t-1}) + e_{key}(x_t));
          value channels taps (0, 1): u_val(t) = s·e_{val}(x_t).
    x_proj: B_t = C_t = u_key(t)/s (one-hot of the key at t-1 or t: never both, queries and
    context keys are never adjacent); dt_t = w·Σ u_val(t)/s, Δ = softplus(dt + b_0): δ_w on
    value tokens, δ_0 elsewhere. A = -λ, D = 0.
    Write (value position of pair (k, v)): h[val v, col k] += δ_w s (B_t = e_k, u_val = s e_v);
    at key positions B_t = e_k but u_val = 0, at blanks after a query u_val = 0: no write.
    Read (query k): C_t = e_k, so y[val v'] = h[v', k] = δ_w s ∏decay · 1[v' = v_k]; D u_val = 0.
    Gate: z[val channels] = m_z·Σ key dims > 0 at a query; out_proj: val channel v -> dim K + v.
    S6 needs the key in the x branch because its B, C are projections of the scanned channels.

Mamba-2, `mamba2_construction`: d_model = K + V, expand = 1, one head (headdim = E), N = K,
d_conv = 2. The x, B and C branches have their own convolutions (Mamba-2's conv on [x, B, C]):
    x (value channels, taps (0, 1)) = s e_val(x_t);  B (taps (1, 0)) = s e_key(x_{t-1});
    C (taps (0, 1)) = s e_key(x_t);  dt = w·(value dims of x_t), Δ = softplus(dt + b_0).
    h (P × N) += δ_w s² e_v e_k^T at the pair's value; y = h C_t = δ_w s³ ∏decay e_{v_k} at the
    query; gated RMSNorm (positive scale) and out_proj keep the direction. Only V of the
    E = K + V inner channels carry values (Mamba-2 needs no key channels in x).

S4D (Mamba block with S4D), `s4d_construction`: d_model = K + V, E ≥ K·V (one channel per
(key, value) pair; expand = ceil(KV / (K+V)), surplus channels zero), N = 1, d_conv = 2.
    channel (k, v): x-branch = e_key k - e_val v (one in_proj row), conv taps (m, -m), bias -m:
        conv = m(1[x_{t-1}=k] - 1[x_{t-1}=v]) - m(1[x_t=k] - 1[x_t=v]) - m
             = m  iff (x_{t-1}, x_t) = (k, v),  and ≤ 0 otherwise,
    so u = SiLU(conv) is s at the pair and in [-0.28 m e^{-m}... 0] elsewhere ("the convolution
    suppresses meaningless pairs"); S4D with A = -λ (λΔ ≈ 0: an integrator) remembers it; the
    gate z = m_z 1[x_t = k] opens channel (k, ·) only at a query of key k; out_proj sends channel
    (k, v) to value v. Wrong values get only the negligible negative SiLU tails (< 0), the right
    one ≈ s·Δ > 0. No selectivity: convolution and gating alone.

Sizes (`construction_sizes`): Mamba-2 < Mamba < S4D in parameters; the inner width that carries
information is V (Mamba-2), K + V (Mamba), K·V (S4D); state columns N = K, K, 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ssmlab.errors import UserError
from ssmlab.layers.mamba2 import Mamba2
from ssmlab.layers.s6 import MambaBlock, inverse_softplus
from ssmlab.models.lm import CausalLM
from ssmlab.papers.selectivity.data.mqar import MQARConfig
from ssmlab.papers.selectivity.model import S4DBlock, count_parameters, first_block, token_lm
from ssmlab.seeding import seeded, split_seed

MIXERS = ("mamba2", "mamba", "s4d")


@dataclass(frozen=True)
class Vocab:
    """MQAR vocabulary layout (ssmlab.papers.selectivity.data.mqar): blank 0, keys 1..K, values K+1..K+V."""

    n_keys: int
    n_values: int

    @classmethod
    def of(cls, cfg: MQARConfig) -> Vocab:
        # data/mqar: keys 1 .. |V|/2 - 1 and values |V|/2 .. |V| - 1, so values start at K + 1
        return cls(cfg.n_keys, cfg.n_values)

    @property
    def size(self) -> int:
        return 1 + self.n_keys + self.n_values

    @property
    def d_model(self) -> int:
        return self.n_keys + self.n_values


@dataclass(frozen=True)
class ConstructionSize:
    mixer: str
    d_model: int
    d_inner: int  # inner width allocated by the block
    d_used: int  # inner channels that carry information
    d_state: int
    mixer_params: int
    state_size: int  # scalar states of the recurrence (channels × N)


def _embedding(lm: CausalLM, voc: Vocab, dtype: torch.dtype) -> None:
    """Orthonormal key / value embeddings, blank = 0, head tied to the embedding."""
    E = torch.zeros(voc.size, voc.d_model, dtype=dtype)
    for i in range(voc.n_keys):
        E[1 + i, i] = 1.0
    for v in range(voc.n_values):
        E[1 + voc.n_keys + v, voc.n_keys + v] = 1.0
    lm.backbone.embedding.weight.copy_(E)
    lm.head.weight.copy_(E)


def _base_lm(voc: Vocab, mixer: str, kwargs: dict, dtype: torch.dtype, seed: int) -> CausalLM:
    """The bare one-layer model; its initial weights (drawn under the run's "init" stream, not
    the global RNG) are all overwritten by the construction."""
    with seeded(split_seed(seed, "init")):
        lm = token_lm(voc.size, voc.d_model, mixer, mixer_kwargs=kwargs, residual=False,
                      norm=False)
    return lm.to(dtype)


def _delta_bias(delta_idle: float, delta_write: float) -> tuple[float, float]:
    """(b_0, w) with softplus(b_0) = δ_0 and softplus(b_0 + w) = δ_w."""
    b0 = float(inverse_softplus(torch.tensor(delta_idle, dtype=torch.float64)))
    bw = float(inverse_softplus(torch.tensor(delta_write, dtype=torch.float64)))
    return b0, bw - b0


@torch.no_grad()
def mamba_construction(cfg: MQARConfig, scale: float = 4.0, gate: float = 4.0,
                       delta_write: float = 0.5, delta_idle: float = 2e-9,
                       dtype: torch.dtype = torch.float64, seed: int = 0) -> CausalLM:
    """One-layer Mamba (S6) solving MQAR (module docstring)."""
    voc = Vocab.of(cfg)
    K, V, Dm = voc.n_keys, voc.n_values, voc.d_model
    lm = _base_lm(voc, "mamba", dict(d_state=K, d_conv=2, expand=1, dt_rank=1), dtype, seed)
    blk: MambaBlock = first_block(lm)
    _embedding(lm, voc, dtype)
    E = blk.d_inner  # = K + V: channels [keys | values]
    s = scale * torch.sigmoid(torch.tensor(scale, dtype=torch.float64)).item()  # SiLU(scale)
    W_in = torch.zeros(2 * E, Dm, dtype=dtype)
    W_in[:E] = scale * torch.eye(E, Dm, dtype=dtype)  # x branch: the embedding, scaled
    W_in[E + K:, :K] = gate  # z of value channels: open at keys
    blk.in_proj.weight.copy_(W_in)
    conv = torch.zeros(E, 1, 2, dtype=dtype)
    conv[:K, 0, :] = 1.0  # key channels: previous + current token
    conv[K:, 0, 1] = 1.0  # value channels: current token
    blk.conv1d.weight.copy_(conv)
    blk.conv1d.bias.zero_()
    b0, w = _delta_bias(delta_idle, delta_write)
    xp = torch.zeros(1 + 2 * K, E, dtype=dtype)
    xp[0, K:] = w / s  # dt = w at value tokens
    xp[1:1 + K, :K] = torch.eye(K, dtype=dtype) / s  # B_t = one-hot key
    xp[1 + K:, :K] = torch.eye(K, dtype=dtype) / s  # C_t = one-hot key
    blk.x_proj.weight.copy_(xp)
    blk.dt_proj.weight.fill_(1.0)
    blk.dt_proj.bias.fill_(b0)
    lam = 1.0 / max(K, 1)
    blk.A_log.fill_(math.log(lam))
    blk.D.zero_()
    W_out = torch.zeros(Dm, E, dtype=dtype)
    W_out[K:, K:] = torch.eye(V, dtype=dtype)  # value channel v -> value dim v
    blk.out_proj.weight.copy_(W_out)
    return lm


@torch.no_grad()
def mamba2_construction(cfg: MQARConfig, scale: float = 4.0, gate: float = 4.0,
                        delta_write: float = 0.5, delta_idle: float = 2e-9,
                        dtype: torch.dtype = torch.float64, seed: int = 0) -> CausalLM:
    """One-layer Mamba-2 solving MQAR (module docstring)."""
    voc = Vocab.of(cfg)
    K, V, Dm = voc.n_keys, voc.n_values, voc.d_model
    E = Dm  # expand = 1
    lm = _base_lm(voc, "mamba2", dict(d_state=K, d_conv=2, expand=1, headdim=E, ngroups=1),
                  dtype, seed)
    blk: Mamba2 = first_block(lm)
    _embedding(lm, voc, dtype)
    N = K
    b0, w = _delta_bias(delta_idle, delta_write)
    # in_proj rows: [z (E) | x (E) | B (N) | C (N) | dt (H = 1)]
    W_in = torch.zeros(2 * E + 2 * N + 1, Dm, dtype=dtype)
    W_in[K:E, :K] = gate  # z of the value channels (K..E-1): open at keys
    W_in[E + K:2 * E, K:] = scale * torch.eye(V, dtype=dtype)  # x value channels
    W_in[2 * E:2 * E + N, :K] = scale * torch.eye(K, dtype=dtype)  # B branch: keys
    W_in[2 * E + N:2 * E + 2 * N, :K] = scale * torch.eye(K, dtype=dtype)  # C branch: keys
    W_in[-1, K:] = w  # dt = w at value tokens
    blk.in_proj.weight.copy_(W_in)
    conv = torch.zeros(E + 2 * N, 1, 2, dtype=dtype)
    conv[:E, 0, 1] = 1.0  # x: current token
    conv[E:E + N, 0, 0] = 1.0  # B: previous token (the pair's key)
    conv[E + N:, 0, 1] = 1.0  # C: current token (the query)
    blk.conv1d.weight.copy_(conv)
    blk.conv1d.bias.zero_()
    blk.dt_bias.fill_(b0)
    blk.A_log.fill_(math.log(1.0 / max(K, 1)))
    blk.D.zero_()
    W_out = torch.zeros(Dm, E, dtype=dtype)
    W_out[K:, K:] = torch.eye(V, dtype=dtype)
    blk.out_proj.weight.copy_(W_out)
    return lm


def s4d_inner(voc: Vocab) -> tuple[int, int]:
    """(expand, d_inner) for the S4D construction: the smallest integer expand with
    expand·(K + V) ≥ K·V."""
    expand = max(1, math.ceil(voc.n_keys * voc.n_values / voc.d_model))
    return expand, expand * voc.d_model


@torch.no_grad()
def s4d_construction(cfg: MQARConfig, scale: float = 30.0, gate: float = 4.0,
                     delta: float = 1.0, lam: float = 1e-9,
                     dtype: torch.dtype = torch.float64, seed: int = 0) -> CausalLM:
    """One-layer Mamba block with S4D solving MQAR through convolution and gating alone."""
    voc = Vocab.of(cfg)
    K, V, Dm = voc.n_keys, voc.n_values, voc.d_model
    expand, E = s4d_inner(voc)
    lm = _base_lm(voc, "s4d_block", dict(d_state=1, d_conv=2, expand=expand, init="real"),
                  dtype, seed)
    blk: S4DBlock = first_block(lm)
    _embedding(lm, voc, dtype)
    W_in = torch.zeros(2 * E, Dm, dtype=dtype)
    conv = torch.zeros(E, 1, 2, dtype=dtype)
    bias = torch.zeros(E, dtype=dtype)
    W_out = torch.zeros(Dm, E, dtype=dtype)
    for k in range(K):
        for v in range(V):
            c = k * V + v
            W_in[c, k] = 1.0  # x-branch: e_key k - e_val v
            W_in[c, K + v] = -1.0
            W_in[E + c, k] = gate  # z: open at key k
            conv[c, 0, 0] = scale  # previous token
            conv[c, 0, 1] = -scale  # current token
            bias[c] = -scale
            W_out[K + v, c] = 1.0
    bias[K * V:] = -scale  # surplus channels: always off
    blk.in_proj.weight.copy_(W_in)
    blk.conv1d.weight.copy_(conv)
    blk.conv1d.bias.copy_(bias)
    s4d = blk.s4d
    s4d.log_dt.fill_(math.log(delta))
    s4d.A_log.fill_(math.log(lam))
    s4d.B.fill_(1.0)
    s4d.C.fill_(1.0)
    s4d.D.zero_()
    blk.out_proj.weight.copy_(W_out)
    return lm


CONSTRUCTIONS = {"mamba2": mamba2_construction, "mamba": mamba_construction,
                 "s4d": s4d_construction}


def construct(mixer: str, cfg: MQARConfig, dtype: torch.dtype = torch.float64,
              seed: int = 0) -> CausalLM:
    """The construction for `mixer`; `seed` (the run's) seeds the initial weights that the
    construction then overwrites (no output depends on it)."""
    if mixer not in CONSTRUCTIONS:
        raise UserError(f"no MQAR construction for {mixer!r}; choose one of {list(CONSTRUCTIONS)}")
    return CONSTRUCTIONS[mixer](cfg, dtype=dtype, seed=seed)


def construction_sizes(cfg: MQARConfig) -> list[ConstructionSize]:
    """Minimal sizes and mixer parameter counts of the three constructions (module docstring)."""
    voc = Vocab.of(cfg)
    K, V = voc.n_keys, voc.n_values
    out = []
    for mixer in MIXERS:
        blk = first_block(construct(mixer, cfg, dtype=torch.float32))
        if mixer == "mamba":
            used, N, E = K + V, K, blk.d_inner
        elif mixer == "mamba2":
            used, N, E = V, K, blk.d_inner
        else:
            used, N, E = K * V, 1, blk.d_inner
        out.append(ConstructionSize(mixer=mixer, d_model=voc.d_model, d_inner=E, d_used=used,
                                    d_state=N, mixer_params=count_parameters(blk),
                                    state_size=used * N))
    return out


@torch.no_grad()
def mqar_accuracy(model: torch.nn.Module, inputs: Tensor, labels: Tensor) -> float:
    """Fraction of query positions (labels != -100) whose argmax logit is the label."""
    logits = model(inputs)  # (S, L, V)
    keep = labels != -100
    return float((logits.argmax(-1)[keep] == labels[keep]).float().mean())
