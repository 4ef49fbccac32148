"""Finding papers and experiments, and resolving configs.

`load_registry()` imports every paper package and returns the registry of experiments:
    - the built-in papers, `ssmlab.papers.<id>` for each id in `BUILTIN_PAPERS`;
    - every entry point of the group `ssmlab.papers` (name: the paper id, value: the package to
      import), which is how a paper outside this repository joins (docs/adding-a-paper.md);
    - the modules named in the environment variable SSMLAB_PLUGINS (comma-separated), for
      experiments added without packaging (the tests' tiny experiments use it).
Packages are imported by name, so the core never imports a paper statically. A paper package
that fails to import does not take the others down: its error is kept in `LOAD_ERRORS` and
reported by the CLI.

Config resolution (`resolve_config`) for `ssmlab run ID --profile P [--config FILE] [--set k=v]
[--seeds N]`: start from `Experiment.profiles[P]`, merge the file's mapping (recursively), apply
the --set overrides, put N into `seeds`, and validate strictly with `build_config`.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
import traceback
from pathlib import Path
from typing import Any

from ssmlab.config import apply_overrides, build_config, load_config_file
from ssmlab.errors import UserError
from ssmlab.experiment import BUILTIN_PAPERS, MAX_SEEDS, REGISTRY, Experiment, ExperimentConfig

PLUGINS_ENV = "SSMLAB_PLUGINS"
ENTRY_POINTS = "ssmlab.papers"
LOAD_ERRORS: dict[str, str] = {}


@functools.cache
def paper_packages() -> dict[str, str]:
    """Paper id -> package to import: the built-in papers, then the entry points (an entry
    point may not take a built-in id). Read once per process: scanning the installed
    distributions' entry points is the slow part of every registry call."""
    out = {p: f"ssmlab.papers.{p}" for p in BUILTIN_PAPERS}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINTS):
        out.setdefault(ep.name, ep.value)
    return out


def known_papers() -> list[str]:
    """Every paper id: built-in and entry-point papers, then papers that only plugins' experiments
    name; built-in ones first, in report order."""
    load_registry()
    extra = {cls.paper for cls in REGISTRY.values()} - set(paper_packages())
    return list(paper_packages()) + sorted(extra)


def load_registry() -> dict[str, type[Experiment]]:
    """Import every paper package and plugin module (once); return REGISTRY.

    A built-in paper package that fails to import is recorded in LOAD_ERRORS (the others still
    load); a plugin module named in SSMLAB_PLUGINS that cannot be imported is the user's input
    and a UserError."""
    for name in paper_packages().values():
        if name in LOAD_ERRORS:
            continue
        try:
            importlib.import_module(name)
        except Exception as e:  # a broken package must not hide the others
            LOAD_ERRORS[name] = f"{type(e).__name__}: {e}"
            LOAD_ERRORS[name + ":traceback"] = traceback.format_exc()
    for name in [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]:
        try:
            importlib.import_module(name)
        except Exception as e:
            raise UserError(f"{PLUGINS_ENV} names module {name!r}, which cannot be imported: "
                            f"{type(e).__name__}: {e}") from None
    return REGISTRY


def load_errors() -> dict[str, str]:
    """Import errors by module name (without tracebacks)."""
    return {k: v for k, v in LOAD_ERRORS.items() if not k.endswith(":traceback")}


def get_experiment(exp_id: str) -> type[Experiment]:
    reg = load_registry()
    if exp_id in reg:
        return reg[exp_id]
    paper = exp_id.split("/")[0]
    broken = [m for m in load_errors() if m == paper_packages().get(paper)]
    if broken:
        raise UserError(
            f"experiment {exp_id!r} unavailable: package {broken[0]} failed to import "
            f"({load_errors()[broken[0]]})"
        )
    known = ", ".join(sorted(reg)) or "none"
    raise UserError(f"unknown experiment {exp_id!r}; known experiments: {known}")


def experiments_of(papers: list[str] | None = None) -> dict[str, list[type[Experiment]]]:
    """Registered experiments grouped by paper (every paper present as a key, maybe empty)."""
    reg = load_registry()
    known = known_papers()
    papers = list(papers) if papers else known
    for p in papers:
        if p not in known:
            raise UserError(f"unknown paper {p!r}; papers: {', '.join(known)}")
    return {p: [reg[k] for k in sorted(reg) if reg[k].paper == p] for p in papers}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def resolve_config(
    cls: type[Experiment],
    profile: str = "quick",
    config_file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    seeds: int | None = None,
) -> ExperimentConfig:
    """profile <- config file <- --set overrides <- seeds, validated strictly.

    The profile is resolved into a full config first and the user's values are merged onto
    its every field, so an override changes exactly the field it names (merging onto the
    profile's sparse dict would reset the rest of a section to the sub-model's defaults).
    User values are validated in strict JSON mode: no `true` for 1, no 2.0 for an int, no
    strings for numbers; floats must be finite (StrictModel)."""
    if profile not in cls.profiles:
        raise UserError(
            f"unknown profile {profile!r} for {cls.id}; profiles: {', '.join(cls.profiles)}"
        )
    base = build_config(cls.Config, dict(cls.profiles[profile]))
    if config_file is None and not overrides and seeds is None:
        return base
    data: dict[str, Any] = base.model_dump(mode="json")
    if config_file is not None:
        data = _merge(data, load_config_file(config_file))
    data = apply_overrides(data, list(overrides))
    if seeds is not None:
        if not 1 <= seeds <= MAX_SEEDS:
            raise UserError(f"--seeds must be in 1..{MAX_SEEDS}, got {seeds}")
        data["seeds"] = seeds
    return build_config(cls.Config, data, strict_json=True)
