"""Every number of every experiment's config has a range: huge, negative, non-finite and boolean
values given with `--set` are one-line UserErrors naming the field (issue: they were accepted and
ran, or tried to allocate hundreds of GiB). Each paper's tests add its cross-field cases."""

from __future__ import annotations

import pytest
from configkit import numeric_leaves, rejected

from ssmlab.runner.registry import load_registry, resolve_config

REG = load_registry()
EXPERIMENTS = sorted(k for k in REG if not k.startswith("builtin/test_"))
HUGE = "1" + "0" * 40  # above every bound, the largest being loss thresholds (1e38)
BAD = (HUGE, "-" + HUGE, ".nan", ".inf", "-.inf", "true")


@pytest.mark.parametrize("exp_id", EXPERIMENTS)
def test_every_number_rejects_out_of_range_and_non_finite(exp_id):
    cls = REG[exp_id]
    found = numeric_leaves(cls)
    assert len(found) >= 5, found  # the walk found the config's numbers
    for path, is_list in found:
        for bad in BAD:
            msg = rejected(cls, f"{path}={f'[{bad}]' if is_list else bad}")
            where = f"{path}.0" if is_list else path
            assert f"'{where}'" in msg, (path, bad, msg)


@pytest.mark.parametrize("exp_id", EXPERIMENTS)
def test_every_profile_resolves(exp_id):
    for profile in REG[exp_id].profiles:
        cfg = resolve_config(REG[exp_id], profile)
        assert resolve_config(REG[exp_id], profile, overrides=[]) == cfg
