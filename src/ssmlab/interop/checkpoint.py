"""Load real Mamba / Mamba-2 checkpoints into ssmlab's layers, and write ssmlab models back as
transformers directories.

Inputs (a local path; nothing is ever downloaded, a hub id is an error):
    transformers directory   config.json (MambaForCausalLM / Mamba2ForCausalLM) + model.safetensors
                             (or model.safetensors.index.json with shards, or pytorch_model.bin)
    mamba_ssm checkpoint     a directory with config.json (mamba_ssm's MambaConfig) +
                             pytorch_model.bin, or the .bin / .pt state-dict file itself with a
                             config.json beside it (or `config=`)
    tokenizer                tokenizer.json beside the weights, when present (used by the probe)

Tensor names (external -> ssmlab's CausalLM):
    backbone.embeddings.weight (transformers) | backbone.embedding.weight (mamba_ssm)
                                            -> backbone.embedding.weight      (V, D)
    backbone.layers.{i}.norm.weight          -> backbone.layers.{i}.norm.weight (D,)  pre-norm
    backbone.layers.{i}.mixer.<p>            -> backbone.layers.{i}.mixer.<p>   same names
    backbone.norm_f.weight                   -> backbone.norm_f.weight          (D,)
    lm_head.weight                           -> head.weight (V, D); absent or equal to the
                                                embedding when the config ties them
Every tensor of the ssmlab model must be in the file with its exact shape and nothing else may
be: a missing, unexpected or mis-shaped tensor is a UserError naming it. Reading safetensors uses
the `safetensors` package only (no transformers). The tensors are cast to `dtype` (float32 by
default; checkpoints are often bfloat16) and assigned to a model built on the meta device, so a
load allocates the weights once.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ssmlab.errors import UserError
from ssmlab.interop.deps import require
from ssmlab.interop.spec import MambaSpec, spec_from_config, spec_from_model
from ssmlab.models.lm import CausalLM

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"
TOKENIZER = "tokenizer.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@dataclass
class LoadedModel:
    """A checkpoint in ssmlab: the CausalLM, its spec, where it came from and its tokenizer."""

    model: CausalLM
    spec: MambaSpec
    source: Path
    fmt: str  # "transformers" | "mamba_ssm"
    tokenizer_path: Path | None
    config: dict[str, Any]


# ----------------------------------------------------------------------------- reading files


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path} is not valid JSON: {err}") from None
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror or err}") from None


def check_safetensors_file(path: Path) -> None:
    """Validate a safetensors file's framing before handing it to the library, so that a
    truncated or corrupt file gives one clear line: 8-byte little-endian header length, a JSON
    header, and data whose size equals the largest end offset the header promises."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise UserError(f"{path} is truncated: {size} bytes, not even a safetensors header")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                raise UserError(f"{path} is truncated or not safetensors: header of {n} bytes "
                                f"in a {size}-byte file")
            header = json.loads(fh.read(n))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{path} is corrupt: its safetensors header is not JSON") from None
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror or err}") from None
    if not isinstance(header, dict):
        raise UserError(f"{path} is corrupt: its safetensors header is not a JSON object")
    ends = [v.get("data_offsets", [0, 0])[1] for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict)]
    need = 8 + n + max(ends, default=0)
    if need > size:
        raise UserError(f"{path} is truncated: its header promises {need} bytes, the file has "
                        f"{size}")


def read_safetensors(path: Path) -> dict[str, Tensor]:
    check_safetensors_file(path)
    st = require("safetensors", f"reading {path.name}")
    try:
        with st.safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)
    except Exception as err:  # safetensors raises its own SafetensorError type
        raise UserError(f"{path} is corrupt: {str(err).splitlines()[0]}") from None


def read_torch_bin(path: Path) -> dict[str, Tensor]:
    """A state dict saved with torch.save (weights_only: no code is run); a dict nesting it
    under "state_dict" or "model" is accepted."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, pickle errors, unsupported globals
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path} is not a readable torch state dict (truncated or corrupt?): "
                        f"{first}") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise UserError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return dict(obj)


def read_weights(folder: Path) -> tuple[dict[str, Tensor], Path]:
    """The tensors of a checkpoint directory: model.safetensors, its sharded index, or
    pytorch_model.bin, in that order of preference."""
    if (folder / SAFETENSORS).is_file():
        return read_safetensors(folder / SAFETENSORS), folder / SAFETENSORS
    if (folder / SAFETENSORS_INDEX).is_file():
        index = _read_json(folder / SAFETENSORS_INDEX)
        wmap = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(wmap, dict) or not wmap:
            raise UserError(f"{folder / SAFETENSORS_INDEX} has no weight_map")
        tensors: dict[str, Tensor] = {}
        for shard in sorted(set(wmap.values())):
            path = folder / str(shard)
            if Path(str(shard)).name != str(shard) or not path.is_file():
                raise UserError(f"{folder / SAFETENSORS_INDEX} names shard {shard!r}, which is "
                                f"not a file in {folder}")
            tensors |= read_safetensors(path)
        return tensors, folder / SAFETENSORS_INDEX
    if (folder / TORCH_BIN).is_file():
        return read_torch_bin(folder / TORCH_BIN), folder / TORCH_BIN
    raise UserError(f"{folder} has no {SAFETENSORS}, {SAFETENSORS_INDEX} or {TORCH_BIN}")


# ----------------------------------------------------------------------------- name mapping

_EMBED = re.compile(r"^backbone\.embeddings?\.weight$")


def to_ssmlab_names(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """External names -> ssmlab names (module doc); other names pass through unchanged."""
    out: dict[str, Tensor] = {}
    for name, t in tensors.items():
        if _EMBED.match(name):
            name = "backbone.embedding.weight"
        elif name == "lm_head.weight":
            name = "head.weight"
        if name in out:
            raise UserError(f"the checkpoint holds the embedding twice ({name}); keep one")
        out[name] = t
    return out


def _shape(t: Tensor | torch.Size) -> str:
    return "(" + ", ".join(str(s) for s in (t.shape if isinstance(t, Tensor) else t)) + ")"


def assign_weights(spec: MambaSpec, tensors: dict[str, Tensor], dtype: torch.dtype,
                   source: str) -> CausalLM:
    """Build `spec`'s model on the meta device and assign the tensors (ssmlab names), checking
    names and shapes strictly (module doc)."""
    lm = spec.build(device="meta")
    expected = {k: v.shape for k, v in lm.state_dict().items()}
    tensors = dict(tensors)
    head = tensors.pop("head.weight", None)
    if spec.tie_embeddings:
        expected.pop("head.weight", None)
    elif head is None:
        raise UserError(f"{source}: no lm_head.weight although the config does not tie the "
                        "embeddings")
    else:
        tensors["head.weight"] = head
    for name, shape in expected.items():
        if name not in tensors:
            raise UserError(f"{source}: missing tensor {_external(name)} (the config implies a "
                            f"{spec.arch} model with {spec.n_layer} layers)")
        if tuple(tensors[name].shape) != tuple(shape):
            raise UserError(f"{source}: {_external(name)} has shape {_shape(tensors[name])}, the "
                            f"config implies {_shape(shape)}")
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise UserError(f"{source}: unexpected tensor {_external(unexpected[0])}{more}; not "
                        f"part of a {spec.arch} model with {spec.n_layer} layers")
    if spec.tie_embeddings and head is not None:
        emb = tensors["backbone.embedding.weight"]
        if head.shape != emb.shape or not torch.equal(head.to(emb.dtype), emb):
            raise UserError(f"{source}: lm_head.weight differs from the embedding although the "
                            "config ties them")
    state = {k: v.to(dtype).contiguous() for k, v in tensors.items()}
    lm.load_state_dict(state, strict=not spec.tie_embeddings, assign=True)
    if spec.tie_embeddings:
        lm.head.weight = lm.backbone.embedding.weight
    left = [n for n, p in lm.named_parameters() if p.is_meta]
    if left:  # pragma: no cover - guarded by the checks above
        raise UserError(f"{source}: tensors not loaded: {left[:3]}")
    return lm.eval()


def _external(name: str) -> str:
    return {"backbone.embedding.weight": "backbone.embeddings.weight (or backbone.embedding.weight)",
            "head.weight": "lm_head.weight"}.get(name, name)


# ----------------------------------------------------------------------------- load


def _resolve(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        looks_like_hub = isinstance(path, str) and re.fullmatch(r"[\w.-]+/[\w.-]+", path)
        hint = " (ssmlab never downloads: pass the path of a downloaded checkpoint)" \
            if looks_like_hub else ""
        raise UserError(f"{path} is not a local directory or file{hint}")
    return p


def load_checkpoint(path: str | Path, config: str | Path | None = None,
                    dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load a transformers directory or a mamba_ssm checkpoint (directory or .bin / .pt file)
    into ssmlab (module doc). `config`: the config json for a bare state-dict file (default: the
    config.json beside it). Bad input -> UserError naming the problem."""
    if dtype not in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        raise UserError(f"dtype must be a floating dtype, got {dtype}")
    p = _resolve(path)
    folder = p if p.is_dir() else p.parent
    cfg_path = Path(config).expanduser() if config is not None else folder / "config.json"
    if not cfg_path.is_file():
        raise UserError(f"{folder} has no config.json" if config is None
                        else f"config file {cfg_path} does not exist")
    cfg = _read_json(cfg_path)
    spec, fmt = spec_from_config(cfg, str(cfg_path))
    if p.is_dir():
        tensors, wpath = read_weights(p)
    elif p.suffix == ".safetensors":
        tensors, wpath = read_safetensors(p), p
    elif p.suffix in (".bin", ".pt", ".pth"):
        tensors, wpath = read_torch_bin(p), p
    else:
        raise UserError(f"{p}: expected a checkpoint directory, a .safetensors file or a "
                        ".bin / .pt state dict")
    lm = assign_weights(spec, to_ssmlab_names(tensors), dtype, str(wpath))
    tok = folder / TOKENIZER
    return LoadedModel(model=lm, spec=spec, source=p, fmt=fmt,
                       tokenizer_path=tok if tok.is_file() else None, config=cfg)


# ----------------------------------------------------------------------------- export


def transformers_state_dict(lm: CausalLM, spec: MambaSpec) -> dict[str, Tensor]:
    """ssmlab names -> transformers names; the tied head is left out (transformers re-ties it)."""
    out: dict[str, Tensor] = {}
    for name, t in lm.state_dict().items():
        if name == "head.weight":
            if spec.tie_embeddings:
                continue
            name = "lm_head.weight"
        elif name == "head.bias":
            continue  # zero (checked by spec_from_model)
        elif name == "backbone.embedding.weight":
            name = "backbone.embeddings.weight"
        out[name] = t.detach().contiguous().clone()
    return out


def save_transformers(lm: CausalLM | LoadedModel, out: str | Path,
                      tokenizer_from: str | Path | None = None) -> Path:
    """Write `lm` as a transformers directory (config.json + model.safetensors) that
    MambaForCausalLM / Mamba2ForCausalLM.from_pretrained(out) loads. A LoadedModel keeps its
    config's token ids and copies its tokenizer files; `tokenizer_from` names a folder to copy
    tokenizer files from otherwise. Returns the directory."""
    st = require("safetensors.torch", "writing model.safetensors")
    extra_src: Path | None = Path(tokenizer_from) if tokenizer_from is not None else None
    if isinstance(lm, LoadedModel):
        base = lm.spec
        extra_src = extra_src or (lm.tokenizer_path.parent if lm.tokenizer_path else None)
        model = lm.model
    else:
        base, model = None, lm
    spec = spec_from_model(model)
    if base is not None:
        spec = MambaSpec(**(spec.as_dict() | {"residual_in_fp32": base.residual_in_fp32,
                                              "chunk_size": base.chunk_size,
                                              "extra": base.extra}))
    dtype = model.backbone.embedding.weight.dtype
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(spec.transformers_config(dtype), indent=2) + "\n")
    st.save_file(transformers_state_dict(model, spec), str(out / SAFETENSORS),
                 metadata={"format": "pt"})
    if extra_src is not None:
        for name in TOKENIZER_FILES:
            src = extra_src / name
            if src.is_file() and src.resolve() != (out / name).resolve():
                (out / name).write_bytes(src.read_bytes())
    return out
