"""Every number a user can set has a range, and every experiment estimates its memory.

Walks each registered experiment's config model (sub-models, lists, tuples and optionals
included): an int or float field without both a lower bound (ge / gt) and an upper bound
(le / lt) is reported, as is a list or tuple without max_length (unbounded sweeps). Sizes that
are legal but too large for the machine are the memory estimate's job, checked below."""

from __future__ import annotations

import types
import typing
from typing import Any, Union

import annotated_types as at
import pytest
from pydantic import BaseModel

from ssmlab.runner.registry import load_registry, resolve_config

REG = load_registry()
BUILTIN = sorted(k for k in REG if not k.startswith("builtin/test_"))


def _bounds(metadata: list[Any]) -> tuple[bool, bool, bool]:
    lo = any(isinstance(m, at.Ge | at.Gt) for m in metadata)
    hi = any(isinstance(m, at.Le | at.Lt) for m in metadata)
    maxlen = any(isinstance(m, at.MaxLen) for m in metadata)
    return lo, hi, maxlen


def _walk(tp: Any, metadata: list[Any], path: str, out: list[str], seen: set) -> None:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base, *meta = typing.get_args(tp)
        return _walk(base, metadata + list(meta), path, out, seen)
    if origin in (Union, types.UnionType):
        for a in typing.get_args(tp):
            if a is not type(None):
                _walk(a, metadata, path, out, seen)
        return
    if origin in (list, tuple, set, frozenset):
        if not _bounds(metadata)[2]:
            out.append(f"{path}: sequence without max_length")
        for a in typing.get_args(tp):
            if a is not Ellipsis:
                _walk(a, [], path + "[]", out, seen)
        return
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        if tp in seen:
            return
        seen.add(tp)
        for name, f in tp.model_fields.items():
            _walk(f.annotation, list(f.metadata), f"{path}.{name}" if path else name, out, seen)
        return
    if tp in (int, float):
        lo, hi, _ = _bounds(metadata)
        if not (lo and hi):
            out.append(f"{path}: {tp.__name__} without {'lower' if not lo else 'upper'} bound")


@pytest.mark.parametrize("exp_id", BUILTIN)
def test_every_number_has_a_range(exp_id):
    problems: list[str] = []
    _walk(REG[exp_id].Config, [], "", problems, set())
    assert not problems, f"{exp_id}: " + "; ".join(problems)


@pytest.mark.parametrize("exp_id", BUILTIN)
def test_every_experiment_estimates_its_memory(exp_id):
    cls = REG[exp_id]
    for profile in cls.profiles:
        est = cls().memory_bytes(resolve_config(cls, profile))
        assert isinstance(est, int) and est > 0, (profile, est)
        assert est < 16 * 2**30, f"{profile} profile estimated at {est / 2**30:.1f} GiB per run"
