"""The builtin experiment's model: models.lm.CausalLM over any registered mixer, read out at the
last `n_out` positions (where selective copying asks for the copied tokens).

Shape legend: B batch, L length, V vocab of outputs, K = n_out.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ssmlab.models.lm import CausalLM


class LastPositions(nn.Module):
    def __init__(self, mixer: str, n_in: int, n_out_classes: int, d_model: int, n_layers: int,
                 n_out: int, mixer_kwargs: dict[str, Any] | None = None):
        super().__init__()
        self.n_out = n_out
        self.lm = CausalLM(mixer, d_model, n_layers, vocab_size=n_in, n_outputs=n_out_classes,
                           mixer_kwargs=mixer_kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return self.lm(x)[:, -self.n_out:]  # (B, K, V)


# ----------------------------------------------------------------------------- memory
# One training run of LastPositions holds, at its peak (floats per token and layer, from what
# each mixer's forward materialises; the backward adds as many gradients, factor 2):
#   s6        the fused scan's inputs / output and Δ, B, C (~6 D + 4 N) and checkpoints D·N/64
#   mamba     projections, conv, SiLU, Δ, scan, gate: ~12 E + 4 N (E = expand·D) + E·N/64
#   mamba_dt  decays, inputs and states of its recurrence: ~5 E·N + 8 E
#   mamba2    chunked SSD: ~10 E + 2 H·N + 2 H·Q + 3 E·N/Q (H = E/headdim, Q = chunk_size)
#   s4d       FFT convolution over 2L (rfft, product, irfft): ~8 D, and the kernel (D, N, L)
#   softmax   q, k, v, output (~6 D) and the (B, H, L, L) scores and probabilities: 2 H·L
#   linear    "quadratic": the (B, H, L, L) matrix and its normalised copy, 2 H·L + 8 D;
#             "recurrent": the states φ(k) vᵀ (B, H, L, P, P + 1) twice, 2 D·(P + 1) + 8 D
#   local     the banded scores and weights (B, H, L, w): 3 H·w + 6 D
# around the mixers: the embedding, each RMSNorm (~3 D) and residual, the head (n_out classes).
# Each Numba kernel specialisation (fused scan / linear recurrence, forward and backward) costs
# ~48 MiB when compiled or loaded; torch's first backward imports ~80 MiB of machinery.
TORCH_RUNTIME = 80 * 2**20
NUMBA_KERNEL = 48 * 2**20
FLOAT = 4


def mixer_floats(name: str, D: int, L: int, opts: dict[str, Any]) -> tuple[float, float, int]:
    """(floats per token kept by a forward, floats independent of the batch, Numba kernels)."""
    N = int(opts.get("d_state", 64 if name == "mamba2" else 16))
    E = int(opts.get("expand", 2)) * D
    H = int(opts.get("n_heads", 1))
    if name == "s6":
        return 6 * D + 4 * N + D * N / 64, 0, 2
    if name == "mamba":
        return 12 * E + 4 * N + E * N / 64 + D, 0, 2
    if name == "mamba_dt":
        return 5 * E * N + 8 * E + 4 * N + D, 0, 2
    if name == "mamba2":
        Hm = max(E // int(opts.get("headdim", 64)), 1)
        Q = int(opts.get("chunk_size", 64))
        return 10 * E + 4 * N + 2 * Hm * N + 2 * Hm * Q + 3 * E * N / Q + D, 0, 0
    if name == "s4d":
        return 8 * D, 4 * D * N * L, 0
    if name == "softmax":
        return 6 * D + 2 * H * L, 0, 0
    if name == "linear":
        if opts.get("mode", "recurrent") == "quadratic":
            return 8 * D + 2 * H * L, 0, 0
        return 8 * D + 2 * D * (D // H + 1), 0, 2
    if name == "local":
        return 6 * D + 3 * H * int(opts.get("window", 16)), 0, 0
    return 12 * D, 0, 0  # a mixer added later: a plain estimate


def last_positions_bytes(mixer: str, opts: dict[str, Any], vocab: int, d_model: int,
                         n_layers: int, L: int, n_train: int, n_test: int, batch: int | None,
                         n_tokens: int) -> int:
    """Peak bytes of one training run of LastPositions on selective copying (notes above):
    data, 4 × parameters (weights, gradients, Adam), and the larger of a training step at
    `batch` (every layer's activations kept) and the trainer's no-grad evaluations in chunks of
    4096 (one layer's at a time)."""
    per, fixed, kernels = mixer_floats(mixer, d_model, L, opts)
    around = 6 * d_model + vocab  # norm, residual, embedding, the head's output
    train_b = min(batch or n_train, n_train)
    train = 2 * n_layers * (train_b * L * (per + around) + fixed) * FLOAT
    # no grad: one layer's tensors at a time (the graph is not kept)
    evals = (min(max(n_train, n_test), 4096) * L * (per + around) + fixed) * FLOAT
    # selective copying data: inputs (n, L) and labels (n, K) int64, and while drawing: uniform
    # keys float32 and their argsort int64 (n, seq_len)
    data = (n_train + n_test) * (L + n_tokens) * 8 + max(n_train, n_test) * L * 12
    E = int(opts.get("expand", 2)) * d_model
    N = int(opts.get("d_state", 16))
    block = 4 * d_model * E + 3 * E * N + 4 * E  # a generous bound on any mixer's weights
    params = (vocab + 2) * d_model + vocab * (d_model + 1) + n_layers * (block + d_model)
    return int(TORCH_RUNTIME + kernels * NUMBA_KERNEL + data + 4 * params * FLOAT
               + max(train, evals))
