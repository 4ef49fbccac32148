"""Bad checkpoints and configs: one UserError line naming the problem, never a traceback from
torch / safetensors / json, and never a download."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from ssmlab.errors import UserError
from ssmlab.interop.checkpoint import load_checkpoint, save_transformers
from ssmlab.interop.spec import spec_from_model
from ssmlab.interop.testing import TINY
from ssmlab.models.lm import CausalLM

st = pytest.importorskip("safetensors.torch")


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg
    return msg


def edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


def test_directory_without_config(tmp_path):
    with pytest.raises(UserError) as err:
        load_checkpoint(tmp_path)
    assert "has no config.json" in one_line(err)


def test_hub_id_is_not_downloaded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as err:
        load_checkpoint("state-spaces/mamba-130m")
    msg = one_line(err)
    assert "is not a local directory or file" in msg and "never downloads" in msg


@pytest.mark.parametrize("cfg,needle", [
    ({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, "'llama' is not Mamba"),
    ({"architectures": ["GPT2LMHeadModel"]}, "'GPT2LMHeadModel' is not Mamba"),
    ({"model_type": "mamba", "architectures": ["FalconMambaForCausalLM"]},
     "'FalconMambaForCausalLM' is not supported"),
    ({"hello": 1}, "not a Mamba config"),
    ({"d_model": 8, "n_layer": 2, "vocab_size": 10, "ssm_cfg": {"layer": "Mamba3"}},
     "'Mamba3' is not Mamba"),
])
def test_architecture_that_is_not_mamba(tiny_checkpoint, cfg, needle):
    folder = tiny_checkpoint("mamba")
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError) as err:
        load_checkpoint(folder)
    assert needle in one_line(err)


@pytest.mark.parametrize("arch,change,tensor", [
    ("mamba", {"state_size": 6}, "layers.0.mixer.A_log"),
    ("mamba", {"hidden_size": 32}, "backbone.embeddings.weight"),
    ("mamba2", {"n_groups": 1}, "mixer.in_proj.weight"),
    ("mamba", {"conv_kernel": 4}, "mixer.conv1d.weight"),
])
def test_mismatched_shapes_name_the_tensor(tiny_checkpoint, arch, change, tensor):
    folder = tiny_checkpoint(arch)
    edit_config(folder, **change)
    with pytest.raises(UserError) as err:
        load_checkpoint(folder)
    msg = one_line(err)
    assert tensor in msg and "has shape" in msg and "config implies" in msg


def test_missing_and_unexpected_tensors(tiny_checkpoint):
    folder = tiny_checkpoint("mamba")
    tensors = st.load_file(folder / "model.safetensors")
    dropped = dict(tensors)
    del dropped["backbone.layers.1.mixer.D"]
    st.save_file(dropped, folder / "model.safetensors")
    with pytest.raises(UserError) as err:
        load_checkpoint(folder)
    assert "missing tensor backbone.layers.1.mixer.D" in one_line(err)
    st.save_file(tensors | {"backbone.layers.7.mixer.D": torch.ones(32)},
                 folder / "model.safetensors")
    with pytest.raises(UserError) as err:
        load_checkpoint(folder)
    assert "unexpected tensor backbone.layers.7.mixer.D" in one_line(err)


def test_untied_checkpoint_needs_lm_head_and_tied_one_must_match(tiny_checkpoint):
    folder = tiny_checkpoint("mamba2")  # untied
    tensors = st.load_file(folder / "model.safetensors")
    st.save_file({k: v for k, v in tensors.items() if k != "lm_head.weight"},
                 folder / "model.safetensors")
    with pytest.raises(UserError) as err:
        load_checkpoint(folder)
    assert "no lm_head.weight" in one_line(err)
    folder = tiny_checkpoint("mamba", name="tied")
    tensors = st.load_file(folder / "model.safetensors")
    head = tensors["backbone.embeddings.weight"] + 1
    st.save_file(tensors | {"lm_head.weight": head}, folder / "model.safetensors")
    with pytest.raises(UserError) as err:
        load_checkpoint(folder)
    assert "differs from the embedding" in one_line(err)


@pytest.mark.parametrize("keep", [4, 100, -200])
def test_truncated_safetensors(tiny_checkpoint, keep):
    folder = tiny_checkpoint("mamba")
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep > 0 else data[:keep])
    with pytest.raises(UserError) as err:
        load_checkpoint(folder)
    assert "truncated" in one_line(err) and "model.safetensors" in str(err.value)


def test_corrupt_safetensors_header(tiny_checkpoint):
    folder = tiny_checkpoint("mamba")
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:20] = b"\xff" * 12  # the JSON header
    path.write_bytes(bytes(data))
    with pytest.raises(UserError) as err:
        load_checkpoint(folder)
    assert "corrupt" in one_line(err)


def test_truncated_torch_state_dict(tmp_path, tiny_checkpoint):
    folder = tiny_checkpoint("mamba")
    sd = st.load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(sd, folder / "pytorch_model.bin")
    assert load_checkpoint(folder).fmt == "transformers"  # the .bin fallback works
    data = (folder / "pytorch_model.bin").read_bytes()
    (folder / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as err:
        load_checkpoint(folder)
    assert "not a readable torch state dict" in one_line(err)


def test_no_weights_file(tiny_checkpoint):
    folder = tiny_checkpoint("mamba")
    (folder / "model.safetensors").unlink()
    with pytest.raises(UserError) as err:
        load_checkpoint(folder)
    assert "has no model.safetensors" in one_line(err)


def test_config_that_is_not_json(tiny_checkpoint):
    folder = tiny_checkpoint("mamba")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(UserError) as err:
        load_checkpoint(folder)
    assert "is not valid JSON" in one_line(err)


@pytest.mark.parametrize("change,needle", [
    ({"num_hidden_layers": 0}, "num_hidden_layers must be a positive integer"),
    ({"hidden_size": "16"}, "hidden_size must be a positive integer"),
    ({"layer_norm_epsilon": -1}, "layer_norm_epsilon"),
    ({"hidden_act": "gelu"}, "only 'silu'"),
    ({"tie_word_embeddings": "yes"}, "tie_word_embeddings must be true or false"),
])
def test_bad_config_values(tiny_checkpoint, change, needle):
    folder = tiny_checkpoint("mamba")
    edit_config(folder, **change)
    with pytest.raises(UserError) as err:
        load_checkpoint(folder)
    assert needle in one_line(err)


def test_mamba2_time_step_limit_must_be_unclamped(tiny_checkpoint):
    folder = tiny_checkpoint("mamba2")
    edit_config(folder, time_step_limit=[0.0, {"__float__": "Infinity"}])
    assert load_checkpoint(folder).spec.arch == "mamba2"  # transformers' own encoding of inf
    edit_config(folder, time_step_limit=[0.001, 0.1])
    with pytest.raises(UserError) as err:
        load_checkpoint(folder)
    assert "only (0, inf) is supported" in one_line(err)


MS_BASE = {"d_model": 16, "n_layer": 3, "vocab_size": 64, "ssm_cfg": {"layer": "Mamba1"}}


@pytest.mark.parametrize("change,needle", [
    ({"d_intermediate": 64}, "MLP layers"),
    ({"attn_layer_idx": [1]}, "attention layers"),
    ({"rms_norm": False}, "LayerNorm"),
    ({"ssm_cfg": {"layer": "Mamba2", "norm_before_gate": True}}, "norm_before_gate"),
    ({"ssm_cfg": {"layer": "Mamba2", "D_has_hdim": True}}, "D_has_hdim"),
    ({"ssm_cfg": {"layer": "Mamba2", "d_ssm": 8}}, "d_ssm"),
    ({"ssm_cfg": {"layer": "Mamba2", "dt_limit": [0.0, 0.1]}}, "dt_limit"),
])
def test_unsupported_mamba_ssm_configs(tmp_path, change, needle):
    torch.save({}, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(MS_BASE | change))
    with pytest.raises(UserError) as err:
        load_checkpoint(tmp_path / "pytorch_model.bin")
    assert needle in one_line(err)


def test_state_dict_file_needs_a_config(tmp_path):
    torch.save({}, tmp_path / "weights.pt")
    with pytest.raises(UserError) as err:
        load_checkpoint(tmp_path / "weights.pt")
    assert "has no config.json" in one_line(err)
    with pytest.raises(UserError) as err:
        load_checkpoint(tmp_path / "weights.pt", config=tmp_path / "missing.json")
    assert "does not exist" in one_line(err)


def test_missing_optional_package_says_how_to_install(tiny_checkpoint, monkeypatch):
    folder = tiny_checkpoint("mamba")
    monkeypatch.setitem(sys.modules, "safetensors", None)
    with pytest.raises(UserError) as err:
        load_checkpoint(folder)
    msg = one_line(err)
    assert "safetensors" in msg and "pip install -e '.[hf]'" in msg


@pytest.mark.parametrize("kwargs,needle", [
    (dict(mixer="s4d"), "every layer to be a MambaBlock"),
    (dict(norm="layer"), "RMSNorm"),
    (dict(pos_encoding="sinusoidal"), "pos_encoding"),
])
def test_export_refuses_what_transformers_cannot_express(tmp_path, kwargs, needle):
    args = dict(mixer="mamba", d_model=8, depth=1, vocab_size=10) | kwargs
    lm = CausalLM(**args)
    with pytest.raises(UserError) as err:
        save_transformers(lm, tmp_path / "out")
    assert needle in one_line(err)
    assert not (tmp_path / "out").exists()


def test_export_refuses_a_head_bias_and_whole_width_mamba2_norm():
    lm = CausalLM("mamba", d_model=8, depth=1, vocab_size=10)  # head with a bias
    with torch.no_grad():
        lm.head.bias.fill_(0.5)
    with pytest.raises(UserError, match="non-zero bias"):
        spec_from_model(lm)
    lm.head.bias.data.zero_()
    assert spec_from_model(lm).arch == "mamba"  # a zero bias is dropped
    lm2 = CausalLM("mamba2", d_model=8, depth=1, vocab_size=10,
                   mixer_kwargs=dict(headdim=4, ngroups=2, d_state=4))
    with pytest.raises(UserError, match="norm_per_group"):
        spec_from_model(lm2)
    assert spec_from_model(TINY["mamba2"].build()).ngroups == 2
