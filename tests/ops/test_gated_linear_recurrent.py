"""The recurrent path of ssmlab.ops.gated_linear (every state entry as a scalar recurrence on
linear_recurrence's fused kernel): outputs, final state and the gradients of every input equal
the reference loop's, for scalar and per-key-channel decays, with and without h0; and what
"auto" picks."""

from __future__ import annotations

import pytest
import torch
from layers_cases import gated_linear_inputs, weighted_loss

from ssmlab.ops.errors import OpsInputError
from ssmlab.ops.gated_linear import (
    RECURRENT_MAX_L,
    auto_backend,
    gated_linear_attention,
    gated_linear_recurrent,
    gated_linear_ref,
)

CASES = [(1, 1, 1, 2, 3), (2, 3, 37, 4, 5), (2, 2, 13, 3, 2), (1, 2, 70, 1, 4)]


@pytest.mark.parametrize("with_h0", [True, False])
@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("dims", CASES, ids=[f"B{d[0]}H{d[1]}L{d[2]}K{d[3]}V{d[4]}" for d in CASES])
def test_recurrent_equals_reference_with_gradients(dims, per_channel, with_h0):
    kw = gated_linear_inputs(*dims, per_channel=per_channel, with_h0=with_h0)
    ts = [t for t in kw.values() if t is not None]
    yr, hr = gated_linear_ref(**kw, scale=0.7, return_last_state=True)
    yc, hc = gated_linear_recurrent(**kw, scale=0.7, return_last_state=True)
    torch.testing.assert_close(yc, yr, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(hc, hr, rtol=1e-10, atol=1e-12)
    gr = torch.autograd.grad(weighted_loss(yr, hr), ts)
    gc = torch.autograd.grad(weighted_loss(yc, hc), ts)
    for a, b in zip(gc, gr, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_recurrent_float32_and_empty_sequence():
    kw = gated_linear_inputs(2, 2, 21, 4, 8, per_channel=True, dtype=torch.float32, seed=3)
    yr = gated_linear_ref(**kw)
    yc = gated_linear_recurrent(**kw)
    torch.testing.assert_close(yc, yr, rtol=1e-4, atol=1e-4)
    kw = gated_linear_inputs(2, 2, 0, 3, 4, per_channel=True)
    y, h = gated_linear_recurrent(**kw, return_last_state=True)
    assert y.shape == (2, 2, 0, 4)
    torch.testing.assert_close(h, kw["h0"])


def test_auto_takes_recurrent_only_for_short_per_channel_decays():
    q = torch.zeros(1, 1, RECURRENT_MAX_L, 2)
    assert auto_backend(q, torch.zeros(1, 1, RECURRENT_MAX_L, 2)) == "recurrent"
    assert auto_backend(q, torch.zeros(1, 1, RECURRENT_MAX_L)) == "chunked"  # scalar decay
    long = torch.zeros(1, 1, RECURRENT_MAX_L + 1, 2)
    assert auto_backend(long, torch.zeros(1, 1, RECURRENT_MAX_L + 1, 2)) == "chunked"
    kw = gated_linear_inputs(1, 2, 9, 3, 2, per_channel=True)
    for backend in ("auto", "recurrent", "chunked"):
        torch.testing.assert_close(gated_linear_attention(**kw, backend=backend),
                                   gated_linear_ref(**kw), rtol=1e-10, atol=1e-12)


def test_recurrent_refuses_non_cpu_tensors():
    kw = gated_linear_inputs(1, 1, 3, 2, 2, per_channel=True, with_h0=False)
    meta = {k: v.detach().to("meta") for k, v in kw.items() if v is not None}
    with pytest.raises(OpsInputError, match="CPU kernel"):
        gated_linear_attention(**meta, backend="recurrent")
