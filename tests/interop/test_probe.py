"""The probe: its quantities against brute force and against the layers' own
`attention_matrix` / `delta`, the bounds' consistency, the report files, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ssmlab.errors import UserError
from ssmlab.interop import probe as probe_mod
from ssmlab.interop.checkpoint import load_checkpoint
from ssmlab.interop.cli import _LayerBar, parse_index_list, parse_tokens, probe_command
from ssmlab.interop.lens import (
    block_max_abs,
    blocked_implied_attention,
    lookback,
    memory_summary,
    rho_bound,
    rho_measured,
)
from ssmlab.interop.probe import default_channels, layer_view, probe
from ssmlab.interop.testing import backbone_states
from ssmlab.ops.attention_lens import implied_attention
from ssmlab.papers.generalization.theory import log_s2

pytest.importorskip("safetensors")


# ----------------------------------------------------------------------------- lens


@pytest.mark.parametrize("L,E,N", [(1, 3, 2), (2, 1, 1), (7, 4, 3), (16, 3, 1), (37, 5, 4),
                                   (64, 2, 2)])
def test_blocked_attention_equals_implied_attention(L, E, N):
    g = torch.Generator().manual_seed(L * 100 + E)
    delta = 2 * torch.rand(L, E, generator=g, dtype=torch.float64)
    A = -3 * torch.rand(E, N, generator=g, dtype=torch.float64)
    B, C = (torch.randn(L, N, generator=g, dtype=torch.float64) for _ in range(2))
    ref = implied_attention(delta.T[None], A, B.T[None], C.T[None])[0]  # (E, L, L)
    got = blocked_implied_attention(delta, A, B, C)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-13)
    mean = blocked_implied_attention(delta, A, B, C, channel_mean=True)
    torch.testing.assert_close(mean, ref.mean(0), rtol=1e-12, atol=1e-13)


def test_blocked_attention_survives_fast_decay_without_overflow():
    """Steps that drive exp(A Δ-sums) far below float32's range: finite, matching float64."""
    g = torch.Generator().manual_seed(0)
    L, E, N = 200, 3, 4
    delta = 5 + 5 * torch.rand(L, E, generator=g, dtype=torch.float64)
    A = -20 * torch.rand(E, N, generator=g, dtype=torch.float64) - 1
    B, C = (torch.randn(L, N, generator=g, dtype=torch.float64) for _ in range(2))
    ref = implied_attention(delta.T[None], A, B.T[None], C.T[None])[0].mean(0)
    got = blocked_implied_attention(delta.float(), A.float(), B.float(), C.float(),
                                    channel_mean=True)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-6 * float(ref.abs().max()))


def test_memory_summary_and_rho_against_brute_force():
    g = torch.Generator().manual_seed(1)
    L, E, N = 23, 6, 3
    delta = torch.rand(L, E, generator=g, dtype=torch.float64)
    A = -2 * torch.rand(E, N, generator=g, dtype=torch.float64)
    f = torch.exp(delta[:, :, None] * A)  # (L, E, N)
    mem = memory_summary(delta, A, chunk=5)
    torch.testing.assert_close(torch.from_numpy(mem["keep"]), f.mean((1, 2)), rtol=1e-6,
                               atol=0)
    tail = torch.stack([f[s + 1:].prod(0) for s in range(L)])  # Π_{k>s} f_k
    torch.testing.assert_close(torch.from_numpy(mem["retention"]), tail.mean((1, 2)),
                               rtol=1e-5, atol=1e-7)
    assert mem["hist"].sum() == L * E * N
    assert mem["mean"] == pytest.approx(float(f.mean()), rel=1e-6)
    sA = A.max(1).values
    assert mem["tau"] == pytest.approx((1 / (sA.abs() * delta.mean(0))).numpy(), rel=1e-12)
    assert rho_measured(delta, A) == pytest.approx(float(f.max()), rel=1e-12)


def test_rho_bound_covers_every_input_within_B_u():
    """ρ_A over inputs with ‖u_t‖ ≤ B_u never exceeds the bound, and reaches it (to 1e-9) at the
    input that makes channel c's step smallest: u = -B_u q_c / ‖q_c‖."""
    g = torch.Generator().manual_seed(2)
    E, N, L, B_u = 5, 3, 50, 2.0
    A = -torch.rand(E, N, generator=g, dtype=torch.float64) - 0.1
    W = torch.randn(E, E, generator=g, dtype=torch.float64)
    p = torch.randn(E, generator=g, dtype=torch.float64)
    u = torch.randn(L, E, generator=g, dtype=torch.float64)
    u = B_u * u / u.norm(dim=1, keepdim=True) * torch.rand(L, 1, generator=g, dtype=torch.float64)
    bound = rho_bound(A, p, W.norm(dim=1), B_u)
    assert rho_measured(torch.nn.functional.softplus(p + u @ W.T), A) <= bound
    best = max(rho_measured(torch.nn.functional.softplus(p + (-B_u * W[c] / W[c].norm())[None]
                                                         @ W.T), A) for c in range(E))
    assert best == pytest.approx(bound, rel=1e-9)


def test_block_max_abs_pools_the_magnitude_for_display():
    a = -torch.arange(100.0).reshape(10, 10)
    assert torch.equal(block_max_abs(a, size=16), a.abs())  # small: unchanged
    pooled = block_max_abs(a[None], size=4)  # blocks of 3 (the last one partial)
    assert pooled.shape == (1, 4, 4)
    assert float(pooled[0, 0, 0]) == 22.0 and float(pooled[0, 3, 3]) == 99.0


def test_lookback_measures_distance():
    L = 9
    assert float(lookback(torch.eye(L))) == 0.0
    shift = torch.diag(torch.ones(L - 3), -3)  # every row t ≥ 3 reads t - 3
    assert float(lookback(shift)) == pytest.approx(3 * (L - 3) / L)


# ----------------------------------------------------------------------------- the probe


@pytest.mark.parametrize("arch", ["mamba", "mamba2"])
def test_layer_view_matches_the_layers_own_attention_and_delta(tiny_checkpoint, arch):
    loaded = load_checkpoint(tiny_checkpoint(arch, dtype=torch.float64), dtype=torch.float64)
    lm = loaded.model
    ids = torch.randint(0, 64, (1, 29), generator=torch.Generator().manual_seed(3))
    states = backbone_states(lm, ids)
    layer = 1
    block = lm.backbone.layers[layer]
    x = block.norm(states[layer - 1])  # the mixer input of layer 1
    channels = [0, 2, 3]
    with torch.no_grad():
        view = layer_view(block.mixer, x, channels)
        M = block.mixer.attention_matrix(x)[0]  # (channels or heads, L, L)
    torch.testing.assert_close(view.alpha, M[channels], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(view.alpha_mean, M.mean(0), rtol=1e-10, atol=1e-12)
    if arch == "mamba":
        with torch.no_grad():
            torch.testing.assert_close(view.delta, block.mixer.delta(x)[0], rtol=1e-12, atol=0)
    # the generalization paper's Δ = softplus(p + q·u): p and ‖q‖ reproduce Δ's extremes
    assert rho_measured(view.delta, view.A) <= rho_bound(view.A, view.p, view.q_norm, view.B_u)


@pytest.mark.parametrize("arch", ["mamba", "mamba2"])
def test_probe_quantities(tiny_checkpoint, arch):
    loaded = load_checkpoint(tiny_checkpoint(arch, dtype=torch.float64), dtype=torch.float64)
    tokens = torch.randint(0, 64, (31,), generator=torch.Generator().manual_seed(4)).tolist()
    res = probe(loaded, tokens, layers=[0, 2], channels=[1, 3])
    assert [lp.layer for lp in res.layers] == [0, 2]
    lm = loaded.model
    states = backbone_states(lm, torch.tensor([tokens]))
    lp = res.layers[1]
    mixer = lm.backbone.layers[2].mixer
    x = lm.backbone.layers[2].norm(states[1])
    with torch.no_grad():
        view = layer_view(mixer, x, [1, 3])
    delta, A = view.delta.double(), view.A.double()
    f = torch.exp(delta[:, :, None] * A)
    s = lp.scalars
    assert s["s_A"] == pytest.approx(float(A.max()))
    assert s["rho_A"] == pytest.approx(float(f.max()), rel=1e-12)
    assert s["rho_A"] <= s["rho_A_bound"] < 1  # A < 0: the bound stays below 1
    norms = [s["M_Delta"], s["B_w"], s["B_u"] ** 3, s["B_B"], s["B_C"], s["B_A"]]
    assert s["log_capacity_sqrt_m"] == pytest.approx(
        sum(math.log(v) for v in norms) + log_s2(s["rho_A_bound"], len(tokens)), rel=1e-12)
    gate = (delta / delta.mean(0)).mean(1)
    assert [e["position"] for e in lp.top_tokens] == \
        torch.argsort(gate, descending=True)[:len(lp.top_tokens)].tolist()
    assert lp.channel_top_tokens[3][0]["position"] == int(delta[:, 3].argmax())
    assert lp.delta_stats["max"] == pytest.approx(delta.max(0).values.numpy())
    torch.testing.assert_close(torch.from_numpy(lp.alpha_display[:2]).double(),
                               view.alpha.abs(), rtol=1e-6, atol=1e-12)
    assert lp.memory["keep"] == pytest.approx(f.mean((1, 2)).numpy(), rel=1e-6)


def test_probe_cuts_long_inputs(tiny_checkpoint, monkeypatch):
    monkeypatch.setattr(probe_mod, "MAX_TOKENS", 12)
    loaded = load_checkpoint(tiny_checkpoint("mamba"))
    res = probe(loaded, list(range(20)), layers=[0])
    assert res.T == 12 and res.truncated_from == 20
    assert res.layers[0].gate.shape == (12,)


def test_default_channels():
    assert default_channels(4) == [0, 1, 2, 3]
    ch = default_channels(1536)
    assert len(ch) == 8 and ch[0] == 0 and ch[-1] == 1535


# ----------------------------------------------------------------------------- the command


def test_probe_command_with_tokenizer_writes_html_and_json(tmp_path, tiny_checkpoint,
                                                           word_tokenizer):
    folder = tiny_checkpoint("mamba")
    words = [f"w{i}" for i in range(60)]
    word_tokenizer(folder, words)
    text = tmp_path / "in.txt"
    text.write_text("w5 w7 w9 w11 w5 w3 w40 w41 w42 w2 w7 w59\n")
    page = probe_command(folder, tmp_path / "out", text, None, "0,2", "1,5", quiet=True)
    assert page == tmp_path / "out" / "index.html"
    doc = json.loads((tmp_path / "out" / "probe.json").read_text())
    assert doc["tokens"] == [5, 7, 9, 11, 5, 3, 40, 41, 42, 2, 7, 59]
    assert doc["labels"] == [words[i] for i in doc["tokens"]]
    assert [ly["layer"] for ly in doc["layers"]] == [0, 2] and doc["channels"] == [1, 5]
    ly = doc["layers"][0]
    for key in ("s_A", "rho_A", "rho_A_bound", "log_S2", "log_capacity_sqrt_m"):
        assert isinstance(ly[key], float)
    assert len(ly["delta"]["per_channel"]["mean"]) == 32
    assert ly["delta"]["top_tokens"][0]["label"] in words
    assert set(ly["attention"]["lookback_tokens"]) == {"1", "5", "mean"}
    html = page.read_text()
    for fig in ("summary.png", "tokens.png", "memory.png", "layer_00_attention.png",
                "layer_02_attention.png"):
        assert (tmp_path / "out" / "figures" / fig).stat().st_size > 1000
        assert f"figures/{fig}" in html
    assert "w40" in html  # token labels in the page's tables
    assert "load" in doc["timings_s"]
    assert doc["timings_s"]["layer figures"] > 0


def test_probe_command_with_token_ids_and_no_tokenizer(tmp_path, tiny_checkpoint):
    folder = tiny_checkpoint("mamba2")
    page = probe_command(folder, tmp_path / "out", None, "1, 2,3,63", None, None, quiet=True)
    doc = json.loads(page.with_name("probe.json").read_text())
    assert doc["tokens"] == [1, 2, 3, 63] and doc["labels"] is None
    assert doc["channels"] == [0, 1, 2, 3] and doc["channel_kind"] == "head"
    assert [ly["layer"] for ly in doc["layers"]] == [0, 1, 2]


@pytest.mark.parametrize("kwargs,needle", [
    (dict(tokens="1,2,64"), "token id 64 is out of the vocabulary [0, 64)"),
    (dict(tokens="1,-2"), "'-2' is not a non-negative integer token id"),
    (dict(tokens="1,,2"), "comma-separated"),
    (dict(tokens="3", layers="0,3"), "layer 3 is out of range: the model has 3 layers"),
    (dict(tokens="3", layers="2-1"), "runs backwards"),
    (dict(tokens="3", layers="x"), "'x' is not a non-negative integer"),
    (dict(tokens="3", channels="0,32"), "channel 32 is out of range"),
    (dict(tokens="3", channels="1-3"), "'1-3' is not a non-negative integer (N)"),
    (dict(), "give exactly one of --text-file F or --tokens"),
    (dict(tokens="3", text="w1"), "give exactly one of"),
    (dict(text=""), "is empty"),
    (dict(text="  \n\t"), "is empty"),
    (dict(text="w1 w2"), "no tokenizer.json"),
])
def test_probe_command_bad_input(tmp_path, tiny_checkpoint, kwargs, needle):
    folder = tiny_checkpoint("mamba")
    text_file = None
    if "text" in kwargs:
        text_file = tmp_path / "t.txt"
        text_file.write_text(kwargs["text"])
    with pytest.raises(UserError) as err:
        probe_command(folder, tmp_path / "out", text_file, kwargs.get("tokens"),
                      kwargs.get("layers"), kwargs.get("channels"), quiet=True)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_probe_command_missing_text_file_and_bad_checkpoint(tmp_path, tiny_checkpoint):
    folder = tiny_checkpoint("mamba")
    with pytest.raises(UserError, match="does not exist"):
        probe_command(folder, tmp_path / "o", tmp_path / "nope.txt", None, None, None, True)
    with pytest.raises(UserError, match="not a local directory"):
        probe_command(Path("org/model"), tmp_path / "o", None, "1", None, None, True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        probe_command(folder, tmp_path / "file", None, "1", None, None, True)


def test_text_that_tokenises_to_nothing(tmp_path, tiny_checkpoint, word_tokenizer):
    """A non-empty file whose text the tokenizer normalises away (here: it deletes every 'x')."""
    from tokenizers import Tokenizer
    from tokenizers.normalizers import Replace

    folder = tiny_checkpoint("mamba")
    path = word_tokenizer(folder, ["a", "b"])
    tok = Tokenizer.from_file(str(path))
    tok.normalizer = Replace("x", "")
    tok.save(str(path))
    text = tmp_path / "t.txt"
    text.write_text("xxx")
    with pytest.raises(UserError, match="gives no tokens"):
        probe_command(folder, tmp_path / "o", text, None, "0", None, quiet=True)


def test_parsers():
    assert parse_index_list("0,5,10-12", "layers", ranges=True) == [0, 5, 10, 11, 12]
    assert parse_index_list(" 3 , 1,3", "channels", ranges=False) == [1, 3]
    assert parse_tokens("5,5,1") == [5, 5, 1]


def test_progress_bar_is_off_when_quiet_or_not_a_terminal(capsys):
    assert not _LayerBar(quiet=True, total=3).enabled
    assert not _LayerBar(quiet=False, total=3).enabled  # pytest's stderr is not a tty
    with _LayerBar(quiet=False, total=3) as bar:
        bar.advance(0)
    assert capsys.readouterr().err == ""


def test_ssmlab_probe_on_the_command_line(tmp_path, tiny_checkpoint, capfd):
    """`ssmlab probe` end to end: exit 0 with the page written; bad input exits 2 with one line
    and writes nothing."""
    from ssmlab.cli import main

    folder = tiny_checkpoint("mamba")
    with pytest.raises(SystemExit) as e:
        main(["probe", str(folder), "-o", str(tmp_path / "out"), "--tokens", "1,2,3", "-q"])
    assert e.value.code == 0
    assert "index.html" in capfd.readouterr().out
    assert json.loads((tmp_path / "out" / "probe.json").read_text())["tokens"] == [1, 2, 3]
    with pytest.raises(SystemExit) as e:
        main(["probe", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o2"), "--tokens", "1"])
    err = capfd.readouterr().err.splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert not (tmp_path / "o2").exists()
