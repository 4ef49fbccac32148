"""The task protocol: what every data set of every paper gives an experiment.

A data model is a pydantic config whose sampling is pure in (config, n, seed, part): the same
arguments give the same tensors on any machine, in any process, in any order. One run seed
yields a `Split` (train and test parts plus metadata about the task as a whole); the two parts
draw from the disjoint seed streams of `ssmlab.seeding` ("train" even, "test" odd), so a test
example is never a training example's twin by seed.

    Sampler     a config that draws one part of n examples: `sample(n, seed, part) -> D`
                (filtering's majority / locality / 2-D locality data, selectivity's KEEP n-TH,
                MQAR and induction heads)
    split()     both parts of one run seed from a Sampler -> Split[D]

A task whose sizes live in its own settings returns the Split directly (generalization's
`build_task(task, settings, T, seed)` for majority bits, ListOps and IMDb, with the vocabulary
and class count in `meta`). Real image sets with fixed published parts (Fashion-MNIST) are loaded,
not sampled.

D is the paper's own container (tensors plus slice metadata such as the positions, counts or
lengths a probe needs); the protocol fixes how parts are drawn, not what a part holds.

Online tasks that draw a fresh batch every step (icl_outliers' prompts) are not Splits: they
take an explicit `torch.Generator` per step from the run's "train" stream and a fixed test set
from its "test" stream, the same disjointness by another route.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

Part = Literal["train", "test"]

D = TypeVar("D")
D_co = TypeVar("D_co", covariant=True)


@dataclass(frozen=True)
class Split(Generic[D]):
    """One run seed's data: the train and the test part, and what is known about the task as a
    whole (vocabulary size, number of classes, padding length, ...)."""

    train: D
    test: D
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[D]:
        """`train, test = split(...)`."""
        return iter((self.train, self.test))


class Sampler(Protocol[D_co]):
    def sample(self, n: int, seed: int, part: Part) -> D_co:
        """n examples of `part` for run seed `seed` (pure)."""
        ...


def split(sampler: Sampler[D], seed: int, n_train: int, n_test: int,
          **meta: Any) -> Split[D]:
    """The train part (n_train examples) and the test part (n_test) of run seed `seed`."""
    return Split(sampler.sample(n_train, seed, "train"), sampler.sample(n_test, seed, "test"),
                 meta)
