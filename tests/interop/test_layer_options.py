"""The two Mamba2 options added for real checkpoints: the gated RMSNorm per group
(norm_per_group) and its epsilon (norm_eps). Defaults keep the old behaviour."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssmlab.errors import UserError
from ssmlab.layers.mamba2 import Mamba2
from ssmlab.layers.norms import GatedRMSNorm


def test_gated_norm_per_group_normalises_each_group_on_its_own():
    g = torch.Generator().manual_seed(0)
    x, z = (torch.randn(2, 5, 12, generator=g, dtype=torch.float64) for _ in range(2))
    norm = GatedRMSNorm(12, eps=1e-5, group_size=4).double()
    with torch.no_grad():
        norm.weight.copy_(torch.randn(12, generator=g, dtype=torch.float64))
    y = (x * F.silu(z)).reshape(2, 5, 3, 4)
    want = (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-5)).reshape(2, 5, 12) * norm.weight
    torch.testing.assert_close(norm(x, z), want, rtol=1e-14, atol=1e-14)
    whole = GatedRMSNorm(12, eps=1e-5).double()
    whole.weight.data.copy_(norm.weight)
    assert not torch.allclose(whole(x, z), want)  # differs from the whole-width norm
    same = GatedRMSNorm(12, eps=1e-5, group_size=12).double()
    same.weight.data.copy_(norm.weight)
    torch.testing.assert_close(same(x, z), whole(x, z), rtol=0, atol=0)
    with pytest.raises(ValueError, match="must divide"):
        GatedRMSNorm(12, group_size=5)


def test_mamba2_norm_options_default_to_the_old_behaviour():
    torch.manual_seed(0)
    old = Mamba2(d_model=8, d_state=4, headdim=4, ngroups=2)
    torch.manual_seed(0)
    new = Mamba2(d_model=8, d_state=4, headdim=4, ngroups=2, norm_per_group=True, norm_eps=1e-3)
    assert old.norm.group_size is None and old.norm.eps == 1e-5
    assert new.norm.group_size == 8 and new.norm.eps == 1e-3
    x = torch.randn(1, 6, 8)
    with torch.no_grad():
        assert not torch.allclose(old(x), new(x))  # the options change the output
    assert old.state_dict().keys() == new.state_dict().keys()
    with pytest.raises(UserError, match="norm_eps"):
        Mamba2(d_model=8, headdim=4, norm_eps=0.0)
