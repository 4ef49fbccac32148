"""Strict, hashable configs.

Every config is a pydantic model with `extra="forbid"`: an unknown key is an error that names the
key and the allowed ones (DESIGN: configs that silently drop keys are a known failure of other
codebases). `config_hash` is a stable content hash of the canonical JSON, which keys results.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from ssmlab.errors import UserError


class StrictModel(BaseModel):
    """Base for every config: unknown keys rejected, floats finite, validated on assignment,
    frozen."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True,
                              allow_inf_nan=False)


def canonical_json(obj: Any) -> str:
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(obj: Any, length: int = 12) -> str:
    """Stable content hash (sha256 of canonical JSON, first `length` hex digits)."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _parse_value(text: str) -> Any:
    """`--set a.b=VALUE`: VALUE is parsed as YAML (numbers, bools, lists), else kept a string.

    YAML 1.1 reads `1e-3` (no dot) as a string; it is a number here, since configs validate
    strictly and a learning rate written that way must not be refused as "not a number";
    without a dot and integral (`1e4`) it is an int, so that it can fill a size."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        number = float(value)  # `1e4` is the int 10000 (an int also fills a float field)
        return int(number) if "." not in value and number.is_integer() else number
    return value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key.sub=value` strings to a nested dict (a copy); keys are checked later by pydantic."""
    out = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise UserError(f"override {key!r}: {p!r} is not a section")
            node = nxt
        node[parts[-1]] = _parse_value(value)
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file not found: {p}" if not p.exists()
                        else f"config file {p} is not a regular file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"config file {p} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise UserError(f"config file {p} cannot be read: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as e:
        raise UserError(f"config file {p} is not valid YAML/JSON: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {p} must hold a mapping at the top level")
    return data


def format_validation_error(err: ValidationError, model: type[BaseModel]) -> str:
    """One line naming the first problem; for unknown keys, list the allowed ones."""
    e = err.errors()[0]
    loc = ".".join(str(x) for x in e["loc"])
    if e["type"] == "extra_forbidden":
        node: Any = model
        for part in e["loc"][:-1]:
            field = getattr(node, "model_fields", {}).get(part)
            ann = getattr(field, "annotation", None)
            node = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        allowed = sorted(getattr(node, "model_fields", {}) or [])
        return f"unknown config key {loc!r}; allowed keys: {', '.join(allowed)}"
    msg = e["msg"].removeprefix("Value error, ")
    if not loc:  # a check across fields (model validator): its message names the fields
        return f"invalid config: {msg}"
    return f"invalid config value for {loc!r}: {msg}"


M = TypeVar("M", bound=BaseModel)


def build_config(model: type[M], data: dict[str, Any], strict_json: bool = False) -> M:
    """Validate `data` into `model`, turning validation errors into one-line UserErrors.

    `strict_json`: validate the data as JSON in pydantic's strict mode (what user input gets):
    types must match exactly, except that JSON arrays fill tuples and ints fill floats."""
    try:
        if strict_json:
            try:
                text = json.dumps(data, allow_nan=True)
            except (TypeError, ValueError) as e:
                raise UserError(f"config values must be JSON data: {e}") from None
            return model.model_validate_json(text, strict=True)
        return model.model_validate(data)
    except ValidationError as err:
        raise UserError(format_validation_error(err, model)) from None


def each_once(values: Sequence[Any]) -> Sequence[Any]:
    """A grid lists each value once: a repeated value would plan the same cells twice."""
    seen: list[Any] = []
    for v in values:
        if v in seen:
            raise ValueError(f"{v!r} is listed twice; a grid lists each value once")
        seen.append(v)
    return values


Distinct = AfterValidator(each_once)  # Annotated[tuple[X, ...], Distinct]: a duplicate-free grid

