"""Cross-check MambaBlock against an implementation nobody here wrote: mambapy's MambaBlock
(pure PyTorch, follows mamba_ssm's mamba_simple.py). Parameter names are identical, so weights
copy across with load_state_dict.

mambapy computes A = -exp(A_log.float()) and D.float() in float32 (as mamba_ssm does). To compare
in float64 at tight tolerance, the perturbed-weights test gives mambapy float32-exact A_log / D
values and gives our block A_log = log(exp_f32(A_log)) so that both use the same A (without
this the outputs differ by ~1e-12 at default init and ~1e-7 with perturbed A_log: mambapy's
float32 exp, not a disagreement in the block).
"""

from __future__ import annotations

import pytest
import torch
from layers_cases import randn

from ssmlab.layers.s6 import MambaBlock

mambapy_mamba = pytest.importorskip("mambapy.mamba")


def _pair(seed: int = 0, d_model: int = 8, d_state: int = 4, d_conv: int = 4, expand: int = 2,
          bias: bool = False):
    torch.manual_seed(seed)
    ours = MambaBlock(d_model, d_state=d_state, d_conv=d_conv, expand=expand, bias=bias)
    torch.manual_seed(seed)
    cfg = mambapy_mamba.MambaConfig(d_model=d_model, n_layers=1, d_state=d_state, d_conv=d_conv,
                                    expand_factor=expand, bias=bias)
    theirs = mambapy_mamba.MambaBlock(cfg)
    return ours, theirs


def _same_A(ours: MambaBlock, theirs) -> None:
    """Give our float64 block the A that mambapy computes in float32 from its A_log."""
    with torch.no_grad():
        ours.A_log.copy_(torch.log(torch.exp(theirs.A_log.float()).double()))


def test_same_seed_gives_identical_initialisation():
    """Creation order and init formulas equal mamba_ssm's (which mambapy reproduces)."""
    ours, theirs = _pair(seed=11, d_model=24, d_state=5)
    theirs_params = dict(theirs.named_parameters())
    assert set(theirs_params) == {n for n, _ in ours.named_parameters()}
    for name, p in ours.named_parameters():
        assert p.shape == theirs_params[name].shape, name
        assert torch.equal(p, theirs_params[name]), name


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_default_init_output_matches(backend):
    ours, theirs = _pair(seed=1)
    ours.double().backend = backend
    theirs.double()
    theirs.load_state_dict(ours.state_dict())
    _same_A(ours, theirs)
    x = randn(2, 13, 8)  # length not a power of two: exercises mambapy's padding
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_perturbed_weights_outputs_and_gradients_match(bias):
    ours, theirs = _pair(seed=2, bias=bias)
    ours.double()
    theirs.double()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in ours.named_parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
            if name in ("A_log", "D"):
                p.copy_(p.float().double())  # float32-exact: mambapy casts these to float32
        theirs.load_state_dict(ours.state_dict())
    _same_A(ours, theirs)
    x = randn(2, 16, 8, seed=9)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = ours(x1), theirs(x2)
    torch.testing.assert_close(y1, y2, rtol=1e-11, atol=1e-12)
    w = randn(*y1.shape, seed=10)
    (y1 * w).sum().backward()
    (y2 * w).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-10, atol=1e-12)
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        # mambapy's A_log and D gradients pass through its float32 cast
        tol = dict(rtol=1e-5, atol=1e-6) if name in ("A_log", "D") else dict(rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(p.grad, theirs_params[name].grad, **tol, msg=name)
