"""TrainConfig's ranges (issue 10, defect 2): every number bounded on both sides, the callers'
sentinels still valid, and every experiment that exposes a TrainConfig (train_cfg, stack_train,
train) turns a bad value into a one-line UserError naming the field."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from ssmlab.config import build_config
from ssmlab.errors import UserError
from ssmlab.runner.registry import load_registry, resolve_config
from ssmlab.train.trainer import MAX_STEPS, TrainConfig

BAD = [
    ("lr", 0), ("lr", -1.0), ("lr", 1e7), ("momentum", 1.0), ("weight_decay", -0.1),
    ("weight_decay", 1e4), ("batch_size", 0), ("batch_size", 2**30), ("epochs", -1),
    ("epochs", MAX_STEPS + 1), ("max_steps", -1), ("max_steps", 10**12), ("grad_clip", 0),
    ("grad_clip", 1e9), ("plateau_factor", 1.0), ("plateau_patience", -1),
    ("plateau_patience", 10**9), ("plateau_threshold", -0.1), ("plateau_threshold", 2.0),
    ("eval_every", 0), ("eval_every", 10**12), ("probe_every", 0), ("converge_error", 1.5),
    ("converge_loss", -1.0), ("diverge_loss", 0), ("diverge_loss", 1e300),
    ("frozen", ("w",) * 1000), ("lr", float("nan")), ("lr", float("inf")), ("epochs", True),
]


@pytest.mark.parametrize("field, value", BAD, ids=[f"{f}={v!r}"[:40] for f, v in BAD])
def test_out_of_range_values_are_rejected(field, value):
    """Rejected in Python (strict: no True for 1) and as user JSON, naming the field."""
    data = {"optimizer": "adam", field: value}
    with pytest.raises(ValidationError):
        TrainConfig.model_validate(data, strict=True)
    with pytest.raises(UserError, match=field):
        build_config(TrainConfig, data, strict_json=True)


def test_the_callers_sentinels_stay_valid():
    """Values callers pass today (the bounds must admit them: they key stored results)."""
    TrainConfig(optimizer="adam", epochs=10**6, max_steps=20000, eval_every=10**6,
                probe_every=10**6, batch_size=64)
    TrainConfig(loss="mse", lr=1e6, epochs=1)  # the trainer's deliberate divergence
    TrainConfig(diverge_loss=1e30, converge_error=0.0, converge_loss=0.0, epochs=0,
                max_steps=0, plateau_patience=0, plateau_threshold=0.0)


REG = load_registry()
WITH_TRAIN = sorted(
    (exp_id, name) for exp_id, cls in REG.items() if not exp_id.startswith("builtin/test_")
    for name, f in cls.Config.model_fields.items()
    if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)
    and issubclass(f.annotation, TrainConfig))


def test_experiments_with_a_train_config_are_found():
    names = {n for _, n in WITH_TRAIN}
    assert {"builtin/mixers", "filtering/lucky"} <= {e for e, _ in WITH_TRAIN}
    assert names <= {"train", "train_cfg", "stack_train"} and names


@pytest.mark.parametrize("exp_id, section", WITH_TRAIN)
@pytest.mark.parametrize("key, value", [("lr", "0"), ("lr", ".nan"), ("epochs", "-1"),
                                        ("eval_every", "0"), ("batch_size", "true"),
                                        ("max_steps", "1000000000000")])
def test_every_experiment_train_config_is_bounded(exp_id, section, key, value):
    with pytest.raises(UserError) as e:
        resolve_config(REG[exp_id], "quick", overrides=[f"{section}.{key}={value}"])
    assert f"{section}.{key}" in str(e.value)
