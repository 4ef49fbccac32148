"""Helpers for the config tests: walk a resolved config's leaves, find a leaf's annotation, and
check that an override is refused with one line."""

from __future__ import annotations

import types
import typing
from typing import Any, Union

import pytest
from pydantic import BaseModel

from ssmlab.errors import UserError
from ssmlab.runner.registry import resolve_config


def leaves(d: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a config dump to dotted paths; lists are leaves (one --set replaces a list)."""
    if isinstance(d, dict) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(leaves(v, f"{prefix}.{k}" if prefix else k))
        return out
    return {prefix: d}


def strip(tp: Any) -> Any:
    """Annotated[X, ...] -> X; X | None -> X (the first non-None member)."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        else:
            return tp


def annotation_at(model: type[BaseModel], path: str) -> Any:
    """The annotation of a dotted leaf path; Any inside a free-form dict (e.g. mixer options)."""
    tp: Any = model
    for part in path.split("."):
        tp = strip(tp)
        if not (isinstance(tp, type) and issubclass(tp, BaseModel)):
            return Any
        tp = tp.model_fields[part].annotation
    return tp


def numeric_leaves(cls) -> list[tuple[str, bool]]:
    """(dotted path, is a list of numbers) for every number of the quick config a user can set
    (free-form dict entries, whose annotation is Any, are checked by their owners)."""
    out = []
    for path, value in leaves(resolve_config(cls, "quick").model_dump(mode="json")).items():
        tp = strip(annotation_at(cls.Config, path))
        if tp is Any:
            continue
        if isinstance(value, list) and value and all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            out.append((path, True))
        elif (isinstance(value, int | float) and not isinstance(value, bool)) or (
                value is None and tp in (int, float)):
            out.append((path, False))
    return out


def rejected(cls, *overrides: str) -> str:
    """The one-line message of the UserError that these overrides must raise."""
    with pytest.raises(UserError) as err:
        resolve_config(cls, "quick", overrides=list(overrides))
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg
