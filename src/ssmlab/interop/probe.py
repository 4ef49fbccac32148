"""The papers' quantities, layer by layer, on a real checkpoint and one input sequence.

For every probed layer ℓ (block input x = RMSNorm_ℓ(h_{ℓ-1}), one forward pass, no head):

    quantity            definition (ssmlab.interop.lens glossary)              paper
    spectrum of A       entries of A = -exp(A_log) (the eigenvalues of the     generalization
                        diagonal A); s_A = max A (spectral abscissa), s_{A,c}
                        per channel, B_A = max |A|
    ρ_A                 max_{t,c,n} |exp(Δ_t[c] A[c,n])| over the input        generalization
    ρ_A bound           max_c exp(s_{A,c} softplus(p_c - ‖q_c‖ B_u)): the       generalization
                        worst case over all inputs with ‖u_t‖ ≤ B_u (lens.rho_bound)
    Δ statistics        per channel mean / std / min / max over the tokens      filtering
    gate                g_t = mean_c Δ_t[c] / mean_{t'} Δ_{t'}[c]: which tokens  filtering
                        the layer lets in (large Δ writes the token into the state
                        and overwrites the memory); the top tokens per layer and
                        per chosen channel
    implied attention   α^c_{t,s} = C_t·(Π_{k=s+1..t} exp(Δ_k A_c)) B_s Δ_s     generalization
                        for the chosen channels and the mean over all channels    ("lens of attention")
                        (Mamba-2: per head, (C_t·B_s) exp(A_h Σ Δ) Δ_s)
    memory factors      f_t = exp(Δ_t A) per channel and state; per token the     selectivity
                        mean kept fraction, the retention Π_{k>s} f_k of token s
                        at the end, horizons 1 / (|s_{A,c}| mean Δ)
    capacity term       ln(M_Δ B_w B_u³ B_B B_C B_A S₂(ρ_A, T)) at T = the input   generalization
                        length, i.e. Thm 3.3's term times √m without its constant
                        and log factors (ssmlab.papers.generalization.theory)

Mapping of the generalization paper's model (Δ_t = softplus(p + qᵀu_t), B_t = W_B u_t,
C_t = W_C u_t, readout w) onto a layer, per channel c:
    Mamba-1  u = SiLU(conv(x-branch)) (the SSM input); p_c = dt_proj.bias[c],
             q_c = (dt_proj.weight · x_proj.weight[:R])[c]; W_B, W_C = the B, C rows of x_proj;
             w = out_proj.weight.  Exact: Δ, B, C are these functions of u.
    Mamba-2  u = x (the block input after the pre-norm), since dt = in_proj_dt(x) skips the
             conv; p_h = dt_bias[h] (+ in_proj bias), q_h = in_proj.weight[dt row h];
             W_B, W_C = the B, C rows of in_proj (an analogue: B, C then pass the conv and SiLU);
             w = out_proj.weight.
B_u = max_t ‖u_t‖ over the probed input, so ρ_A ≤ ρ_A bound holds exactly (tested).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ssmlab.errors import UserError
from ssmlab.interop.checkpoint import LoadedModel
from ssmlab.interop.lens import (
    block_max_abs,
    blocked_implied_attention,
    lookback,
    memory_summary,
    rho_bound,
    rho_measured,
    step_bound,
)
from ssmlab.interop.results import LayerProbe, ProbeResult, Stopwatch, json_number
from ssmlab.interop.spec import MambaSpec
from ssmlab.layers.mamba2 import Mamba2
from ssmlab.layers.s6 import MambaBlock
from ssmlab.ops.attention_lens import ssd_implied_attention
from ssmlab.papers.generalization.theory import log_s2, s2_limit

MAX_TOKENS = 2048  # the heat maps are L × L per channel: longer inputs are cut (and recorded)
DISPLAY = 256  # heat maps are max-pooled to at most DISPLAY × DISPLAY for the figures
TOP_TOKENS = 10
TOP_TOKENS_PER_CHANNEL = 5


@dataclass
class LayerView:
    """What a layer's SSM does on the input (module doc): Δ (L, C), A (C, N'), the chosen
    channels' implied attention (k, L, L) and the channel mean (L, L), and the norms that
    the generalization bound needs."""

    delta: Tensor
    A: Tensor
    alpha: Tensor
    alpha_mean: Tensor
    p: Tensor
    q_norm: Tensor
    B_u: float
    B_B: float
    B_C: float
    B_w: float


# ----------------------------------------------------------------------------- per-arch views


def _mamba1_view(mixer: MambaBlock, x: Tensor, channels: list[int]) -> LayerView:
    u, _ = mixer._branches(x)  # (1, E, L): the SSM input
    dt, Bm, Cm = mixer._ssm_inputs(u)  # (1, E, L) before bias / softplus, (1, N, L) ×2
    delta = F.softplus(dt + mixer.dt_proj.bias[:, None])[0].T.contiguous()  # (L, E)
    A = mixer.A  # (E, N)
    B, C = Bm[0].T.contiguous(), Cm[0].T.contiguous()  # (L, N)
    sel = torch.tensor(channels)
    R, N = mixer.dt_rank, mixer.d_state
    W_dt = mixer.dt_proj.weight @ mixer.x_proj.weight[:R]  # (E, E): Δ = softplus(p + W_dt u)
    W = mixer.x_proj.weight
    return LayerView(
        delta=delta, A=A,
        alpha=blocked_implied_attention(delta[:, sel], A[sel], B, C),  # (k, L, L)
        alpha_mean=blocked_implied_attention(delta, A, B, C, channel_mean=True),  # (L, L)
        p=mixer.dt_proj.bias, q_norm=W_dt.norm(dim=1), B_u=float(u[0].norm(dim=0).max()),
        B_B=float(W[R:R + N].norm()), B_C=float(W[R + N:].norm()),
        B_w=float(mixer.out_proj.weight.norm()))


def _mamba2_view(mixer: Mamba2, x: Tensor, channels: list[int]) -> LayerView:
    _, dt, Bm, Cm, _ = mixer._features(x)  # dt (1, L, H) after softplus; B, C (1, L, G, N)
    M = ssd_implied_attention(dt, mixer.A, Bm, Cm)[0]  # (H, L, L), cheap: scalar decay per head
    E, GN = mixer.d_inner, mixer.ngroups * mixer.d_state
    W = mixer.in_proj.weight  # rows [z (E), x (E), B (GN), C (GN), dt (H)]
    p = mixer.dt_bias
    if mixer.in_proj.bias is not None:
        p = p + mixer.in_proj.bias[2 * E + 2 * GN:]
    return LayerView(
        delta=dt[0], A=mixer.A[:, None], alpha=M[torch.tensor(channels)], alpha_mean=M.mean(0),
        p=p, q_norm=W[2 * E + 2 * GN:].norm(dim=1), B_u=float(x[0].norm(dim=-1).max()),
        B_B=float(W[2 * E:2 * E + GN].norm()), B_C=float(W[2 * E + GN:2 * E + 2 * GN].norm()),
        B_w=float(mixer.out_proj.weight.norm()))


def layer_view(mixer: torch.nn.Module, x: Tensor, channels: list[int]) -> LayerView:
    if isinstance(mixer, MambaBlock):
        return _mamba1_view(mixer, x, channels)
    if isinstance(mixer, Mamba2):
        return _mamba2_view(mixer, x, channels)
    raise UserError(f"the probe reads MambaBlock and Mamba2 layers, not {type(mixer).__name__}")


# ----------------------------------------------------------------------------- quantities


def _token_entry(pos: int, tokens: list[int], labels: list[str] | None, value: float,
                 key: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"position": pos, "token": tokens[pos], key: json_number(value)}
    if labels is not None:
        entry["label"] = labels[pos]
    return entry


def _layer_probe(index: int, view: LayerView, tokens: list[int], labels: list[str] | None,
                 channels: list[int], sw: Stopwatch) -> LayerProbe:
    T = len(tokens)
    with sw("delta, spectrum, bounds"):
        delta = view.delta.detach().double()  # (L, C)
        A = view.A.detach().double()  # (C, N')
        s_A_c = A.max(1).values  # (C,)
        rho = rho_measured(delta, A)
        rho_b = rho_bound(A, view.p.detach(), view.q_norm.detach(), view.B_u)
        M_delta = step_bound(view.p.detach(), view.q_norm.detach(), view.B_u)
        B_A = float(A.abs().max())
        norms = [M_delta, view.B_w, view.B_u ** 3, view.B_B, view.B_C, B_A]
        ls2 = log_s2(rho_b, T)
        log_cap = sum(math.log(v) for v in norms) + ls2 if min(norms) > 0 else -math.inf
        lim = s2_limit(rho_b)
        scalars = {
            "s_A": float(s_A_c.max()), "B_A": B_A, "rho_A": rho, "rho_A_bound": rho_b,
            "M_Delta": M_delta, "B_u": view.B_u, "B_B": view.B_B, "B_C": view.B_C,
            "B_w": view.B_w, "log_S2": ls2, "log_S2_measured": log_s2(rho, T),
            "S2_fraction_of_limit": math.exp(ls2) / lim if math.isfinite(lim) else math.nan,
            "log_capacity_sqrt_m": log_cap, "delta_mean": float(delta.mean()),
        }
        stats = {"mean": delta.mean(0).numpy(), "std": delta.std(0, unbiased=False).numpy(),
                 "min": delta.min(0).values.numpy(), "max": delta.max(0).values.numpy()}
        gate = (delta / delta.mean(0).clamp(min=1e-300)).mean(1)  # (L,)
        k = min(TOP_TOKENS, T)
        top = torch.topk(gate, k).indices.tolist()
        top_tokens = [_token_entry(i, tokens, labels, gate[i], "gate") for i in top]
        kc = min(TOP_TOKENS_PER_CHANNEL, T)
        per_channel = {c: [_token_entry(i, tokens, labels, delta[i, c], "delta")
                           for i in torch.topk(delta[:, c], kc).indices.tolist()]
                       for c in channels}
    with sw("attention summaries"):
        alpha = view.alpha.detach()
        mean = view.alpha_mean.detach()
        back = lookback(torch.cat([alpha, mean[None]]).double())
        look = {str(c): float(back[i]) for i, c in enumerate(channels)} | {"mean": float(back[-1])}
        display = block_max_abs(torch.cat([alpha, mean[None]]), DISPLAY).float().numpy()
    with sw("memory factors"):
        memory = memory_summary(delta, A)
    return LayerProbe(layer=index, scalars=scalars, A_values=A.reshape(-1).numpy(),
                      s_A_channel=s_A_c.numpy(), delta_stats=stats, gate=gate.numpy(),
                      top_tokens=top_tokens, channel_top_tokens=per_channel,
                      alpha_display=display,
                      lookback=look, memory=memory)


def default_channels(n: int, k: int = 8) -> list[int]:
    """k channels evenly spaced over 0..n-1 (all of them when n ≤ k)."""
    if n <= k:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, k)})


def resolve_selection(spec: MambaSpec, layers: list[int] | None,
                      channels: list[int] | None) -> tuple[list[int], list[int]]:
    """Sorted, unique, in-range layers (default all) and channels (default 8 evenly spaced;
    Mamba-2: heads), or a UserError naming the first index out of range."""
    layers = list(range(spec.n_layer)) if layers is None else sorted(set(layers))
    for i in layers:
        if not 0 <= i < spec.n_layer:
            raise UserError(f"layer {i} is out of range: the model has {spec.n_layer} layers "
                            f"(0..{spec.n_layer - 1})")
    channels = default_channels(spec.channels) if channels is None else sorted(set(channels))
    kind = "head" if spec.arch == "mamba2" else "channel"
    for c in channels:
        if not 0 <= c < spec.channels:
            raise UserError(f"{kind} {c} is out of range: each layer has {spec.channels} "
                            f"{kind}s (0..{spec.channels - 1})")
    return layers, channels


@torch.no_grad()
def probe(loaded: LoadedModel, tokens: list[int], layers: list[int] | None = None,
          channels: list[int] | None = None, labels: list[str] | None = None,
          on_layer: Callable[[LayerProbe], None] | None = None,
          sw: Stopwatch | None = None) -> ProbeResult:
    """Run the model on `tokens` and measure every quantity of the module doc at `layers`
    (default all) for `channels` (default 8 evenly spaced; Mamba-2: heads). `on_layer(lp)` is
    called with each layer's result as soon as it is probed (progress bars, figures). Inputs longer than MAX_TOKENS are cut."""
    spec = loaded.spec
    sw = sw or Stopwatch()
    if not tokens:
        raise UserError("no tokens to probe")
    bad = [t for t in tokens if not 0 <= t < spec.vocab_size]
    if bad:
        raise UserError(f"token id {bad[0]} is out of the vocabulary [0, {spec.vocab_size})")
    truncated_from = None
    if len(tokens) > MAX_TOKENS:
        truncated_from = len(tokens)
        tokens, labels = tokens[:MAX_TOKENS], (labels[:MAX_TOKENS] if labels else labels)
    layers, channels = resolve_selection(spec, layers, channels)
    lm = loaded.model
    bb = lm.backbone
    wanted = set(layers)
    out: list[LayerProbe] = []
    with sw("forward"):
        h = bb.encode(torch.tensor([tokens], dtype=torch.long))  # (1, L, D)
    for i in range(max(layers) + 1):
        block = bb.layers[i]
        with sw("forward"):
            x = block.norm(h)  # (1, L, D): the mixer's input
        if i in wanted:
            with sw("attention and Δ (layer views)"):
                view = layer_view(block.mixer, x, channels)
            out.append(_layer_probe(i, view, tokens, labels, channels, sw))
            if on_layer is not None:
                on_layer(out[-1])
        with sw("forward"):
            h = h + block.mixer(x)  # ResidualBlock: h + mixer(norm(h))
    return ProbeResult(source=str(loaded.source), fmt=loaded.fmt, spec=spec.as_dict(),
                       tokens=list(tokens), labels=labels, truncated_from=truncated_from,
                       channels=channels, layers=out, timings=sw.seconds)
