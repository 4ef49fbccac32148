"""Any experiment on any mixer (issue 13): every filtering experiment whose model is a stack of
mixers takes its mixer from the config (a Literal of ssmlab.layers.registry), runs with each
registered mixer at a tiny size, and names a non-paper mixer in `variant`; a non-paper mixer
has its own config hash."""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path
from typing import get_args

import numpy as np
import pytest

from ssmlab.config import config_hash
from ssmlab.data import fashion_mnist as fm
from ssmlab.errors import UserError
from ssmlab.layers.registry import MIXERS, MixerName
from ssmlab.papers.filtering.experiments.lucky import Lucky
from ssmlab.papers.filtering.experiments.scan_orders import FashionScan, ScanOrders
from ssmlab.runner.registry import resolve_config

ALL_MIXERS = sorted(MIXERS)
TINY_ADAM = "{optimizer: adam, lr: 0.003, loss: hinge, epochs: 1, batch_size: 8}"


def test_the_registry_is_the_choice():
    assert set(get_args(MixerName)) == set(MIXERS)


def write_fashion(root: Path) -> None:
    """A tiny valid Fashion-MNIST (IDX, gzip): balanced labels, random pixels."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 20)):
        for kind, arr in (("images", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
                          ("labels", (np.arange(n) % 10).astype(np.uint8))):
            head = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
            (root / (fm.FILES[split, kind] + ".gz")).write_bytes(
                gzip.compress(head + arr.tobytes()))


def tiny(exp_cls, mixer: str, root: Path):
    """(experiment, config, cell params) of a run of a few seconds with `mixer`."""
    if exp_cls is Lucky:
        sets = [f"stack.mixer={mixer}", "stack.depth=2", "stack.d_state=4", "stack.width=4",
                "n_train_stack=8", "n_probe=4", "n_test=8",
                "stack_train={optimizer: adam, lr: 0.003, loss: hinge, epochs: 2}"]
        return Lucky(), resolve_config(Lucky, "quick", overrides=sets), {"model": "mamba5"}
    if exp_cls is ScanOrders:
        sets = [f"mixer={mixer}", "n_train=8", "n_test=8", "d_state=4",
                "data={H: 4, W: 4, d: 8, far_min: 3}", f"train_cfg={TINY_ADAM}"]
        return ScanOrders(), resolve_config(ScanOrders, "quick", overrides=sets), \
            {"order": "hilbert"}
    write_fashion(root)
    sets = [f"mixer={mixer}", f"root={root}", "n_train=8", "n_test=4", "d_state=4",
            "classes=[0, 1]", "train_cfg={optimizer: adam, lr: 0.003, loss: ce, epochs: 1, "
            "batch_size: 8}"]
    return FashionScan(), resolve_config(FashionScan, "quick", overrides=sets), \
        {"order": "hilbert"}


@pytest.mark.parametrize("mixer", ALL_MIXERS)
@pytest.mark.parametrize("exp_cls", [Lucky, ScanOrders, FashionScan],
                         ids=lambda c: c.id.split("/")[1])
def test_runs_with_every_mixer(exp_cls, mixer, tmp_path):
    exp, cfg, params = tiny(exp_cls, mixer, tmp_path)
    r = exp.run(cfg, params, 0)
    assert r.status == "ok", r.reason
    assert r.metrics and all(math.isfinite(v) for v in r.metrics.values()), r.metrics
    path = "stack.mixer" if exp_cls is Lucky else "mixer"
    assert exp.variant(cfg) == ("" if mixer == "mamba" else f"{path}={mixer}")


@pytest.mark.parametrize("exp_cls,path", [(Lucky, "stack.mixer"), (ScanOrders, "mixer"),
                                          (FashionScan, "mixer")])
def test_mixer_field(exp_cls, path):
    default = resolve_config(exp_cls, "quick")
    explicit = resolve_config(exp_cls, "quick", overrides=[f"{path}=mamba"])
    other = resolve_config(exp_cls, "quick", overrides=[f"{path}=gla"])
    # a variant has its own hash, so its runs never mix with the paper's
    assert config_hash(default) == config_hash(explicit) != config_hash(other)
    assert "mixer" in other.model_dump_json() and exp_cls().variant(other).endswith("=gla")
    with pytest.raises(UserError, match="mixer"):
        resolve_config(exp_cls, "quick", overrides=[f"{path}=mambda"])


def test_lucky_without_step_sizes_makes_no_delta_claim():
    cfg = resolve_config(Lucky, "quick", overrides=["stack.mixer=softmax"])
    names = [s.name for s in Lucky().specs(cfg)]
    assert "table3_delta" not in names and "table3_wo" in names
    assert "table3_delta" in [s.name for s in Lucky().specs(resolve_config(Lucky, "quick"))]
