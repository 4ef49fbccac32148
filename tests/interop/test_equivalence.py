"""ssmlab and transformers compute the same model: tiny random MambaForCausalLM /
Mamba2ForCausalLM built from their configs (no download), saved, loaded into ssmlab, compared on
logits and every layer's hidden state; the reverse direction (ssmlab -> transformers directory
-> transformers model); and a mamba_ssm-layout state dict.

Tolerances (relative, max |a - b| / max |b|): 1e-4 in float32; 1e-10 in float64, where
transformers runs inside `keep_float64` because its slow path casts A, B, u, D, the norms and
the residual to float32 (ssmlab.interop.testing); the raw cast float64 agreement (~1e-7) is
checked to be what that explanation predicts, not a disagreement in the model."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch

from ssmlab.interop.checkpoint import load_checkpoint, save_transformers
from ssmlab.interop.testing import TINY, backbone_states, keep_float64, perturb_, rel_err

load_file = pytest.importorskip("safetensors.torch").load_file

TOL = {torch.float32: 1e-4, torch.float64: 1e-10}
DTYPES = [torch.float32, torch.float64]
DT_IDS = ["float32", "float64"]


def hf_model(transformers, arch: str, dtype: torch.dtype, seed: int = 0):
    """A random transformers model with TINY[arch]'s numbers, perturbed, eval mode."""
    s = TINY[arch]
    torch.manual_seed(seed)
    if arch == "mamba":
        cfg = transformers.MambaConfig(
            vocab_size=s.vocab_size, hidden_size=s.d_model, state_size=s.d_state,
            num_hidden_layers=s.n_layer, expand=s.expand, conv_kernel=s.d_conv,
            time_step_rank=s.dt_rank, use_bias=s.bias, tie_word_embeddings=s.tie_embeddings)
        model = transformers.MambaForCausalLM(cfg)
    else:
        cfg = transformers.Mamba2Config(
            vocab_size=s.vocab_size, hidden_size=s.d_model, state_size=s.d_state,
            num_hidden_layers=s.n_layer, expand=s.expand, conv_kernel=s.d_conv,
            num_heads=s.nheads, head_dim=s.headdim, n_groups=s.ngroups, use_bias=s.bias,
            chunk_size=s.chunk_size, tie_word_embeddings=s.tie_embeddings)
        model = transformers.Mamba2ForCausalLM(cfg)
    return perturb_(model.to(dtype), seed + 1).eval()


def hf_outputs(model, ids: torch.Tensor, dtype: torch.dtype):
    """Logits and [h_1, ..., h_n, norm_f(h_n)], read with forward hooks on every block and on
    norm_f (output_hidden_states lists block outputs for Mamba but block inputs for Mamba-2
    in transformers 5, so the hooks pin down what is compared)."""
    states: list[torch.Tensor] = []
    modules = list(model.backbone.layers) + [model.backbone.norm_f]
    hooks = [m.register_forward_hook(lambda _m, _i, out: states.append(out)) for m in modules]
    ctx = keep_float64() if dtype == torch.float64 else contextlib.nullcontext()
    try:
        with torch.no_grad(), ctx:
            logits = model(ids, use_cache=False).logits
    finally:
        for h in hooks:
            h.remove()
    return logits, states


def assert_same(lm, model, dtype: torch.dtype, seed: int = 2) -> list[float]:
    """Logits and every hidden state agree within TOL[dtype]; returns the errors."""
    ids = torch.randint(0, TINY["mamba"].vocab_size, (2, 37),
                        generator=torch.Generator().manual_seed(seed))
    logits, states = hf_outputs(model, ids, dtype)
    with torch.no_grad():
        ours_logits = lm(ids)
    ours = backbone_states(lm, ids)
    assert len(states) == len(ours) == lm.backbone.depth + 1
    errs = [rel_err(ours_logits, logits)] + [rel_err(a, b) for a, b in zip(ours, states,
                                                                          strict=True)]
    assert max(errs) <= TOL[dtype], errs
    return errs


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("arch", ["mamba", "mamba2"])
def test_transformers_directory_loads_into_ssmlab(hf, tmp_path, arch, dtype):
    model = hf_model(hf, arch, dtype)
    model.save_pretrained(tmp_path / "hf")
    loaded = load_checkpoint(tmp_path / "hf", dtype=dtype)
    assert loaded.fmt == "transformers"
    fields = ("arch", "d_model", "n_layer", "vocab_size", "d_state", "d_conv", "expand",
              "dt_rank", "headdim", "ngroups", "bias", "tie_embeddings")
    assert {f: getattr(loaded.spec, f) for f in fields} == \
        {f: getattr(TINY[arch], f) for f in fields}
    assert (loaded.model.head.weight is loaded.model.backbone.embedding.weight) \
        == TINY[arch].tie_embeddings
    assert_same(loaded.model, model, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("arch", ["mamba", "mamba2"])
def test_ssmlab_exports_a_transformers_directory(hf, tmp_path, arch, dtype):
    torch.manual_seed(3)
    lm = perturb_(TINY[arch].build(dtype=dtype), 4).eval()
    save_transformers(lm, tmp_path / "out")
    cls = hf.MambaForCausalLM if arch == "mamba" else hf.Mamba2ForCausalLM
    model, info = cls.from_pretrained(tmp_path / "out", dtype=dtype, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info.get("mismatched_keys"), info
    assert model.dtype == dtype
    assert_same(lm, model.eval(), dtype)


def test_float64_disagreement_without_lifting_is_transformers_float32_casts(hf, tmp_path):
    """Without keep_float64 a float64 transformers model is float32 inside: it agrees with
    ssmlab's float64 only to float32 rounding (> 1e-10, < 1e-5), and its logits come back as
    float32, exactly what the casts predict."""
    model = hf_model(hf, "mamba", torch.float64)
    model.save_pretrained(tmp_path / "hf")
    lm = load_checkpoint(tmp_path / "hf", dtype=torch.float64).model
    ids = torch.randint(0, 64, (2, 37), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        raw = model(ids).logits
        ours = lm(ids)
    assert raw.dtype == torch.float32
    assert 1e-10 < rel_err(ours, raw) < 1e-5


def mamba_ssm_config(arch: str, vocab: int) -> dict:
    s = TINY[arch]
    ssm = {"layer": "Mamba1" if arch == "mamba" else "Mamba2", "d_state": s.d_state,
           "d_conv": s.d_conv, "expand": s.expand, "bias": s.bias}
    ssm |= {"dt_rank": s.dt_rank} if arch == "mamba" else {"headdim": s.headdim,
                                                           "ngroups": s.ngroups}
    return {"d_model": s.d_model, "d_intermediate": 0, "n_layer": s.n_layer,
            "vocab_size": vocab, "ssm_cfg": ssm, "attn_layer_idx": [], "attn_cfg": {},
            "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
            "pad_vocab_size_multiple": 8, "tie_embeddings": s.tie_embeddings}


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("arch", ["mamba", "mamba2"])
def test_mamba_ssm_state_dict_loads(hf, tmp_path, arch, dtype):
    """mamba_ssm's layout: backbone.embedding.weight, lm_head.weight saved even when tied, a
    MambaConfig json whose vocab_size 61 is padded to 64 by pad_vocab_size_multiple = 8; loaded
    from the .bin file itself and from its folder."""
    model = hf_model(hf, arch, dtype)
    sd = {k.replace("backbone.embeddings.", "backbone.embedding."): v.clone()
          for k, v in model.state_dict().items()}
    sd["lm_head.weight"] = model.lm_head.weight.detach().clone()
    folder = tmp_path / "ms"
    folder.mkdir()
    torch.save(sd, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(mamba_ssm_config(arch, vocab=61)))
    for path in (folder / "pytorch_model.bin", folder):
        loaded = load_checkpoint(path, dtype=dtype)
        assert loaded.fmt == "mamba_ssm" and loaded.spec.vocab_size == 64
        assert_same(loaded.model, model, dtype)


@pytest.mark.parametrize("arch", ["mamba", "mamba2"])
def test_round_trip_is_bitwise_and_keeps_token_ids_and_tokenizer(tmp_path, arch,
                                                                  tiny_checkpoint,
                                                                  word_tokenizer):
    src = tiny_checkpoint(arch)
    cfg = json.loads((src / "config.json").read_text())
    cfg |= {"bos_token_id": 3, "eos_token_id": 4}
    (src / "config.json").write_text(json.dumps(cfg))
    word_tokenizer(src, ["a", "b"])
    first = load_checkpoint(src)
    save_transformers(first, tmp_path / "again")
    again = load_checkpoint(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["eos_token_id"] == 4
    assert (tmp_path / "again" / "tokenizer.json").read_bytes() == \
        (src / "tokenizer.json").read_bytes()
    a, b = first.model.state_dict(), again.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert load_file(src / "model.safetensors").keys() == \
        load_file(tmp_path / "again" / "model.safetensors").keys()


def test_bfloat16_checkpoint_is_cast_on_load(tmp_path, tiny_checkpoint):
    src = tiny_checkpoint("mamba", dtype=torch.bfloat16)
    stored = load_file(Path(src) / "model.safetensors")
    assert stored["backbone.norm_f.weight"].dtype == torch.bfloat16
    lm = load_checkpoint(src).model
    assert lm.backbone.norm_f.weight.dtype == torch.float32
    assert torch.equal(lm.backbone.norm_f.weight, stored["backbone.norm_f.weight"].float())
