"""builtin/mixers end to end: config -> sweep -> store -> figure -> claim -> report, via the CLI;
plus the task's purity and the config's strictness."""

from __future__ import annotations

import pytest
import torch

from ssmlab.cli import main
from ssmlab.errors import UserError
from ssmlab.papers.builtin.data import selective_copying
from ssmlab.papers.builtin.experiments.mixers import Mixers
from ssmlab.papers.builtin.model import LastPositions
from ssmlab.runner.registry import resolve_config
from ssmlab.runner.store import Store
from ssmlab.runner.sweep import run_sweep

SMALL = ["--set", "train.max_steps=20", "--set", "n_train=128", "--set", "n_test=64",
         "--set", "train.eval_every=10", "--set", "d_model=8", "--seeds", "1"]


def cli(*args: str) -> int:
    with pytest.raises(SystemExit) as e:
        main(list(args))
    return e.value.code


def test_selective_copying_is_pure_and_well_formed():
    x, y = selective_copying(64, 12, 3, 5, seed=7)
    x2, y2 = selective_copying(64, 12, 3, 5, seed=7)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, selective_copying(64, 12, 3, 5, seed=8)[0])
    assert x.shape == (64, 15) and y.shape == (64, 3)
    assert (x[:, 12:] == 6).all()  # markers
    region = x[:, :12]
    assert ((region > 0).sum(1) == 3).all()  # exactly K data tokens, the rest blank
    assert torch.equal(region[region > 0].view(64, 3) - 1, y)  # labels: the tokens, in order


@pytest.mark.parametrize("mixer", ["s6", "s4d", "linear"])
def test_model_shapes(mixer):
    torch.manual_seed(0)
    kw = {"linear": {"feature_map": "elu+1", "normalize": True, "mode": "quadratic"}}.get(mixer, {})
    m = LastPositions(mixer, n_in=10, n_out_classes=8, d_model=8, n_layers=2, n_out=3,
                   mixer_kwargs=kw)
    out = m(torch.randint(0, 10, (4, 15)))
    assert out.shape == (4, 3, 8)


def test_config_is_strict():
    with pytest.raises(UserError, match="mixers.1.*Input should be .s6."):
        resolve_config(Mixers, overrides=["mixers=[s6, lstm]"])
    with pytest.raises(UserError, match="has no option"):
        resolve_config(Mixers, overrides=["mixer_options.s6.bogus=1"])
    with pytest.raises(UserError, match="n_tokens"):
        resolve_config(Mixers, overrides=["n_tokens=20"])


def test_end_to_end_through_the_cli(tmp_path, capsys):
    res = str(tmp_path)
    assert cli("run", "builtin/mixers", *SMALL, "-e", "serial", "-q", "--results", res) == 0
    out = capsys.readouterr().out
    assert "3 runs (0 reused, 3 ran; ok 3)" in out
    with Store.open(tmp_path) as st:
        runs = st.runs("builtin/mixers")
        [cfg] = st.configs("builtin/mixers")
        [claim] = st.claims("builtin/mixers", cfg.cfg_hash)
    assert sorted(r.params["mixer"] for r in runs) == ["linear", "s4d", "s6"]
    assert all(0 <= r.metrics["test_acc"] <= 1 and r.history["step"] for r in runs)
    # one seed: no interval over seeds, so the claim cannot settle
    assert claim.verdict == "INCONCLUSIVE" and claim.paper == "builtin"
    assert claim.id == "builtin/mixers:s6_beats_s4d"
    assert (tmp_path / cfg.figdir / "selective_copying.png").stat().st_size > 1000

    assert cli("report", "--results", res) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| builtin | builtin/mixers"))
    assert row.endswith(f"| {claim.verdict} |") and "Table 1" in row
    assert f"figures/builtin__mixers/{cfg.cfg_hash}/selective_copying.png" in md
    html = (tmp_path / "report" / "index.html").read_text()
    assert "selective_copying.png" in html and f"class='{claim.verdict}'" in html


@pytest.mark.slow
def test_quick_profile_reproduces_the_claim(tmp_path):
    """The real check: at the quick profile, S6 beats S4D by the margin (may honestly FAIL)."""
    r = run_sweep("builtin/mixers", profile="quick", results=tmp_path, executor="local")
    [claim] = r.claims
    assert claim.verdict == "PASS", claim.measured


def _runs(s6, s4d, status="ok"):
    from ssmlab.records import RunRecord

    out = []
    for seed, (a, b) in enumerate(zip(s6, s4d, strict=True)):
        out.append(RunRecord("builtin/mixers", "h", {"mixer": "s6"}, seed, status,
                             {"test_acc": a}, {}, {}))
        out.append(RunRecord("builtin/mixers", "h", {"mixer": "s4d"}, seed, "ok",
                             {"test_acc": b}, {}, {}))
    return out


def test_spec_verdicts_on_synthetic_runs(tmp_path):
    cfg = resolve_config(Mixers, profile="quick")
    exp = Mixers()
    [c] = exp.analyze(cfg, _runs([0.9, 0.85, 0.88], [0.5, 0.55, 0.45]), tmp_path)
    assert c.verdict == "PASS" and c.ci_low > cfg.margin
    # differences 0.1 ± 0.01: below the margin even with the t-widened 3-seed interval
    [c] = exp.analyze(cfg, _runs([0.6, 0.62, 0.61], [0.5, 0.51, 0.51]), tmp_path)
    assert c.verdict == "FAIL" and c.diagnosis_kind == "profile-too-small"
    [c] = exp.analyze(cfg, _runs([0.9, 0.5, 0.9], [0.5, 0.5, 0.5]), tmp_path)
    assert c.verdict == "INCONCLUSIVE" and c.seeds_needed
    # a diverged S6 run counts at its stored (chance) accuracy, it is not dropped
    [c] = exp.analyze(cfg, _runs([0.125, 0.125], [0.5, 0.5], status="diverged"), tmp_path)
    assert c.verdict == "FAIL" and c.value < 0
