"""MambaSpec: the architecture numbers of a Mamba / Mamba-2 language model, read from a
transformers config.json or from mamba_ssm's MambaConfig, and the ssmlab model they describe.

Glossary (spec field -> transformers config key | mamba_ssm key -> ssmlab):
    arch            model_type "mamba" | "mamba2"     ssm_cfg.layer "Mamba1" | "Mamba2"   mixer
    d_model         hidden_size        | d_model                                         D
    n_layer         num_hidden_layers  | n_layer                                         depth
    vocab_size      vocab_size         | vocab_size padded to pad_vocab_size_multiple     V
    d_state         state_size         | ssm_cfg.d_state (16 Mamba1, 128 Mamba2)          N
    d_conv          conv_kernel        | ssm_cfg.d_conv (4)
    expand          expand             | ssm_cfg.expand (2)                               E = expand·D
    dt_rank         time_step_rank     | ssm_cfg.dt_rank ("auto" = ceil(D/16))            R (Mamba-1)
    headdim         head_dim           | ssm_cfg.headdim (64)                             P (Mamba-2)
    ngroups         n_groups           | ssm_cfg.ngroups (1)                              G (Mamba-2)
    chunk_size      chunk_size         | ssm_cfg.chunk_size (256)        the SSD chunk (exported only)
    norm_eps        layer_norm_epsilon | 1e-5                                            RMSNorm ε
    tie_embeddings  tie_word_embeddings| tie_embeddings                                  head = embeddingᵀ
    conv_bias, bias use_conv_bias, use_bias | ssm_cfg.conv_bias, ssm_cfg.bias

The ssmlab model is `ssmlab.models.lm.CausalLM` with the registry's "mamba" (MambaBlock) or
"mamba2" (Mamba2 with its gated norm per group, as mamba_ssm's Mamba2 and transformers do),
RMSNorm pre-norm residual blocks, a final RMSNorm and a bias-free head (tied to the embedding
when the checkpoint ties them): mamba_ssm's MixerModel + MambaLMHeadModel.

What is not supported is refused with a one-line UserError rather than loaded approximately:
LayerNorm backbones (rms_norm=false), MLP or attention layers (d_intermediate > 0,
attn_layer_idx), Mamba-2's norm_before_gate=True, D per channel (D_has_hdim), d_ssm < d_inner,
a finite time_step_limit / dt_limit, and activations other than SiLU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from ssmlab.errors import UserError
from ssmlab.layers.mamba2 import Mamba2
from ssmlab.layers.norms import RMSNorm
from ssmlab.layers.s6 import MambaBlock
from ssmlab.models.lm import CausalLM

Arch = Literal["mamba", "mamba2"]
HF_ARCHITECTURES = {"mamba": "MambaForCausalLM", "mamba2": "Mamba2ForCausalLM"}


@dataclass(frozen=True)
class MambaSpec:
    """A Mamba (arch="mamba") or Mamba-2 (arch="mamba2") language model's numbers (module
    glossary). `extra` carries config entries that ssmlab does not use but an export should keep
    (token ids)."""

    arch: Arch
    d_model: int
    n_layer: int
    vocab_size: int
    d_state: int
    d_conv: int = 4
    expand: int = 2
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    conv_bias: bool = True
    bias: bool = False
    dt_rank: int | None = None
    headdim: int | None = None
    ngroups: int = 1
    chunk_size: int = 256
    residual_in_fp32: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def nheads(self) -> int:
        """Mamba-2 heads H = d_inner / headdim (0 for Mamba-1)."""
        return self.d_inner // self.headdim if self.headdim else 0

    @property
    def channels(self) -> int:
        """What a probe calls a layer's channels: E inner channels (Mamba-1), H heads (Mamba-2)."""
        return self.nheads if self.arch == "mamba2" else self.d_inner

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def mixer_kwargs(self) -> dict[str, Any]:
        common = dict(d_state=self.d_state, d_conv=self.d_conv, expand=self.expand,
                      conv_bias=self.conv_bias, bias=self.bias)
        if self.arch == "mamba":
            return common | dict(dt_rank=self.dt_rank or "auto")
        return common | dict(headdim=self.headdim, ngroups=self.ngroups, norm_per_group=True,
                             norm_eps=self.norm_eps)

    def build(self, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> CausalLM:
        """The ssmlab model with these numbers (random weights; loaders build it on the meta
        device and assign the checkpoint's tensors)."""
        with torch.device(device):
            lm = CausalLM(self.arch, self.d_model, self.n_layer, vocab_size=self.vocab_size,
                          norm="rms", norm_eps=self.norm_eps, final_norm=True,
                          mixer_kwargs=self.mixer_kwargs(), init="none")
            lm.head = nn.Linear(self.d_model, self.vocab_size, bias=False)
        if self.tie_embeddings:
            lm.head.weight = lm.backbone.embedding.weight
        return lm.to(dtype)

    def transformers_config(self, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
        """config.json of the equivalent transformers MambaForCausalLM / Mamba2ForCausalLM."""
        cfg: dict[str, Any] = {
            "architectures": [HF_ARCHITECTURES[self.arch]],
            "model_type": self.arch,
            "vocab_size": self.vocab_size,
            "hidden_size": self.d_model,
            "state_size": self.d_state,
            "num_hidden_layers": self.n_layer,
            "layer_norm_epsilon": self.norm_eps,
            "expand": self.expand,
            "conv_kernel": self.d_conv,
            "use_bias": self.bias,
            "use_conv_bias": self.conv_bias,
            "hidden_act": "silu",
            "residual_in_fp32": self.residual_in_fp32,
            "tie_word_embeddings": self.tie_embeddings,
            "dtype": str(dtype).removeprefix("torch."),
        }
        if self.arch == "mamba":
            cfg["time_step_rank"] = self.dt_rank
        else:
            cfg |= {"num_heads": self.nheads, "head_dim": self.headdim, "n_groups": self.ngroups,
                    "chunk_size": self.chunk_size}
        return cfg | {k: v for k, v in self.extra.items() if k not in cfg}


# ----------------------------------------------------------------------------- config parsing

_TOKEN_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")


def _pos_int(cfg: dict[str, Any], key: str, source: str, default: Any = None) -> int:
    v = cfg.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise UserError(f"{source}: {key} must be a positive integer, got {v!r}")
    return v


def _flag(cfg: dict[str, Any], key: str, source: str, default: bool) -> bool:
    v = cfg.get(key, default)
    if not isinstance(v, bool):
        raise UserError(f"{source}: {key} must be true or false, got {v!r}")
    return v


def _eps(cfg: dict[str, Any], key: str, source: str, default: float) -> float:
    v = cfg.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < 1:
        raise UserError(f"{source}: {key} must be a number in (0, 1), got {v!r}")
    return float(v)


def _dt_rank(v: Any, d_model: int, source: str, key: str) -> int:
    if v is None or v == "auto":
        return math.ceil(d_model / 16)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise UserError(f"{source}: {key} must be 'auto' or a positive integer, got {v!r}")
    return v


def _json_float(x: Any) -> float:
    """A number as configs write it: 1e30, "inf", Infinity, or transformers' {"__float__": "Infinity"}."""
    if isinstance(x, dict) and "__float__" in x:
        x = x["__float__"]
    if isinstance(x, bool):
        raise ValueError(x)
    return float(x)


def _no_limit(v: Any, source: str, key: str) -> None:
    """Only the unclamped Δ (0, inf) is supported (what every released checkpoint uses)."""
    if v is None:
        return
    try:
        lo, hi = (_json_float(x) for x in v)
    except (TypeError, ValueError):
        raise UserError(f"{source}: {key} must be a pair of numbers, got {v!r}") from None
    if lo != 0.0 or hi < 1e30:
        raise UserError(f"{source}: {key}={list(v)} clamps Δ; only (0, inf) is supported")


def architecture_of(cfg: dict[str, Any], source: str) -> tuple[Arch, str]:
    """("mamba" | "mamba2", "transformers" | "mamba_ssm") from a config dict, or a UserError that
    names the architecture found."""
    if "d_model" in cfg and "n_layer" in cfg:  # mamba_ssm's MambaConfig
        ssm_cfg = cfg.get("ssm_cfg") or {}
        if not isinstance(ssm_cfg, dict):
            raise UserError(f"{source}: ssm_cfg must be an object, got {ssm_cfg!r}")
        layer = ssm_cfg.get("layer", "Mamba1")
        if layer not in ("Mamba1", "Mamba2"):
            raise UserError(f"{source}: ssm_cfg.layer={layer!r} is not Mamba / Mamba-2 "
                            "(Mamba1, Mamba2)")
        return ("mamba" if layer == "Mamba1" else "mamba2"), "mamba_ssm"
    model_type = cfg.get("model_type")
    archs = cfg.get("architectures") or []
    if model_type in ("mamba", "mamba2"):
        expected = HF_ARCHITECTURES[model_type]
        others = [a for a in archs if a != expected]
        if others:
            raise UserError(f"{source}: architecture {others[0]!r} is not supported; "
                            f"ssmlab loads {expected} for model_type {model_type!r}")
        return model_type, "transformers"
    found = model_type or (archs[0] if archs else None)
    if found is None:
        raise UserError(f"{source}: no model_type / architectures (transformers) and no "
                        "d_model / n_layer (mamba_ssm): not a Mamba config")
    raise UserError(f"{source}: architecture {found!r} is not Mamba / Mamba-2 "
                    "(MambaForCausalLM, Mamba2ForCausalLM, or a mamba_ssm MambaConfig)")


def spec_from_transformers(cfg: dict[str, Any], source: str = "config.json") -> MambaSpec:
    """MambaSpec of a transformers MambaConfig / Mamba2Config dict (defaults as transformers)."""
    arch, kind = architecture_of(cfg, source)
    if kind != "transformers":
        raise UserError(f"{source}: a mamba_ssm config, not a transformers one")
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise UserError(f"{source}: hidden_act={act!r}; only 'silu' is supported")
    d_model = _pos_int(cfg, "hidden_size", source)
    expand = _pos_int(cfg, "expand", source, 2)
    extra = {k: cfg[k] for k in _TOKEN_KEYS if k in cfg}
    common = dict(
        d_model=d_model, n_layer=_pos_int(cfg, "num_hidden_layers", source),
        vocab_size=_pos_int(cfg, "vocab_size", source),
        d_state=_pos_int(cfg, "state_size", source, 16 if arch == "mamba" else 128),
        d_conv=_pos_int(cfg, "conv_kernel", source, 4), expand=expand,
        norm_eps=_eps(cfg, "layer_norm_epsilon", source, 1e-5),
        conv_bias=_flag(cfg, "use_conv_bias", source, True),
        bias=_flag(cfg, "use_bias", source, False),
        residual_in_fp32=_flag(cfg, "residual_in_fp32", source, True), extra=extra,
    )
    if arch == "mamba":
        return MambaSpec(arch="mamba", dt_rank=_dt_rank(cfg.get("time_step_rank", "auto"), d_model,
                                                        source, "time_step_rank"),
                         tie_embeddings=_flag(cfg, "tie_word_embeddings", source, True), **common)
    _no_limit(cfg.get("time_step_limit"), source, "time_step_limit")
    headdim = _pos_int(cfg, "head_dim", source, 64)
    nheads = _pos_int(cfg, "num_heads", source, 128)
    ngroups = _pos_int(cfg, "n_groups", source, 8)
    if nheads * headdim != expand * d_model:
        raise UserError(f"{source}: num_heads·head_dim = {nheads}·{headdim} must equal "
                        f"expand·hidden_size = {expand}·{d_model}")
    if nheads % ngroups:
        raise UserError(f"{source}: n_groups={ngroups} must divide num_heads={nheads}")
    return MambaSpec(arch="mamba2", headdim=headdim, ngroups=ngroups,
                     chunk_size=_pos_int(cfg, "chunk_size", source, 256),
                     tie_embeddings=_flag(cfg, "tie_word_embeddings", source, False), **common)


def spec_from_mamba_ssm(cfg: dict[str, Any], source: str = "config.json") -> MambaSpec:
    """MambaSpec of mamba_ssm's MambaConfig (d_model, n_layer, vocab_size, ssm_cfg, rms_norm,
    residual_in_fp32, fused_add_norm, pad_vocab_size_multiple, tie_embeddings), with
    mamba_ssm's defaults; the vocabulary is padded as MambaLMHeadModel pads it."""
    arch, kind = architecture_of(cfg, source)
    if kind != "mamba_ssm":
        raise UserError(f"{source}: a transformers config, not a mamba_ssm one")
    if cfg.get("d_intermediate", 0):
        raise UserError(f"{source}: d_intermediate={cfg['d_intermediate']} (MLP layers) is not "
                        "supported; only pure Mamba stacks")
    if cfg.get("attn_layer_idx"):
        raise UserError(f"{source}: attn_layer_idx={cfg['attn_layer_idx']} (attention layers) "
                        "is not supported; only pure Mamba stacks")
    if not _flag(cfg, "rms_norm", source, True):
        raise UserError(f"{source}: rms_norm=false (LayerNorm backbone) is not supported")
    d_model = _pos_int(cfg, "d_model", source)
    mult = _pos_int(cfg, "pad_vocab_size_multiple", source, 8)
    vocab = _pos_int(cfg, "vocab_size", source)
    vocab = -(-vocab // mult) * mult
    ssm = dict(cfg.get("ssm_cfg") or {})
    ssm.pop("layer", None)
    src = f"{source}: ssm_cfg"
    common = dict(
        d_model=d_model, n_layer=_pos_int(cfg, "n_layer", source), vocab_size=vocab,
        d_conv=_pos_int(ssm, "d_conv", src, 4), expand=_pos_int(ssm, "expand", src, 2),
        conv_bias=_flag(ssm, "conv_bias", src, True), bias=_flag(ssm, "bias", src, False),
        tie_embeddings=_flag(cfg, "tie_embeddings", source, True),
        residual_in_fp32=_flag(cfg, "residual_in_fp32", source, True),
    )
    if arch == "mamba":
        return MambaSpec(arch="mamba", d_state=_pos_int(ssm, "d_state", src, 16),
                         dt_rank=_dt_rank(ssm.get("dt_rank", "auto"), d_model, src, "dt_rank"),
                         **common)
    if ssm.get("norm_before_gate", False):
        raise UserError(f"{src}.norm_before_gate=true is not supported (ssmlab gates before "
                        "the norm, as mamba_ssm's default)")
    if not ssm.get("rmsnorm", True):
        raise UserError(f"{src}.rmsnorm=false is not supported")
    if ssm.get("D_has_hdim", False):
        raise UserError(f"{src}.D_has_hdim=true (D per channel) is not supported")
    _no_limit(ssm.get("dt_limit"), src, "dt_limit")
    d_inner = common["expand"] * d_model
    d_ssm = ssm.get("d_ssm")
    if d_ssm is not None and d_ssm != d_inner:
        raise UserError(f"{src}.d_ssm={d_ssm} < d_inner={d_inner} (a gated MLP beside the SSM) "
                        "is not supported")
    headdim = _pos_int(ssm, "headdim", src, 64)
    ngroups = _pos_int(ssm, "ngroups", src, 1)
    if d_inner % headdim or (d_inner // headdim) % ngroups:
        raise UserError(f"{src}: headdim={headdim} must divide d_inner={d_inner} and ngroups="
                        f"{ngroups} the number of heads")
    return MambaSpec(arch="mamba2", d_state=_pos_int(ssm, "d_state", src, 128), headdim=headdim,
                     ngroups=ngroups, chunk_size=_pos_int(ssm, "chunk_size", src, 256),
                     norm_eps=1e-5, **common)


def spec_from_config(cfg: dict[str, Any], source: str = "config.json") -> tuple[MambaSpec, str]:
    """(spec, "transformers" | "mamba_ssm") for either kind of config."""
    if not isinstance(cfg, dict):
        raise UserError(f"{source}: expected a JSON object, got {type(cfg).__name__}")
    _, kind = architecture_of(cfg, source)
    if kind == "transformers":
        return spec_from_transformers(cfg, source), kind
    return spec_from_mamba_ssm(cfg, source), kind


# ----------------------------------------------------------------------------- from a model


def spec_from_model(lm: nn.Module) -> MambaSpec:
    """The MambaSpec of an ssmlab CausalLM made of MambaBlock or Mamba2 mixers, for export.

    Refuses (UserError) what a transformers Mamba model cannot express: other mixers or mixed
    stacks, non-RMS norms, positional encodings, feature inputs, a head bias that is not zero,
    Mamba-2 without the gated norm or with a whole-width norm over several groups."""
    if not isinstance(lm, CausalLM):
        raise UserError(f"export needs an ssmlab CausalLM, got {type(lm).__name__}")
    bb = lm.backbone
    if bb.d_input is not None or not isinstance(bb.embedding, nn.Embedding):
        raise UserError("export needs a token model (vocab_size), not feature inputs (d_input)")
    if bb.pos_encoding != "none":
        raise UserError(f"pos_encoding={bb.pos_encoding!r} has no transformers Mamba equivalent")
    mixers = [layer.mixer for layer in bb.layers]
    kinds = {type(m) for m in mixers}
    if kinds not in ({MambaBlock}, {Mamba2}):
        raise UserError("export needs every layer to be a MambaBlock, or every layer a Mamba2; "
                        f"got {sorted(k.__name__ for k in kinds)}")
    norms = [layer.norm for layer in bb.layers] + [bb.norm_f]
    if not all(isinstance(n, RMSNorm) for n in norms):
        raise UserError("export needs RMSNorm pre-norms and a final RMSNorm")
    eps = {n.eps for n in norms}
    if len(eps) != 1:
        raise UserError(f"export needs one norm epsilon, got {sorted(eps)}")
    head = lm.head
    if head.bias is not None and bool(head.bias.detach().ne(0).any()):
        raise UserError("the head has a non-zero bias; transformers' lm_head has none")
    m0 = mixers[0]
    tied = head.weight is bb.embedding.weight
    vocab, d_model = bb.embedding.weight.shape
    if head.weight.shape != (vocab, d_model):
        raise UserError(f"head maps to {head.weight.shape[0]} outputs, the vocabulary is {vocab}")
    common = dict(d_model=d_model, n_layer=len(mixers), vocab_size=vocab, d_state=m0.d_state,
                  d_conv=m0.d_conv, expand=m0.expand, norm_eps=float(eps.pop()),
                  tie_embeddings=tied, conv_bias=m0.conv1d.bias is not None,
                  bias=m0.in_proj.bias is not None)
    if isinstance(m0, MambaBlock):
        return MambaSpec(arch="mamba", dt_rank=m0.dt_rank, **common)
    if m0.norm is None:
        raise UserError("Mamba2 with rmsnorm=False has no transformers equivalent")
    if m0.ngroups > 1 and m0.norm.group_size is None:
        raise UserError("Mamba2 with ngroups > 1 normalises over all of d_inner "
                        "(norm_per_group=False); transformers normalises per group")
    if any(m.norm.eps != m0.norm.eps for m in mixers) or m0.norm.eps != common["norm_eps"]:
        raise UserError("transformers uses one epsilon for the block norms and the gated norms")
    return MambaSpec(arch="mamba2", headdim=m0.headdim, ngroups=m0.ngroups, **common)
