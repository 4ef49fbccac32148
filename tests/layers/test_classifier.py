"""Sequence classifier and causal LM: the backbone init never overwrites the mixers' SSM init,
shapes, pooling with padding, causality of the LM, positional encodings, strict configs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from layers_cases import randn

from ssmlab.errors import UserError
from ssmlab.layers.mamba2 import Mamba2
from ssmlab.layers.registry import mixer_names
from ssmlab.layers.s6 import MambaBlock
from ssmlab.models.classifier import SequenceClassifier, SequenceClassifierConfig
from ssmlab.models.lm import CausalLM, CausalLMConfig

SMALL = {"mamba": dict(d_state=4), "s6": dict(d_state=4), "s4d": dict(d_state=4),
         "mamba2": dict(d_state=4, headdim=4), "mamba_dt": dict(d_state=4),
         "softmax": dict(n_heads=2), "linear": dict(n_heads=2), "local": dict(window=3),
         "retnet": dict(n_heads=2), "gla": dict(n_heads=2)}


def _recording_factory(cls, created: list, **kwargs):
    """A mixer factory that snapshots each mixer's parameters right after the mixer's own init."""
    def factory(d_model: int):
        m = cls(d_model, **kwargs)
        created.append((m, {n: p.detach().clone() for n, p in m.named_parameters()}))
        return m
    return factory


@pytest.mark.parametrize("init", ["mamba", "none"])
def test_classifier_init_keeps_mamba_ssm_parameters(init):
    created: list = []
    torch.manual_seed(0)
    model = SequenceClassifier(_recording_factory(MambaBlock, created, d_state=4), d_model=16,
                               depth=2, n_classes=3, vocab_size=11, init=init)
    assert len(created) == 2
    for mixer, snapshot in created:
        for name in ("dt_proj.bias", "A_log", "D", "dt_proj.weight"):
            assert torch.equal(dict(mixer.named_parameters())[name], snapshot[name]), name
        dt = F.softplus(mixer.dt_proj.bias.detach().double())
        assert dt.min() >= 0.001 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    if init == "mamba":  # the backbone init did run: plain Linear biases zeroed, out_proj rescaled
        assert torch.equal(model.head.bias.detach(), torch.zeros(3))
        assert not torch.equal(created[0][0].out_proj.weight, created[0][1]["out_proj.weight"])


def test_classifier_init_keeps_mamba2_parameters():
    created: list = []
    SequenceClassifier(_recording_factory(Mamba2, created, d_state=4, headdim=4, bias=True),
                       d_model=8, depth=1, binary=True, d_input=3)
    mixer, snapshot = created[0]
    for name in ("dt_bias", "A_log", "D"):
        assert torch.equal(dict(mixer.named_parameters())[name], snapshot[name]), name
    assert torch.equal(mixer.in_proj.bias.detach(), torch.zeros_like(mixer.in_proj.bias))


@pytest.mark.parametrize("name", mixer_names())
def test_every_registered_mixer_builds_a_classifier(name):
    torch.manual_seed(0)
    model = SequenceClassifier(name, d_model=8, depth=2, n_classes=4, vocab_size=7,
                               mixer_kwargs=SMALL[name]).double()
    x = torch.randint(0, 7, (3, 6))
    logits = model(x)
    assert logits.shape == (3, 4) and torch.isfinite(logits).all()
    logits.sum().backward()


def test_pooling_with_right_padding_ignores_the_padding():
    torch.manual_seed(0)
    for pooling in ("last", "mean"):
        model = SequenceClassifier("mamba", d_model=8, depth=1, binary=True, d_input=2,
                                   pooling=pooling, mixer_kwargs=dict(d_state=4)).double()
        x = randn(2, 7, 2)
        lengths = torch.tensor([4, 7])
        padded = x.clone()
        padded[0, 4:] = 123.0  # garbage after the end of sequence 0
        out = model(padded, lengths)
        assert out.shape == (2,)
        torch.testing.assert_close(out[0], model(x[:1, :4])[0])
        torch.testing.assert_close(out[1], model(x[1:])[0])


def test_lm_is_causal_and_per_position():
    torch.manual_seed(0)
    lm = CausalLM("mamba_dt", d_model=8, depth=2, vocab_size=9, pos_encoding="sinusoidal",
                  mixer_kwargs=dict(d_state=4)).double()
    x = torch.randint(0, 9, (2, 8))
    y = lm(x)
    assert y.shape == (2, 8, 9)
    x2 = x.clone()
    x2[:, 5] = (x2[:, 5] + 1) % 9
    y2 = lm(x2)
    torch.testing.assert_close(y2[:, :5], y[:, :5], rtol=0, atol=1e-12)
    assert (y2[:, 5] - y[:, 5]).abs().max() > 1e-6


def test_positional_encodings_make_positions_distinguishable():
    torch.manual_seed(0)
    for pe in ("sinusoidal", "learned"):
        lm = CausalLM("s6", d_model=8, depth=1, vocab_size=3, n_outputs=2, pos_encoding=pe,
                      max_len=10, mixer_kwargs=dict(d_state=2))
        h = lm.backbone.encode(torch.zeros(1, 6, dtype=torch.long))
        assert not torch.allclose(h[0, 0], h[0, 3])
    lm = CausalLM("s6", d_model=8, depth=1, vocab_size=3, pos_encoding="learned", max_len=4)
    with pytest.raises(UserError, match="max_len"):
        lm(torch.zeros(1, 6, dtype=torch.long))


def test_configs_are_strict_and_build_deterministically():
    cfg = SequenceClassifierConfig(mixer="s4d", d_model=8, n_classes=3, vocab_size=5,
                                   mixer_kwargs=dict(d_state=4), norm="layer", pooling="mean")
    a, b = cfg.build(seed=3), cfg.build(seed=3)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(p, q), n
    state = torch.random.get_rng_state()
    cfg.build(seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    with pytest.raises(ValueError):
        SequenceClassifierConfig(mixer="s4d", n_classes=3, vocab_size=5, dropout=0.1)
    lm = CausalLMConfig(mixer="softmax", d_model=8, d_input=1, n_outputs=3).build(seed=0)
    assert lm(torch.randn(2, 5)).shape == (2, 5, 3)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(n_classes=3), "vocab_size"),
    (dict(n_classes=3, vocab_size=4, d_input=2), "exactly one of vocab_size"),
    (dict(vocab_size=4), "n_classes"),
    (dict(n_classes=3, binary=True, vocab_size=4), "n_classes"),
    (dict(n_classes=3, vocab_size=4, pooling="max"), "pooling"),
    (dict(n_classes=3, vocab_size=4, norm="batch"), "norm"),
    (dict(n_classes=3, vocab_size=4, pos_encoding="learned"), "max_len"),
    (dict(n_classes=3, vocab_size=4, mixer_kwargs=dict(d_sate=4)), "d_sate"),
])
def test_bad_arguments_are_user_errors(kwargs, needle):
    with pytest.raises(UserError, match=needle):
        SequenceClassifier("mamba", d_model=8, depth=1, **kwargs)


def test_unknown_mixer_name_is_user_error():
    with pytest.raises(UserError, match="unknown mixer 'mamba3'"):
        SequenceClassifier("mamba3", d_model=8, depth=1, n_classes=2, vocab_size=3)


def test_features_as_they_are_and_a_plain_stack():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8)
    m = SequenceClassifier("s6", d_model=8, depth=2, binary=True, d_input=8, input_proj=False,
                           init="none")
    assert isinstance(m.backbone.embedding, torch.nn.Identity)
    hs = m.backbone.hidden(x)
    assert len(hs) == 3 and torch.equal(hs[0], x)
    blk = m.backbone.layers[0]
    assert torch.allclose(hs[1], x + blk.mixer(blk.norm(x)))
    plain = CausalLM("s6", d_model=8, depth=1, d_input=8, n_outputs=3, input_proj=False,
                     residual=False, norm="none", final_norm=False, head_bias=False, init="none")
    assert plain.head.bias is None
    assert torch.allclose(plain(x), plain.head(plain.backbone.layers[0].mixer(x)))
    with pytest.raises(UserError, match="needs d_input == d_model"):
        SequenceClassifier("s6", d_model=8, depth=1, binary=True, d_input=4, input_proj=False)
