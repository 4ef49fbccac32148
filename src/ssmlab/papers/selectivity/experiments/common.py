"""Shared pieces of the selectivity experiments: the token-model spec, training, accuracy.

Seeds: the run seed s gives disjoint streams (ssmlab.seeding): "train" draws the training set,
"test" the test set, "init" the model's weights (module initialisation runs inside
`seeded(split_seed(s, "init"))`, which restores torch's global RNG afterwards; nothing after the
init draws from the global RNG: the data use numpy generators, the trainer's shuffling its own
torch.Generator).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Annotated, Any, Literal, get_args

import annotated_types as at
import torch
from pydantic import Field
from torch import Tensor

from ssmlab.config import StrictModel
from ssmlab.errors import UserError
from ssmlab.layers.registry import MixerName, mixer_options
from ssmlab.memory import nbytes
from ssmlab.models.lm import CausalLM
from ssmlab.papers.selectivity.model import SelMixer, count_parameters, token_lm
from ssmlab.seeding import seeded, split_seed
from ssmlab.train.trainer import (
    MAX_BATCH,
    MAX_GRAD_CLIP,
    TrainConfig,
    TrainResult,
    eval_rows,
    train,
)

PAPER = "selectivity"
MIXER_LABELS = {"mamba": "Mamba", "mamba2": "Mamba-2", "s4d_block": "S4D", "mamba_dt": "Mamba-ΔT",
                "s4d": "S4D (bare)", "s6": "S6 (bare)", "softmax": "softmax attention",
                "linear": "linear attention", "local": "local attention", "retnet": "RetNet",
                "gla": "GLA"}
# The mixers of the token models, as a type for config fields (a typo is a validation error
# naming the field and the choices): every registry name (ssmlab.layers.registry.MixerName,
# with its own class: "s4d" is the bare S4D layer) and the paper's "s4d_block" (S4D inside the
# gated Mamba block, model.S4DBlock: the paper's "S4D").
LMMixer = SelMixer
MIXERS: tuple[str, ...] = (*get_args(MixerName), "s4d_block")


# theory.mqar names its constructions "mamba2", "mamba", "s4d" (the gated S4D block)
CONSTRUCTION_MIXER = {"mamba2": "mamba2", "mamba": "mamba", "s4d": "s4d_block"}


def label(mixer: str) -> str:
    return MIXER_LABELS.get(mixer, mixer)


MAMBA2_HEADDIM = 8

# ----------------------------------------------------------------------------- ranges
# Sanity limits (generous: far above the paper profiles); the memory estimates (below) are what
# refuse a size this machine cannot hold.
MAX_LEN = 2**16  # sequence lengths
MAX_WIDTH = 4096  # d_model
MAX_STATE = 1024  # N
MAX_SAMPLES = 10**7  # training / test sequences
MAX_STEPS = 10**7
MAX_LR = 100.0
MAX_GRID = 64  # values in one grid (sizes, lengths, state sizes)
# annotated_types constraints (what pydantic enforces on the elements of a grid)
Width = Annotated[int, at.Ge(1), at.Le(MAX_WIDTH)]
StateSize = Annotated[int, at.Ge(1), at.Le(MAX_STATE)]




def check_mamba2_widths(mixers: Iterable[str], widths: Iterable[int], expand: int,
                        name: str) -> None:
    """Mamba-2 runs with headdim 8 (`block_kwargs`): expand·d_model must be a multiple of 8."""
    if "mamba2" in mixers:
        bad = sorted({d for d in widths if (expand * d) % MAMBA2_HEADDIM})
        if bad:
            raise ValueError(f"{name}: mamba2 (headdim {MAMBA2_HEADDIM}) needs expand·d_model "
                             f"divisible by {MAMBA2_HEADDIM}; expand={expand}, d_model={bad}")


class TrainSpec(StrictModel):
    """Adam on token cross-entropy (labels -100 ignored). Not published: ours."""

    lr: float = Field(0.01, gt=0, le=MAX_LR)
    batch_size: int = Field(64, ge=1, le=MAX_BATCH)
    steps: int = Field(300, ge=1, le=MAX_STEPS)
    grad_clip: float | None = Field(1.0, gt=0, le=MAX_GRAD_CLIP)
    n_train: int = Field(2048, ge=1, le=MAX_SAMPLES, description="training sequences (a fixed set)")
    n_test: int = Field(256, ge=1, le=MAX_SAMPLES,
                        description="test sequences (disjoint seed stream)")

    def train_config(self) -> TrainConfig:
        # `steps` updates, however many epochs they take (epochs=None: no epoch limit)
        return TrainConfig(optimizer="adam", lr=self.lr, loss="ce", batch_size=self.batch_size,
                           epochs=None, max_steps=self.steps, grad_clip=self.grad_clip,
                           eval_every=max(1, self.steps // 10), converge_error=None)


def block_kwargs(mixer: LMMixer, d_state: int, d_conv: int, expand: int,
                 seq_len: int) -> tuple[str, dict[str, Any]]:
    """Registry name and options of one mixer at state size N (the paper's "Mamba architecture
    with different mixers": S4D runs inside the same gated block, `s4d_block`). Any other
    registry mixer gets those of d_state, d_conv and expand it has (attention has none)."""
    if mixer == "mamba2":
        # headdim 8 so that small widths have several heads; chunks no longer than needed
        return "mamba2", dict(d_state=d_state, d_conv=d_conv, expand=expand, headdim=8,
                              chunk_size=min(64, max(8, seq_len // 2)))
    if mixer == "s4d_block":
        return "s4d_block", dict(d_state=d_state, d_conv=d_conv, expand=expand)
    if mixer not in MIXERS:
        raise UserError(f"unknown mixer {mixer!r}; one of {', '.join(MIXERS)}")
    allowed = mixer_options(mixer)
    return mixer, {k: v for k, v in dict(d_state=d_state, d_conv=d_conv, expand=expand).items()
                   if k in allowed}


def build_lm(mixer: LMMixer, vocab: int, d_model: int, d_state: int, seq_len: int, seed: int,
             d_conv: int = 4, expand: int = 2,
             pos_encoding: Literal["learned", "sinusoidal"] | None = None) -> CausalLM:
    name, kw = block_kwargs(mixer, d_state, d_conv, expand, seq_len)
    with seeded(split_seed(seed, "init")):
        return token_lm(vocab, d_model, name, mixer_kwargs=kw, pos_encoding=pos_encoding,
                        max_len=max(seq_len, 1))


def fit(model: CausalLM, spec: TrainSpec, inputs: Tensor, labels: Tensor, seed: int) -> TrainResult:
    return train(model, spec.train_config(), (inputs, labels), seed=split_seed(seed, "train"))


@torch.no_grad()
def token_accuracy(model: torch.nn.Module, inputs: Tensor, labels: Tensor, batch: int = 512) -> float:
    """Accuracy over the labelled positions (labels != -100)."""
    model.eval()
    hit = tot = 0
    for i in range(0, inputs.shape[0], batch):
        logits = model(inputs[i:i + batch])
        y = labels[i:i + batch]
        keep = y != -100
        hit += int((logits.argmax(-1)[keep] == y[keep]).sum())
        tot += int(keep.sum())
    return hit / max(tot, 1)


def run_metrics(model: CausalLM, res: TrainResult) -> dict[str, float]:
    m = {"params": float(count_parameters(model)), "steps": float(res.steps),
         "final_train_loss": float(res.history.get("train_loss", [float("nan")])[-1])}
    return m


# ----------------------------------------------------------------------------- memory
# What one run holds at its peak (`Experiment.memory_bytes`), from what the code materialises:
#   data     inputs and labels, int64 (n, L), for the training and the test set, plus one
#            set's worth while it is drawn.
#   model    parameters, gradients and Adam's two moments: 4 × parameters, float32.
#   train    one step at batch B: per token and layer, every activation the forward keeps for
#            the backward plus as many gradients (factor 2). Mamba (fused scan): ~12 (B, L, E)
#            tensors (projections, conv, SiLU, Δ, the scan's inputs and output, gate) and the
#            scan's checkpoints E·N/64 per token; Mamba-ΔT materialises the decays, inputs and
#            states of its recurrence, ~5 (B, E, N, L); Mamba-2's chunked SSD the intra-chunk
#            decays (B, H, L, Q) and chunk states; S4D (FFT convolution) the rfft / product /
#            irfft of (B, E, 2L) and its kernel (E, N, L). Around the block: embeddings,
#            RMSNorms, residuals and the (B, L, V) logits and log-softmax.
#   eval     no-grad passes: the trainer's final evaluation of the training set in chunks of
#            trainer.eval_rows((L,)) rows (at most 4096), and `token_accuracy` in chunks of
#            512; the peak is a few activation-sized tensors at once (no graph is kept).
#   runtime  the first backward pass and optimiser step of a process import torch's autograd /
#            optimiser machinery lazily: ~80 MiB measured (torch 2.13, CPU), counted once; and
#            each Numba kernel specialisation a run calls (dtype × forward / backward of the
#            fused selective scan or linear recurrence) costs ~48 MiB when it is compiled or
#            loaded from the cache (measured: a float64 forward, a float32 forward, a float64
#            backward added 50, 42 and 27 MiB).
TORCH_RUNTIME = 80 * 2**20
NUMBA_KERNEL = 48 * 2**20
# Numba kernels one training calls (a mixer not listed: 2, a fused scan's forward and backward)
KERNELS = {"mamba": 2, "mamba_dt": 2, "mamba2": 0, "s4d_block": 0, "s4d": 0, "softmax": 0,
           "local": 0}
FFT_MIXERS = ("s4d_block", "s4d")
FLOAT = 4


def _inner(mixer: str, d_model: int, expand: int) -> int:
    return expand * d_model


def block_parameters(mixer: str, d_model: int, d_state: int, d_conv: int, expand: int) -> int:
    """Parameters of one block as `block_kwargs` builds it (within a few per cent)."""
    D, N, E = d_model, d_state, _inner(mixer, d_model, expand)
    R = math.ceil(D / 16)
    conv = E * (d_conv + 1)
    if mixer == "mamba2":
        H = max(E // MAMBA2_HEADDIM, 1)
        return D * (2 * E + 2 * N + H) + (E + 2 * N) * (d_conv + 1) + 3 * H + E + E * D
    if mixer in FFT_MIXERS:
        return 2 * D * E + conv + E * (3 * N + 2) + E * D
    dt = R * N + N if mixer == "mamba_dt" else R * E + E
    return 2 * D * E + conv + E * (R + 2 * N) + dt + E * N + E + E * D


def block_floats(mixer: str, d_model: int, d_state: int, expand: int, L: int,
                 grad: bool) -> tuple[float, int]:
    """(floats per token, floats independent of the batch) of one block's pass (notes above)."""
    D, N, E = d_model, d_state, _inner(mixer, d_model, expand)
    R = math.ceil(D / 16)
    if mixer == "mamba":
        per = (12 * E + 4 * N + R + E * N / 64 + D) if grad else 6 * E + 2 * N + D
        fixed = 0
    elif mixer == "mamba_dt":
        # decays' argument and exp, the inputs x ⊗ B, the states and their einsum: 5 (E, N)
        per = (5 * E * N + 8 * E + 4 * N + R + D) if grad else 5 * E * N + 4 * E + D
        fixed = 0
    elif mixer == "mamba2":
        # chunk size Q as `block_kwargs`; B and C repeated per head (H·N), the intra-chunk
        # decays and scores (H·Q, their segment sums twice), the chunk states (H·P·N / Q)
        H = max(E // MAMBA2_HEADDIM, 1)
        Q = min(64, max(8, L // 2))
        per = 10 * E + 4 * N + 2 * H * N + 2 * H * Q + 3 * E * N / Q + D
        fixed = 0
    elif mixer not in FFT_MIXERS:  # any other registry mixer: a generous plain bound, with
        # (B, L, L) attention scores and their softmax / normalisation per head
        per = (12 * E + 4 * N + 4 * L + D) if grad else 6 * E + 2 * N + 2 * L + D
        fixed = 0
    else:  # s4d: the FFT convolution and its kernel
        per = (13 * E + D) if grad else 8 * E + D
        fixed = 2 * 2 * E * N * L  # complex powers (E, N, L) and their exp's input
    return (2 * per if grad else per), fixed


def lm_pass_bytes(mixer: str, vocab: int, d_model: int, d_state: int, expand: int, L: int,
                  batch: int, grad: bool) -> int:
    """Bytes of one pass of a one-layer token_lm over `batch` sequences of length L."""
    per, fixed = block_floats(mixer, d_model, d_state, expand, L, grad)
    around = 9 * d_model + 2 * vocab  # embeddings, norms, residual, logits, log-softmax
    per += 2 * around if grad else around
    return int(batch * L * per * FLOAT + fixed * FLOAT * (2 if grad else 1))


def lm_run_bytes(mixer: str, vocab: int, d_model: int, d_state: int, L: int, spec: TrainSpec,
                 d_conv: int = 4, expand: int = 2, pos_encoding: bool = False) -> int:
    """Peak bytes of one `fit` + `token_accuracy` run of a one-layer token_lm (notes above)."""
    n_tr, n_te = spec.n_train, spec.n_test
    data = nbytes(n_tr + n_te, L, itemsize=16) + nbytes(max(n_tr, n_te), L, itemsize=16)
    params = block_parameters(mixer, d_model, d_state, d_conv, expand)
    params += 2 * vocab * d_model + 2 * d_model + (L * d_model if pos_encoding else 0)
    train_step = lm_pass_bytes(mixer, vocab, d_model, d_state, expand, L,
                               min(spec.batch_size, n_tr), grad=True)
    evals = max(lm_pass_bytes(mixer, vocab, d_model, d_state, expand, L,
                              min(n_tr, eval_rows((L,))), False),
                lm_pass_bytes(mixer, vocab, d_model, d_state, expand, L, min(n_te, 512), False))
    runtime = TORCH_RUNTIME + KERNELS.get(mixer, 2) * NUMBA_KERNEL
    return runtime + data + 4 * params * FLOAT + max(train_step, evals)


def s4d_construction_width(vocab: int) -> tuple[int, int]:
    """(d_model, d_inner) of the S4D MQAR construction (ssmlab.papers.selectivity.theory.mqar.s4d_inner): the
    widest of the three, d_inner ≈ K·V ≈ |V|²/4."""
    K, V = vocab // 2 - 1, vocab - vocab // 2
    Dm = K + V
    return Dm, max(1, math.ceil(K * V / Dm)) * Dm


def construction_weights_bytes(vocab: int) -> int:
    """Peak bytes of building an MQAR construction (ssmlab.papers.selectivity.theory.mqar; the S4D one dominates):
    its in_proj (2E, D) and out_proj (D, E) exist as the float32 module, its float64 copy and
    the float64 matrices written into them (~64 bytes per E·D). Also what `construction_sizes`
    costs, which the recall experiment's analysis calls."""
    Dm, E = s4d_construction_width(vocab)
    return 64 * E * Dm


def mqar_construction_bytes(vocab: int, L: int, n: int) -> int:
    """Peak bytes of running the three MQAR constructions (float64, no grad) on n sequences of
    length L at once: per token, ~8 inner-width tensors of the widest block (S4D's FFT
    convolution over 2L: rfft, product, irfft; Mamba's projections, Δ and scan output, plus its
    checkpoints E·N/64; Mamba-2's single head with P = E and chunk states), the logits and the
    data."""
    K = vocab // 2 - 1
    Dm, E_s4d = s4d_construction_width(vocab)
    per_token = max(8 * E_s4d, 8 * Dm + Dm * K / 64, 8 * Dm + 3 * Dm * K / 64 + 2 * 64) + 2 * vocab
    return int(n * L * per_token * 8) + nbytes(n, L, itemsize=16)
