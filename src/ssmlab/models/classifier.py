"""Generic sequence models built from any mixer of ssmlab.layers: a residual backbone, a sequence
classifier (pooled logits) and, in models/lm.py, a causal per-position head.

Layout (mamba_ssm's MixerModel, pre-norm):
    h_0 = encoder(x) [+ positional encoding]          embedding (vocab_size), linear (d_input),
                                                      or the features themselves (input_proj=False)
    h_l = h_{l-1} + mixer_l(norm_l(h_{l-1}))           l = 1..depth   (ResidualBlock)
                                                      (residual=False: h_l = mixer_l(norm_l(h_{l-1})))
    h   = norm_f(h_depth)                              (final_norm=True)
    classifier: logits = head(pool(h))                 pool = last position | mean over positions

Glossary:
    mixer           a registry name (ssmlab.layers.registry: "s6", "mamba", "s4d", "mamba2",
                    "mamba_dt", "softmax", "linear", "local") or a factory d_model -> nn.Module
    mixer_kwargs    options of the named mixer (checked: unknown keys are UserErrors)
    pos_encoding    "none" | "sinusoidal" (Vaswani et al.) | "learned" (needs max_len)
    input_proj      False: features enter the stack as they are (needs d_input == d_model), so
                    the residual stream lives in the data's feature space
    residual        False: a plain stack h <- mixer(norm(h)) (e.g. an analytical construction)
    norm            "rms" (RMSNorm) | "layer" (LayerNorm) | "none"
    init            "mamba": mamba_ssm's `_init_weights` — nn.Linear biases zeroed unless marked
                    `_no_reinit`, embeddings N(0, 0.02²), and (rescale_prenorm_residual) each
                    `out_proj.weight` re-drawn kaiming-uniform and divided by sqrt(depth);
                    "none": keep every module's own init.

The backbone's init never overwrites a mixer's own SSM init: it skips every parameter marked
`_no_reinit` (dt_proj.bias, S4D's / Mamba-2's Δ and A parameters) and never touches A_log or D
(tested: after building a classifier, they equal what the mixer set). Note: copy.deepcopy drops
the `_no_reinit` attribute of parameters (PyTorch behaviour), so re-running `mamba_init_` on a
deep copy would zero dt_proj.bias; the classifier runs it once, at construction.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from ssmlab.config import StrictModel
from ssmlab.errors import UserError
from ssmlab.layers.norms import RMSNorm
from ssmlab.layers.registry import MixerName, build_mixer
from ssmlab.seeding import seeded

MixerSpec = str | Callable[[int], nn.Module]
Pooling = Literal["last", "mean"]
PosEncoding = Literal["none", "sinusoidal", "learned"]
NormKind = Literal["rms", "layer", "none"]
InitKind = Literal["mamba", "none"]


def make_norm(kind: str, d: int, eps: float = 1e-5) -> nn.Module:
    if kind == "rms":
        return RMSNorm(d, eps=eps)
    if kind == "layer":
        return nn.LayerNorm(d, eps=eps)
    if kind == "none":
        return nn.Identity()
    raise UserError(f"norm must be 'rms', 'layer' or 'none', got {kind!r}")


def sinusoidal_encoding(L: int, d: int, dtype: torch.dtype, device=None) -> Tensor:
    """PE[t, 2i] = sin(t / 10000^{2i/d}), PE[t, 2i+1] = cos(t / 10000^{2i/d}); (L, d)."""
    t = torch.arange(L, dtype=torch.float64, device=device)[:, None]  # (L, 1)
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, d, 2, dtype=torch.float64,
                                                       device=device) / d)  # (ceil(d/2),)
    pe = torch.zeros(L, d, dtype=torch.float64, device=device)
    pe[:, 0::2] = torch.sin(t * freq)
    pe[:, 1::2] = torch.cos(t * freq[: d // 2])
    return pe.to(dtype)


def mamba_init_(model: nn.Module, depth: int, rescale_prenorm_residual: bool = True,
                initializer_range: float = 0.02) -> None:
    """mamba_ssm's `_init_weights`, applied to every submodule; honours `_no_reinit`."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            if module.bias is not None and not getattr(module.bias, "_no_reinit", False):
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            if not getattr(module.weight, "_no_reinit", False):
                nn.init.normal_(module.weight, std=initializer_range)
        if rescale_prenorm_residual:
            out_proj = getattr(module, "out_proj", None)
            if isinstance(out_proj, nn.Linear) and not getattr(out_proj.weight, "_no_reinit", False):
                nn.init.kaiming_uniform_(out_proj.weight, a=math.sqrt(5))
                with torch.no_grad():
                    out_proj.weight /= math.sqrt(depth)


class ResidualBlock(nn.Module):
    """Pre-norm residual block: h + mixer(norm(h)); residual=False: mixer(norm(h))."""

    def __init__(self, mixer: nn.Module, norm: nn.Module, residual: bool = True):
        super().__init__()
        self.norm = norm
        self.mixer = mixer
        self.residual = residual

    def forward(self, h: Tensor) -> Tensor:
        out = self.mixer(self.norm(h))
        return h + out if self.residual else out


class SequenceBackbone(nn.Module):
    """Encoder + positional encoding + `depth` residual mixer blocks + final norm (module doc).

    Input: token ids (B, L) int when vocab_size is given, else features (B, L, d_input)
    ((B, L) is accepted when d_input == 1). Output: (B, L, d_model).
    """

    def __init__(self, mixer: MixerSpec, d_model: int, depth: int, vocab_size: int | None = None,
                 d_input: int | None = None, pos_encoding: PosEncoding = "none",
                 max_len: int | None = None, norm: NormKind = "rms", norm_eps: float = 1e-5,
                 final_norm: bool = True, mixer_kwargs: dict[str, Any] | None = None,
                 input_proj: bool = True, residual: bool = True):
        super().__init__()
        if (vocab_size is None) == (d_input is None):
            raise UserError("give exactly one of vocab_size (token inputs) or d_input (features)")
        if not input_proj and d_input != d_model:
            raise UserError(f"input_proj=False feeds the features as they are: needs d_input == "
                            f"d_model, got d_input={d_input}, d_model={d_model}")
        for name, v in (("d_model", d_model), ("depth", depth), ("vocab_size", vocab_size),
                        ("d_input", d_input), ("max_len", max_len)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise UserError(f"{name} must be a positive int, got {v!r}")
        if pos_encoding not in ("none", "sinusoidal", "learned"):
            raise UserError(f"pos_encoding must be none, sinusoidal or learned, got {pos_encoding!r}")
        if pos_encoding == "learned" and max_len is None:
            raise UserError("pos_encoding='learned' needs max_len")
        if mixer_kwargs and not isinstance(mixer, str):
            raise UserError("mixer_kwargs apply to a mixer given by name, not to a factory")
        self.d_model, self.depth, self.d_input = d_model, depth, d_input
        self.pos_encoding, self.max_len = pos_encoding, max_len
        if vocab_size is not None:
            self.embedding: nn.Module = nn.Embedding(vocab_size, d_model)
        elif input_proj:
            self.embedding = nn.Linear(d_input, d_model)
        else:
            self.embedding = nn.Identity()
        self.pos_embedding = nn.Embedding(max_len, d_model) if pos_encoding == "learned" else None
        self.layers = nn.ModuleList(
            ResidualBlock(self._mixer(mixer, d_model, mixer_kwargs or {}),
                          make_norm(norm, d_model, norm_eps), residual)
            for _ in range(depth)
        )
        self.norm_f = make_norm(norm if final_norm else "none", d_model, norm_eps)

    @staticmethod
    def _mixer(mixer: MixerSpec, d_model: int, kwargs: dict[str, Any]) -> nn.Module:
        if isinstance(mixer, str):
            return build_mixer(mixer, d_model, **kwargs)
        if not callable(mixer):
            raise UserError(f"mixer must be a registry name or a factory, got {mixer!r}")
        return mixer(d_model)

    def encode(self, x: Tensor) -> Tensor:
        """Input -> h_0 (B, L, d_model), positional encoding included."""
        if self.d_input is None:
            if x.dtype not in (torch.int64, torch.int32):
                raise UserError(f"token inputs must be integer ids, got {x.dtype}")
            h = self.embedding(x)  # (B, L, d_model)
        else:
            if x.dim() == 2 and self.d_input == 1:
                x = x.unsqueeze(-1)
            h = self.embedding(x)  # (B, L, d_model)
        L = h.shape[1]
        if self.pos_encoding == "sinusoidal":
            h = h + sinusoidal_encoding(L, self.d_model, h.dtype, h.device)
        elif self.pos_encoding == "learned":
            if L > self.max_len:
                raise UserError(f"sequence length {L} exceeds max_len={self.max_len}")
            h = h + self.pos_embedding(torch.arange(L, device=h.device))
        return h

    def hidden(self, x: Tensor) -> list[Tensor]:
        """The residual stream after the encoder and after each layer: depth + 1 × (B, L, D)."""
        hs = [self.encode(x)]
        for layer in self.layers:
            hs.append(layer(hs[-1]))
        return hs

    def forward(self, x: Tensor) -> Tensor:
        h = self.encode(x)
        for layer in self.layers:
            h = layer(h)
        return self.norm_f(h)  # (B, L, d_model)


def pool(h: Tensor, how: str, lengths: Tensor | None = None) -> Tensor:
    """(B, L, d) -> (B, d): the last valid position or the mean over valid positions.
    `lengths` (B,) marks right-padded sequences (causal mixers: padding never leaks back)."""
    Bsz, L, _ = h.shape
    if lengths is None:
        return h[:, -1] if how == "last" else h.mean(1)
    lengths = lengths.to(device=h.device, dtype=torch.long)
    if lengths.shape != (Bsz,) or lengths.min() < 1 or lengths.max() > L:
        raise UserError(f"lengths must be (B,) = ({Bsz},) with values in [1, {L}]")
    if how == "last":
        return h[torch.arange(Bsz, device=h.device), lengths - 1]
    valid = (torch.arange(L, device=h.device)[None, :] < lengths[:, None]).to(h.dtype)  # (B, L)
    return (h * valid[..., None]).sum(1) / lengths[:, None].to(h.dtype)


class SequenceClassifier(nn.Module):
    """Backbone + pooling + linear head: (B, L[, d_input]) -> logits (B, n_classes), or (B,) when
    binary=True (one logit for BCE / hinge losses).

    Args: mixer (registry name or factory d_model -> module); d_model; depth; n_classes or
    binary=True (exactly one); pooling "last" (default) | "mean"; vocab_size (embedding) or
    d_input (linear encoder); pos_encoding "none" (default) | "sinusoidal" | "learned" (+ max_len);
    norm "rms" (default) | "layer" | "none"; norm_eps=1e-5; final_norm=True; mixer_kwargs;
    init "mamba" (default, see module doc) | "none"; rescale_prenorm_residual=True;
    input_proj=True; residual=True (module doc).
    """

    def __init__(self, mixer: MixerSpec, d_model: int, depth: int, n_classes: int | None = None,
                 binary: bool = False, pooling: Pooling = "last", vocab_size: int | None = None,
                 d_input: int | None = None, pos_encoding: PosEncoding = "none",
                 max_len: int | None = None, norm: NormKind = "rms", norm_eps: float = 1e-5,
                 final_norm: bool = True, mixer_kwargs: dict[str, Any] | None = None,
                 init: InitKind = "mamba", rescale_prenorm_residual: bool = True,
                 input_proj: bool = True, residual: bool = True):
        super().__init__()
        if binary == (n_classes is not None):
            raise UserError("give exactly one of n_classes (softmax head) or binary=True")
        if n_classes is not None and (isinstance(n_classes, bool) or not isinstance(n_classes, int)
                                      or n_classes < 2):
            raise UserError(f"n_classes must be an int >= 2 (use binary=True for one logit), "
                            f"got {n_classes!r}")
        if pooling not in ("last", "mean"):
            raise UserError(f"pooling must be 'last' or 'mean', got {pooling!r}")
        if init not in ("mamba", "none"):
            raise UserError(f"init must be 'mamba' or 'none', got {init!r}")
        self.binary, self.pooling = binary, pooling
        self.backbone = SequenceBackbone(mixer, d_model, depth, vocab_size=vocab_size,
                                         d_input=d_input, pos_encoding=pos_encoding,
                                         max_len=max_len, norm=norm, norm_eps=norm_eps,
                                         final_norm=final_norm, mixer_kwargs=mixer_kwargs,
                                         input_proj=input_proj, residual=residual)
        self.head = nn.Linear(d_model, 1 if binary else n_classes)
        if init == "mamba":
            mamba_init_(self, depth, rescale_prenorm_residual)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        logits = self.head(pool(self.backbone(x), self.pooling, lengths))  # (B, classes)
        return logits.squeeze(-1) if self.binary else logits


class BackboneConfig(StrictModel):
    """Strict config shared by the sequence models (fields as in SequenceBackbone)."""

    mixer: MixerName = "mamba"
    mixer_kwargs: dict[str, Any] = Field(default_factory=dict)
    d_model: int = Field(32, ge=1)
    depth: int = Field(1, ge=1)
    vocab_size: int | None = Field(None, ge=1)
    d_input: int | None = Field(None, ge=1)
    pos_encoding: PosEncoding = "none"
    max_len: int | None = Field(None, ge=1)
    norm: NormKind = "rms"
    norm_eps: float = Field(1e-5, gt=0)
    final_norm: bool = True
    init: InitKind = "mamba"
    rescale_prenorm_residual: bool = True
    input_proj: bool = True
    residual: bool = True


def _seeded(build: Callable[[], nn.Module], seed: int | None) -> nn.Module:
    """Build under a private RNG state when seed is given (the global RNG is left untouched)."""
    if seed is None:
        return build()
    with seeded(seed):
        return build()


class SequenceClassifierConfig(BackboneConfig):
    n_classes: int | None = Field(None, ge=2)
    binary: bool = False
    pooling: Pooling = "last"

    def build(self, seed: int | None = None) -> SequenceClassifier:
        return _seeded(lambda: SequenceClassifier(**self.model_dump()), seed)
