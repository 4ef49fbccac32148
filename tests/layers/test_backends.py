"""Every backend of the op a mixer runs on gives the reference's outputs and gradients (float64),
through the whole mixer. Backends are discovered from ssmlab.ops.<op>.BACKENDS."""

from __future__ import annotations

import importlib

import pytest
import torch
from layers_cases import D_MODEL, make_mixer, randn

# case name -> (op module, extra constructor options)
SCAN_CASES = {
    "s6": ("selective_scan", {}),
    "mamba": ("selective_scan", {}),
    "s4d-recurrent": ("linear_recurrence", {}),
    "mamba_dt": ("delta_t_scan", {}),
    "mamba_dt-delta": ("delta_t_scan", {}),
    "linear": ("linear_recurrence", {}),
    "linear-elu-norm": ("linear_recurrence", {}),
    "mamba2": ("ssd", {"chunk_size": 4}),
    "mamba2-groups-nonorm": ("ssd", {"chunk_size": 3}),
    "retnet": ("gated_linear", {"chunk_size": 4}),
    "retnet-norotary-rms-nogate-chunk4": ("gated_linear", {"chunk_size": 3}),
    "gla": ("gated_linear", {"chunk_size": 4}),
    "gla-nonorm-chunk4": ("gated_linear", {"chunk_size": 3}),
}


def _backends(op: str) -> list[str]:
    try:
        mod = importlib.import_module(f"ssmlab.ops.{op}")
    except ImportError:
        return []
    return [b for b in getattr(mod, "BACKENDS", ()) if b != "reference"]


PAIRS = [(case, b) for case, (op, _) in SCAN_CASES.items() for b in _backends(op)]


@pytest.mark.skipif(not PAIRS, reason="no fast ops in ssmlab.ops yet")
@pytest.mark.parametrize("case,backend", PAIRS, ids=[f"{c}-{b}" for c, b in PAIRS])
def test_backend_matches_reference(case, backend):
    extra = SCAN_CASES[case][1]
    ref = make_mixer(case, backend="reference", **extra)
    fast = make_mixer(case, backend=backend, **extra)
    fast.load_state_dict(ref.state_dict())
    x = randn(2, 11, D_MODEL)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = ref(x1), fast(x2)
    torch.testing.assert_close(y2, y1, rtol=1e-10, atol=1e-12)
    w = randn(*y1.shape, seed=2)
    (y1 * w).sum().backward()
    (y2 * w).sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-9, atol=1e-11)
    fast_params = dict(fast.named_parameters())
    for name, p in ref.named_parameters():
        torch.testing.assert_close(fast_params[name].grad, p.grad, rtol=1e-9, atol=1e-11,
                                   msg=name)


def test_unknown_backend_is_rejected():
    from ssmlab.errors import UserError

    m = make_mixer("s6", backend="no-such-backend")
    with pytest.raises(UserError, match="no-such-backend"):
        m(randn(1, 3, D_MODEL))
