"""trainer.train: convergence, divergence, frozen prefixes, schedules, minibatches, online data,
clipping, regularizer, probes, determinism."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from pydantic import ValidationError
from trainkit import DT, Linear, TinyFiltering, linear_data, majority_data

from ssmlab.errors import UserError
from ssmlab.train.trainer import TrainConfig, TrainSetupError, evaluate, train


def test_gd_separable_reaches_zero_error():
    model = Linear(0)
    data = linear_data(0, "train", margin=0.5)
    res = train(model, TrainConfig(lr=0.5, epochs=60), data, linear_data(0, "test", margin=0.5))
    assert res.status == "ok" and res.steps == 60
    h = res.history
    assert h["train_error"][0] > 0  # starts wrong somewhere, so convergence is a real event
    first_zero = next(i for i, e in enumerate(h["train_error"]) if e == 0.0)
    assert res.steps_to_converge == h["step"][first_zero]
    assert res.final["train_error"] == 0.0
    assert all(len(v) == len(h["step"]) for v in h.values())
    assert set(h) == {"step", "train_loss", "train_error", "lr", "test_loss", "test_error"}


def test_stop_on_converge_stops_at_that_step():
    cfg = TrainConfig(lr=0.5, epochs=60, stop_on_converge=True)
    res = train(Linear(0), cfg, linear_data(0, "train", margin=0.5))
    assert res.steps_to_converge is not None and res.steps == res.steps_to_converge
    assert res.history["step"][-1] == res.steps


def test_divergence_is_a_result_with_its_step():
    X, y = linear_data(1, "train")
    y = y * 10
    cfg = TrainConfig(loss="mse", lr=50.0, epochs=100)
    res = train(Linear(1), cfg, (X, y), linear_data(1, "test"))
    assert res.status == "diverged" and res.diverged_at is not None
    assert res.steps == res.diverged_at and res.final == {}
    h = res.history
    assert h["step"][-1] == res.diverged_at
    lv = h["train_loss"][-1]
    assert not math.isfinite(lv) or lv > cfg.diverge_loss
    assert all(len(v) == len(h["step"]) for v in h.values())  # the divergence row is complete


def test_divergence_on_the_last_update_is_caught():
    X, y = linear_data(2, "train")
    cfg = TrainConfig(loss="mse", lr=1e6, epochs=1)  # loss at step 0 is fine; the update is not
    res = train(Linear(2), cfg, (X, y))
    assert res.history["train_loss"][0] < cfg.diverge_loss
    assert res.status == "diverged" and res.diverged_at == 1 and res.steps == 1
    assert res.history["step"] == [0, 1]


def test_frozen_prefixes_are_not_updated():
    model = TinyFiltering(0)
    before = copy.deepcopy(model.state_dict())
    cfg = TrainConfig(lr=0.5, epochs=5, frozen=("W_B", "W_C"))
    train(model, cfg, majority_data(0, "train"))
    after = model.state_dict()
    for k in ("W_B", "W_C", "v"):
        assert torch.equal(before[k], after[k]), k
    for k in ("w_delta", "W_O"):
        assert not torch.equal(before[k], after[k]), k


def test_unknown_frozen_prefix_is_an_error():
    cfg = TrainConfig(frozen=("W_Q",))
    with pytest.raises(TrainSetupError, match="W_Q") as e:
        train(TinyFiltering(0), cfg, majority_data(0, "train"))
    assert isinstance(e.value, UserError) and isinstance(e.value, ValueError)


def test_everything_frozen_is_an_error():
    with pytest.raises(TrainSetupError, match="no trainable"):
        train(Linear(0), TrainConfig(frozen=("w", "b")), linear_data(0, "train"))


def test_gd_rejects_batch_size():
    with pytest.raises(ValidationError, match="full-batch"):
        TrainConfig(optimizer="gd", batch_size=4)


def test_plateau_schedule_reduces_lr():
    # a bias-only score on balanced ±1 labels: hinge = 1 for |b| <= 1 and its gradient is 0, so
    # the loss never improves and ReduceLROnPlateau (patience 0) cuts lr after every epoch but
    # the first (which only sets the best value)
    X = torch.zeros(8, 5, dtype=DT)
    y = torch.tensor([1.0, -1.0] * 4, dtype=DT)
    cfg = TrainConfig(lr=1.0, epochs=6, schedule="plateau", plateau_patience=0, plateau_factor=0.5)
    res = train(Linear(0), cfg, (X, y))
    assert res.history["lr"] == [1.0, 1.0, 0.5, 0.25, 0.125, 0.0625]


def test_cosine_schedule_anneals_to_zero():
    cfg = TrainConfig(lr=0.2, epochs=10, schedule="cosine")
    res = train(Linear(0), cfg, linear_data(0, "train"))
    lr = res.history["lr"]
    assert lr[0] == 0.2 and all(a > b for a, b in zip(lr, lr[1:], strict=False))
    assert lr[5] == pytest.approx(0.1)


def test_minibatch_sgd_counts_steps_per_epoch():
    data = linear_data(0, "train", n=10)
    cfg = TrainConfig(optimizer="sgd", lr=0.1, batch_size=4, epochs=3)
    res = train(Linear(0), cfg, data)
    assert res.steps == 9 and res.history["step"] == list(range(9))  # 3 epochs x ceil(10/4)
    res = train(Linear(0), cfg.model_copy(update={"max_steps": 5}), data)
    assert res.steps == 5
    # the shuffle depends on `seed` only
    a = train(Linear(0), cfg, data, seed=3).history["train_loss"]
    b = train(Linear(0), cfg, data, seed=3).history["train_loss"]
    c = train(Linear(0), cfg, data, seed=4).history["train_loss"]
    assert a == b and a != c


def test_online_sampler_is_called_once_per_step():
    calls: list[int] = []

    def sampler(step: int):
        calls.append(step)
        return linear_data(step, "train", n=8)

    cfg = TrainConfig(optimizer="sgd", lr=0.1, epochs=7)
    res = train(Linear(0), cfg, sampler, linear_data(0, "test"))
    assert calls == list(range(7)) and res.steps == 7
    assert set(res.final) == {"test_loss", "test_error"}  # no training set to evaluate


def test_grad_clip_bounds_the_update():
    X, y = linear_data(0, "train")
    y = y * 5

    def step_norm(clip):
        model = Linear(0)
        w0 = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        train(model, TrainConfig(loss="mse", lr=1.0, epochs=1, grad_clip=clip), (X, y))
        w1 = torch.cat([p.detach().flatten() for p in model.parameters()])
        return float((w1 - w0).norm())

    free = step_norm(None)
    assert free > 1.0
    assert step_norm(0.01) == pytest.approx(0.01, rel=1e-4)  # GD step = lr * clipped gradient


def test_regularizer_is_added_to_the_objective():
    X, y = linear_data(0, "train")
    lam = 0.7

    def reg(model, out, y):
        return 0.5 * lam * (model.w**2).sum()

    model = Linear(0)
    ref = copy.deepcopy(model)
    res = train(model, TrainConfig(loss="mse", lr=0.1, epochs=1), (X, y), regularizer=reg)
    loss = torch.nn.functional.mse_loss(ref(X), y)
    gw, gb = torch.autograd.grad(loss, [ref.w, ref.b])
    torch.testing.assert_close(model.w.detach(), ref.w.detach() - 0.1 * (gw + lam * ref.w.detach()))
    torch.testing.assert_close(model.b.detach(), ref.b.detach() - 0.1 * gb)
    assert res.history["train_loss"][0] == pytest.approx(float(loss.detach()))  # recorded without it


def test_probes_every_k_steps_and_on_the_final_iterate():
    seen = []

    def probe(model, step):
        assert not model.training and not torch.is_grad_enabled()
        seen.append(step)
        return {"w_norm": float(model.w.norm())}

    cfg = TrainConfig(lr=0.1, epochs=6, probe_every=3)
    res = train(Linear(0), cfg, linear_data(0, "train"), probes=[probe])
    assert seen == [0, 3, 6] and res.history["probe_step"] == [0, 3, 6]
    assert len(res.history["w_norm"]) == 3


def test_eval_every_thins_the_history():
    res = train(Linear(0), TrainConfig(epochs=10, eval_every=4), linear_data(0, "train"))
    assert res.history["step"] == [0, 4, 8]


def _run_filtering(seed: int):
    model = TinyFiltering(seed)
    cfg = TrainConfig(lr=0.5, epochs=8, frozen=("W_B", "W_C"))
    res = train(model, cfg, majority_data(seed, "train"), majority_data(seed, "test"), seed=seed)
    return res, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("threads", [1, 2])
def test_same_config_and_seed_is_bit_identical(threads):
    torch.set_num_threads(threads)  # conftest restores the count
    r1, s1 = _run_filtering(3)
    r2, s2 = _run_filtering(3)
    assert r1.history == r2.history and r1.final == r2.final  # exact float equality
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    if threads == 1:
        r3, _ = _run_filtering(4)
        assert r3.history["train_loss"] != r1.history["train_loss"]


def test_no_epoch_limit_and_no_rows_instead_of_sentinels():
    with pytest.raises(ValueError, match="needs max_steps"):
        TrainConfig(epochs=None)
    X = torch.randn(20, 3)
    y = torch.sign(X[:, 0])
    model = torch.nn.Linear(3, 1)
    res = train(_Squeeze(model), TrainConfig(epochs=None, max_steps=7, eval_every=None, lr=0.01), (X, y))
    assert res.steps == 7 and "step" not in res.history and "train_loss" in res.final


class _Squeeze(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x).squeeze(-1)


@pytest.mark.parametrize("mode", ["single", "vmap"])
def test_keep_best_restores_the_lowest_loss_iterate(mode):
    from ssmlab.train import train_ensemble

    X = torch.randn(30, 3, generator=torch.Generator().manual_seed(0))
    y = X[:, 0] * 2.0
    # lr so large that GD oscillates and blows up: the best iterate is an early one
    cfg = TrainConfig(optimizer="gd", lr=1.9, loss="mse", epochs=12, keep_best=True,
                      converge_error=None, diverge_loss=1e30)

    def make(seed=0):
        torch.manual_seed(seed)
        return _Squeeze(torch.nn.Linear(3, 1))

    if mode == "single":
        model = make()
        res = train(model, cfg, (X, y))
        models = [model]
        results = [res]
    else:
        models = [make(0), make(1)]
        results = train_ensemble(lambda s: models[s], [0, 1], cfg, lambda s: ((X, y), None),
                                 mode="vmap")
    for model, res in zip(models, results, strict=True):
        losses = res.history["train_loss"]
        best = min(range(len(losses)), key=losses.__getitem__)
        assert res.best_step == best
        with torch.no_grad():
            final = float(((model(X) - y) ** 2).mean())
        assert final == pytest.approx(losses[best], rel=1e-5)
        assert res.final["train_loss"] == pytest.approx(losses[best], rel=1e-5)
    plain = train(make(), cfg.model_copy(update={"keep_best": False}), (X, y))
    assert plain.best_step is None and plain.final["train_loss"] > min(plain.history["train_loss"])


def test_evaluation_chunks_bound_positions_not_rows():
    """evaluate's chunks hold at most EVAL_TOKENS positions (long sequences: fewer rows), and the
    chunking changes nothing but float rounding: the result equals one whole-set pass."""
    from ssmlab.train.trainer import EVAL_MAX_ROWS, EVAL_TOKENS, eval_rows

    assert eval_rows((8, 3)) == EVAL_MAX_ROWS and eval_rows(()) == EVAL_MAX_ROWS
    assert eval_rows((512,)) == EVAL_TOKENS // 512 and eval_rows((10**9,)) == 1
    seen = []

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))

        def forward(self, x):
            seen.append(x.shape[0])
            return (x @ self.w).mean(1)

    X = torch.randn(300, 2048, 5, dtype=torch.float64)
    y = torch.sign(torch.randn(300, dtype=torch.float64))
    net = Net()
    got = evaluate(net, (X, y), "hinge")
    assert seen == [16] * 18 + [12]  # 32768 // 2048 = 16 rows a chunk
    whole = evaluate(net, (X, y), "hinge", batch_size=300)
    # error_rate is a float32 mean: equal to float32 rounding, far below one mistake (1/300)
    assert got["error"] == pytest.approx(whole["error"], abs=1e-6)
    assert got["loss"] == pytest.approx(whole["loss"], rel=1e-12)
