"""train_ensemble: the vmapped path reproduces the loop of `train` calls, seed by seed, and falls
back to the loop (with its reason) when the model or data cannot be vectorised."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn
from trainkit import DT, Linear, TinyFiltering, linear_data, majority_data

from ssmlab.errors import UserError
from ssmlab.train.ensemble import train_ensemble, train_ensemble_models
from ssmlab.train.trainer import PROGRESS_HOOK, TrainConfig, TrainSetupError

SEEDS = [0, 1, 2]


def filt_data(s):
    return majority_data(s, "train", alpha_r=0.8), majority_data(s, "test", alpha_r=0.8)


def both(model_factory, cfg, data_factory, seeds=SEEDS, **kw):
    """Run loop and vmap on fresh models; return (loop results, vmap results, loop models,
    vmap models)."""
    ml = [model_factory(s) for s in seeds]
    mv = [model_factory(s) for s in seeds]
    rl = train_ensemble_models(ml, seeds, cfg, [data_factory(s) for s in seeds], mode="loop", **kw)
    rv = train_ensemble_models(mv, seeds, cfg, [data_factory(s) for s in seeds], mode="vmap", **kw)
    assert rl.mode == "loop" and rv.mode == "vmap"
    return rl, rv, ml, mv


def close(a, b, tol=1e-9):
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=tol, abs=tol)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b, strict=True))
    return a == b


def assert_same(rl, rv, ml, mv, tol=1e-9):
    assert len(rl) == len(rv)
    for a, b in zip(rl, rv, strict=True):
        assert (a.status, a.steps, a.diverged_at, a.steps_to_converge) == (
            b.status, b.steps, b.diverged_at, b.steps_to_converge)
        assert set(a.history) == set(b.history)
        for k in a.history:
            assert close(a.history[k], b.history[k], tol), k
        assert set(a.final) == set(b.final)
        for k in a.final:
            assert close(a.final[k], b.final[k], tol), k
    for m1, m2 in zip(ml, mv, strict=True):
        for (n1, p1), (n2, p2) in zip(m1.state_dict().items(), m2.state_dict().items(), strict=True):
            assert n1 == n2
            torch.testing.assert_close(p1, p2, rtol=tol, atol=tol, equal_nan=True)


def test_gd_hinge_filtering_model():
    cfg = TrainConfig(lr=2.0, epochs=30, frozen=("W_B", "W_C"), converge_error=0.25)
    rl, rv, ml, mv = both(TinyFiltering, cfg, filt_data)
    assert_same(rl, rv, ml, mv)
    stc = [r.steps_to_converge for r in rv]
    assert None in stc and any(s is not None and s > 0 for s in stc)  # seeds differ, and learn
    w = [m.w_delta.detach().clone() for m in mv]
    assert not torch.equal(w[0], w[1])  # seeds really differ


def test_adam_bce_with_probes_and_regularizer():
    def probe(model, step):
        return {"w_delta": model.w_delta.tolist(), "wo": float(model.W_O.norm())}

    def reg(model, out, y):
        return 1e-2 * (model.W_O**2).sum() + 1e-3 * (out**2).mean()

    cfg = TrainConfig(optimizer="adam", loss="bce", lr=0.05, epochs=12, probe_every=4,
                      frozen=("W_B",), weight_decay=1e-3)
    rl, rv, ml, mv = both(TinyFiltering, cfg, filt_data, probes=[probe], regularizer=reg)
    assert_same(rl, rv, ml, mv)
    assert rv[0].history["probe_step"] == [0, 4, 8, 12]


def test_sgd_minibatch_momentum_plateau_clip():
    cfg = TrainConfig(optimizer="sgd", loss="mse", lr=0.3, momentum=0.9, batch_size=10,
                      epochs=5, schedule="plateau", plateau_patience=0, plateau_factor=0.5,
                      plateau_threshold=0.3,
                      grad_clip=0.5, eval_every=2)

    def data(s):
        X, y = linear_data(s, "train", n=25)
        return (X, y * (1 + s)), linear_data(s, "test", n=7)

    rl, rv, ml, mv = both(lambda s: Linear(s, hidden=3), cfg, data)
    assert_same(rl, rv, ml, mv)
    lr = [r.history["lr"] for r in rv]
    assert min(lr[0]) < cfg.lr and lr[0] != lr[2]  # the schedule acted, per seed


def test_adamw_cosine_ce():
    cfg = TrainConfig(optimizer="adamw", loss="ce", lr=0.05, weight_decay=0.1, epochs=8,
                      schedule="cosine")
    rl, rv, ml, mv = both(lambda s: Linear(s, k=3), cfg,
                          lambda s: (linear_data(s, "train", k=3), linear_data(s, "test", k=3)))
    assert_same(rl, rv, ml, mv)


def test_per_seed_divergence_others_continue():
    cfg = TrainConfig(loss="mse", lr=0.5, epochs=20, diverge_loss=1e4)

    def data(s):  # seed 1's inputs are large: GD on it blows up, the others converge
        X, y = linear_data(s, "train")
        return (X * (8.0 if s == 1 else 1.0), y), linear_data(s, "test")

    rl, rv, ml, mv = both(Linear, cfg, data)
    assert_same(rl, rv, ml, mv)
    assert [r.status for r in rv] == ["ok", "diverged", "ok"]
    assert rv[1].diverged_at is not None and 0 < rv[1].diverged_at < 20
    assert rv[0].steps == rv[2].steps == 20


def test_stop_on_converge_per_seed():
    cfg = TrainConfig(lr=0.5, epochs=30, stop_on_converge=True)
    data = lambda s: (linear_data(s, "train", margin=0.1), None)  # noqa: E731
    rl, rv, ml, mv = both(Linear, cfg, data, seeds=[0, 1, 2, 3])
    assert_same(rl, rv, ml, mv)
    steps = [r.steps for r in rv]
    assert [r.steps_to_converge for r in rv] == [5, 24, 15, 2] == steps  # each seed stops alone


def test_online_samplers():
    cfg = TrainConfig(optimizer="sgd", lr=0.2, epochs=6)

    def data(s):
        return (lambda step: linear_data(100 * s + step, "train", n=8)), linear_data(s, "test")

    rl, rv, ml, mv = both(Linear, cfg, data)
    assert_same(rl, rv, ml, mv)


def test_frozen_prefix_errors_in_both_modes():
    cfg = TrainConfig(frozen=("nope",))
    for mode in ("auto", "vmap", "loop"):
        with pytest.raises(TrainSetupError, match="nope"):
            train_ensemble(Linear, SEEDS, cfg, lambda s: (linear_data(s, "train"), None), mode=mode)


def test_vmap_run_is_bit_identical_twice():
    cfg = TrainConfig(lr=1.0, epochs=6, frozen=("W_B", "W_C"))
    a = train_ensemble(TinyFiltering, SEEDS, cfg, filt_data, mode="vmap")
    b = train_ensemble(TinyFiltering, SEEDS, cfg, filt_data, mode="vmap")
    assert [r.history for r in a] == [r.history for r in b]


def test_progress_counts_seed_steps():
    seen = []
    cfg = TrainConfig(lr=0.1, epochs=3)
    data = lambda s: (linear_data(s, "train"), None)  # noqa: E731
    for mode in ("vmap", "loop"):
        seen.clear()
        train_ensemble(Linear, SEEDS, cfg, data, mode=mode, progress=lambda d, t: seen.append((d, t)))
        assert seen[-1] == (9, 9), mode
        seen.clear()
        token = PROGRESS_HOOK.set(lambda d, t: seen.append((d, t)))  # the CLI's default hook
        try:
            train_ensemble(Linear, SEEDS, cfg, data, mode=mode)
        finally:
            PROGRESS_HOOK.reset(token)
        assert seen[-1] == (9, 9), mode


# ------------------------------------------------------------------------------- fallbacks


class WithBatchNorm(nn.Module):
    def __init__(self, seed):
        super().__init__()
        self.lin = Linear(seed)
        self.bn = nn.BatchNorm1d(5, dtype=DT)

    def forward(self, X):
        return self.lin(self.bn(X))


class PlainTensor(Linear):
    def __init__(self, seed):
        super().__init__(seed)
        self.scale = torch.tensor(1.0 + seed, dtype=DT)  # not a buffer: lost in a template call

    def forward(self, X):
        return super().forward(X) * self.scale


class DataDependent(Linear):
    def forward(self, X):
        out = super().forward(X)
        return out if float(out.detach().sum()) > -1e9 else -out  # .item() on a batched tensor


class WithDropout(Linear):
    def __init__(self, seed):
        super().__init__(seed)
        self.drop = nn.Dropout(0.5)

    def forward(self, X):
        return super().forward(self.drop(X))


def ragged(s):
    return linear_data(s, "train", n=10 + s), None


@pytest.mark.parametrize("factory,data,reason", [
    (WithBatchNorm, lambda s: (linear_data(s, "train"), None), "mutates buffer 'bn.running_mean'"),
    (PlainTensor, lambda s: (linear_data(s, "train"), None), "plain attribute 'scale'"),
    (DataDependent, lambda s: (linear_data(s, "train"), None), "vmap trial step failed"),
    (WithDropout, lambda s: (linear_data(s, "train"), None), "vmap trial step failed"),
    (Linear, ragged, "training data of seed 1 has shapes"),
])
def test_auto_falls_back_with_a_logged_reason(factory, data, reason, caplog):
    cfg = TrainConfig(lr=0.1, epochs=2)
    with caplog.at_level(logging.WARNING, logger="ssmlab.train.ensemble"):
        res = train_ensemble(factory, SEEDS, cfg, data)
    assert res.mode == "loop" and reason in res.reason
    assert any(reason in r.getMessage() for r in caplog.records)
    assert [r.steps for r in res] == [2, 2, 2]
    with pytest.raises(UserError, match="cannot be vectorised"):
        train_ensemble(factory, SEEDS, cfg, data, mode="vmap")


def test_plain_tensor_attribute_equal_across_seeds_is_fine():
    class SameScale(Linear):
        def __init__(self, seed):
            super().__init__(seed)
            self.scale = torch.tensor(2.0, dtype=DT)

        def forward(self, X):
            return super().forward(X) * self.scale

    res = train_ensemble(SameScale, SEEDS, TrainConfig(epochs=2),
                         lambda s: (linear_data(s, "train"), None))
    assert res.mode == "vmap" and res.reason == ""


def test_bad_arguments():
    cfg = TrainConfig(epochs=1)
    data = lambda s: (linear_data(s, "train"), None)  # noqa: E731
    with pytest.raises(UserError, match="distinct"):
        train_ensemble(Linear, [1, 1], cfg, data)
    with pytest.raises(UserError, match="at least one"):
        train_ensemble(Linear, [], cfg, data)
    with pytest.raises(UserError, match="mode"):
        train_ensemble(Linear, [0], cfg, data, mode="fast")
