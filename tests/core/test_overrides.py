"""An override changes exactly the field it names (issue: a nested override used to reset the
rest of its section to the sub-model's defaults, silently changing optimiser, loss and sizes).

For every registered experiment and every leaf of its resolved quick config, one `--set` to a
different valid value must give a config that differs from the profile's in that leaf only."""

from __future__ import annotations

import json
import typing
from typing import Any, Literal

import pytest
from configkit import annotation_at, leaves, strip

from ssmlab.errors import UserError
from ssmlab.runner.registry import load_registry, resolve_config

REG = load_registry()
EXPERIMENTS = sorted(k for k in REG if not k.startswith("builtin/test_"))


def candidates(value: Any, tp: Any) -> list[Any]:
    """Other plausible values for a leaf, nearest first."""
    return [c for c in _candidates(value, strip(tp)) if c != value]


def _candidates(value: Any, tp: Any) -> list[Any]:
    if typing.get_origin(tp) is Literal:
        return [a for a in typing.get_args(tp) if a != value]
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value - 1, value * 2, max(1, value // 2), 1, 0]
    if isinstance(value, float):
        return [value * 1.5, value / 2, value + 0.1, value - 0.1, 0.5, 0.0, 1.0]
    if isinstance(value, list) and value:
        return [value[:-1], value[::-1], value + value[-1:]]
    if value is None and tp in (int, float):
        return [tp(1), tp(2), tp(10)]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if value is None and origin in (tuple, list) and args:
        return [[_example(args[0])], [_example(args[0]), _example(args[0]) + 1]]
    if value == {} and origin is dict and len(args) == 2:
        keys = typing.get_args(strip(args[0])) if typing.get_origin(strip(args[0])) is Literal \
            else ("x",)
        example = _example(args[1])
        return [{k: example} for k in keys] if example is not None else []
    if isinstance(value, str):
        return [value + "x"]
    return []


def _example(tp: Any) -> Any:
    tp = strip(tp)
    return {int: 1, float: 0.1, bool: True, str: "x"}.get(tp)


@pytest.mark.parametrize("exp_id", EXPERIMENTS)
def test_one_override_changes_exactly_one_field(exp_id):
    cls = REG[exp_id]
    base = leaves(resolve_config(cls, "quick").model_dump(mode="json"))
    tested, fixed, untestable = [], [], []
    for path, value in base.items():
        cands = candidates(value, annotation_at(cls.Config, path))
        refusals = []
        for cand in cands:
            try:
                cfg = resolve_config(cls, "quick", overrides=[f"{path}={json.dumps(cand)}"])
            except UserError as e:
                refusals.append(str(e))
                continue  # out of range or inconsistent with another field: try the next one
            got = leaves(cfg.model_dump(mode="json"))
            changed = sorted(p for p in base if got.get(p) != base[p])
            assert changed == [path], f"--set {path}={cand!r} changed {changed}"
            tested.append(path)
            break
        else:
            # a leaf the experiment pins (e.g. n_layers=1 for a one-layer theory) refuses every
            # other value with a message naming it; anything else counts against coverage
            pinned = cands and all(path in r for r in refusals)
            (fixed if pinned else untestable).append(path)
    # most leaves must have been exercised, or the test proves nothing
    assert len(tested) >= 0.9 * (len(base) - len(fixed)), f"untested leaves: {untestable}"


def test_nested_override_keeps_the_profile_section():
    """The examples the issue names, checked directly."""
    fm = REG["filtering/scan_orders_fmnist"]
    q = resolve_config(fm, "paper")
    c = resolve_config(fm, "paper", overrides=["train_cfg.epochs=6"])
    assert c.train_cfg.epochs == 6
    assert c.train_cfg.model_copy(update={"epochs": q.train_cfg.epochs}) == q.train_cfg
    al = REG["filtering/alignment"]
    a0 = resolve_config(al, "quick")
    a1 = resolve_config(al, "quick", overrides=["data.L=16"])
    assert (a1.data.L, a1.data.alpha_r) == (16, a0.data.alpha_r)


def test_config_file_merges_onto_the_resolved_profile(tmp_path):
    fm = REG["filtering/scan_orders_fmnist"]
    f = tmp_path / "c.yaml"
    f.write_text("train_cfg:\n  epochs: 7\n")
    q = resolve_config(fm, "paper")
    c = resolve_config(fm, "paper", config_file=f)
    assert c.train_cfg == q.train_cfg.model_copy(update={"epochs": 7})


@pytest.mark.parametrize("text, value", [("1e-3", 0.001), ("1e4", 10000), ("2.5e2", 250.0),
                                         ("[1, 2]", [1, 2]), ("adam", "adam")])
def test_override_values_parse_as_numbers(text, value):
    from ssmlab.config import _parse_value

    assert _parse_value(text) == value and type(_parse_value(text)) is type(value)
