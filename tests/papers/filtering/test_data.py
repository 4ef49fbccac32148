"""Data invariants of the filtering tasks: labels, counts, distances, orthonormality, purity."""

from __future__ import annotations

import pytest
import torch

from ssmlab.config import build_config
from ssmlab.data.scan_orders import row_major
from ssmlab.errors import UserError
from ssmlab.papers.filtering.data import MINUS, PLUS, LocalityConfig, MajorityConfig, pair_distance
from ssmlab.papers.filtering.locality2d import LocalityGridConfig, pair_distances


def test_basis_is_orthonormal_and_shared_by_splits():
    cfg = MajorityConfig(L=12, d=16)
    tr, te = cfg.sample(20, 3, "train"), cfg.sample(20, 3, "test")
    B = tr.basis.double()
    torch.testing.assert_close(B @ B.T, torch.eye(16, dtype=torch.float64), atol=1e-6, rtol=0)
    assert torch.equal(tr.basis, te.basis)
    assert not torch.equal(tr.basis, cfg.sample(2, 4, "train").basis)


def test_purity_and_disjoint_splits():
    cfg = LocalityConfig(L=12, d=16, delta_close=2, delta_far=7)
    a, b = cfg.sample(30, 5, "train"), cfg.sample(30, 5, "train")
    assert torch.equal(a.X, b.X) and torch.equal(a.y, b.y) and torch.equal(a.features, b.features)
    c = cfg.sample(30, 5, "test")
    assert not torch.equal(a.features, c.features)


@pytest.mark.parametrize("counts", ["exact", "multinomial"])
def test_majority_label_invariant(counts):
    cfg = MajorityConfig(L=16, d=32, alpha_r=0.4, alpha_c=0.3, counts=counts, tau=0.0)
    s = cfg.sample(200, 0, "train")
    n_plus = (s.features == PLUS).sum(1)
    n_minus = (s.features == MINUS).sum(1)
    pos, neg = s.y > 0, s.y < 0
    assert bool((n_plus[pos] > n_minus[pos]).all())  # every positive holds more o_+ than o_-
    assert bool((n_minus[neg] > n_plus[neg]).all())
    assert int(pos.sum()) == 100  # balanced labels
    if counts == "exact":
        assert set(n_plus[pos].tolist()) == {cfg.n_relevant}
        assert set(n_minus[pos].tolist()) == {cfg.n_confusing}
    torch.testing.assert_close(s.meta["n_plus"], n_plus)
    # without noise every token is exactly its basis vector
    torch.testing.assert_close(s.X, s.basis[s.features])


def test_majority_noise_level():
    cfg = MajorityConfig(L=16, d=32, tau=0.1)
    s = cfg.sample(200, 0, "train")
    noise = s.X - s.basis[s.features]
    assert abs(float(noise.norm(dim=-1).mean()) - 0.1) < 0.01  # 'total': ‖ξ‖ ≈ τ
    s2 = MajorityConfig(L=16, d=32, tau=0.1, noise="per_coord").sample(200, 0, "train")
    assert abs(float((s2.X - s2.basis[s2.features]).std()) - 0.1) < 0.01


def test_locality_label_follows_concentration_rule():
    cfg = LocalityConfig(L=14, d=32, delta_close=2, delta_far=9, tau=0.0)
    s = cfg.sample(300, 1, "train")
    assert bool(((s.features == PLUS).sum(1) == 2).all())
    assert bool(((s.features == MINUS).sum(1) == 2).all())
    dp, dm = pair_distance(s.features, PLUS), pair_distance(s.features, MINUS)
    label = torch.where(dp < dm, 1.0, -1.0)  # the locally concentrated feature
    assert torch.equal(label, s.y)
    assert set(torch.minimum(dp, dm).tolist()) == {2} and set(torch.maximum(dp, dm).tolist()) == {9}
    torch.testing.assert_close(s.meta["dist_plus"], dp)
    assert cfg.gap == pytest.approx(0.25 - 2**-9)


def test_invalid_configs_are_user_errors():
    with pytest.raises(UserError, match="alpha_r"):
        build_config(MajorityConfig, {"L": 10, "alpha_r": 0.2, "alpha_c": 0.2})
    with pytest.raises(UserError, match="delta_close"):
        build_config(LocalityConfig, {"delta_close": 5, "delta_far": 3})
    with pytest.raises(UserError, match="unknown config key"):
        build_config(LocalityConfig, {"dL": 3})


def test_grid_locality_images():
    cfg = LocalityGridConfig(H=6, W=6, d=16, far_min=4, tau=0.0)
    s = cfg.sample(100, 0, "train")
    close, far = pair_distances(s.meta, row_major(6, 6))
    W = 6
    for i in range(100):
        a, b = int(s.meta["close_a"][i]), int(s.meta["close_b"][i])
        (ra, ca), (rb, cb) = divmod(a, W), divmod(b, W)
        assert abs(ra - rb) + abs(ca - cb) == 1  # 2-D neighbours
        f1, f2 = int(s.meta["far_a"][i]), int(s.meta["far_b"][i])
        (r1, c1), (r2, c2) = divmod(f1, W), divmod(f2, W)
        assert abs(r1 - r2) + abs(c1 - c2) >= 4
        own = PLUS if s.y[i] > 0 else MINUS
        assert int(s.features[i, a]) == own and int(s.features[i, b]) == own
    assert set(close.tolist()) <= {1, 6}  # row-major: horizontal 1, vertical W
