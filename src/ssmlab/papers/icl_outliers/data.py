"""In-context classification prompts with outliers (icl_outliers, arXiv 2510.00399, Sec. 3).

Glossary (code name -> paper symbol):
    mu          μ_1..μ_{M₁}     relevant patterns (the labels' carriers)          (M1, d)
    nu          ν_1..ν_{M₂}     irrelevant patterns (nuisance)                    (M2, d)
    v_star      v*_1..v*_V      training outlier patterns                         (V, d)
    v_prime     v'_1..v'_3      shifted test outlier patterns, in V'               (3, d)
    beta        β               norm of every pattern
    kappa       κ ~ U(-K, K)    weight of the irrelevant pattern
    kappa_a     κ_a             weight of the outlier pattern (training)
    kappa_test  κ'_a            weight of the outlier pattern (test)
    p_a         p_a             probability that a training context example is an outlier
    alpha       α               fraction of outlier examples in a test context
    task (a, b) f               label +1 if x holds μ_a, -1 if it holds μ_b
    P           P               prompt; the paper's columns p_i = (x_i, y_i) are our rows:
                                (B, l + 1, d + 1), the query last with its label slot 0.

A training context example is x = μ_j + κ ν_k + κ_a v*_s with probability p_a (label uniform ±1),
else x = μ_j + κ ν_k (label f(x)), with j ∈ {a, b} equiprobable, k and s uniform. The query is
always clean; its target is z = f(x_q). Test contexts hold outliers κ'_a v' with v' ∈ V' and their
labels follow a rule: flipped (-f(x)), one label (all +1), or random.

Choices the paper leaves open (defaults named, alternatives are options):
- basis "standard": μ, ν, v* are β times distinct standard basis vectors (μ on coordinates
  0..M₁-1, then ν, then v*). The model's init W_B^T W_C = δ² I restricted to the first m
  coordinates, so with m = l + 1 < d the patterns must live on the first coordinates to be seen
  at init; "random" draws an orthonormal frame (seeded) instead.
- V' = {v'_1, v'_2, v'_3} of the paper (Sec. 5) with u = 0: v'_r = Σ_i λ_{r,i} v*_i, Σ_i λ_{r,i}
  = 0.9, 0.5, 0.3 ≥ L = 0.3. Requires V = 3; with V ≠ 3 the test set falls back to V' = V*.
- Training tasks: the cyclic shifts (μ_i, μ_{i+k mod M₁}) for k in `train_shifts`, default
  k = 1..floor(M₁/2): every pattern appears once per shift with label +1 and once with -1
  ("covers all patterns and labels evenly") and every unordered pair of patterns is seen (both
  orientations for k = M₁/2). Test tasks: every other ordered pair, i.e. reversed pairs, never
  seen in training. Why not fewer shifts: with k = 1 only, the training pairs form a cycle and
  the factorised W_B^T W_C learns two-hop (parity) cross-scores that flip the sign on unseen
  distance-2 pairs (measured: 6 % test error at α = 0 for Mamba, 19 % for the linear
  Transformer), a failure of the task design, not of outlier robustness.
- task_split "all" (train and test on all M₁(M₁-1) ordered pairs) exists for the deep stacks
  (Table 1): with the "unseen" split every training pair has one orientation, which a 3-layer
  network memorises (it then answers from the pair's identity without reading the labels: 47 %
  accuracy for a Mamba stack on the reversed pairs at α = 0, 100 % on the training pairs, and the
  outliers' labels become irrelevant). With both orientations equally likely the labels must be
  read in context.
- Test outlier count: exactly round(α l) outlier examples ("count='exact'", which placements
  need); "bernoulli" draws each example as an outlier with probability α (random placement only),
  which is how the paper words its test data.
- κ'_a = κ_a and K = 1/2 (the largest K the paper allows; it does not state the values used).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import annotated_types as at
import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor

from ssmlab.config import StrictModel
from ssmlab.errors import UserError

# Sanity limits of the data model's sizes and scales (Sec. 5 uses d = 30, M₁ = 6, M₂ = 10, V = 3,
# β = 3, κ_a = 2); what fits the machine is the experiments' memory estimates' job.
MAX_D = 4096
MAX_PATTERNS = 1024  # M₁, M₂, V each (and M₁ + M₂ + V ≤ d)
MAX_SCALE = 100.0  # β, κ_a, κ'_a: the prompts' entries are O(β κ)

Rule = Literal["flipped", "one_label", "random"]
Placement = Literal["random", "farthest", "closest"]
RULES: tuple[str, ...] = ("flipped", "one_label", "random")
PLACEMENTS: tuple[str, ...] = ("farthest", "random", "closest")

#: The paper's shifted test outliers (Sec. 5): coefficients λ_r on (v*_1, v*_2, v*_3).
V_PRIME_COEFFS: tuple[tuple[float, float, float], ...] = (
    (0.7, 0.6, -0.4),
    (0.4, 0.7, -0.6),
    (-0.7, 0.5, 0.5),
)


class ICLDataConfig(StrictModel):
    """The data model. Defaults are the paper's synthetic set-up (Sec. 5, Fig. 2)."""

    d: int = Field(30, ge=2, le=MAX_D, description="input dimension d")
    M1: int = Field(6, ge=2, le=MAX_PATTERNS, description="number of relevant patterns M₁")
    M2: int = Field(10, ge=1, le=MAX_PATTERNS, description="number of irrelevant patterns M₂")
    V: int = Field(3, ge=1, le=MAX_PATTERNS, description="number of outlier patterns V")
    beta: float = Field(3.0, gt=0, le=MAX_SCALE, description="pattern norm β")
    K: float = Field(0.5, ge=0, le=0.5, description="κ ~ U(-K, K), K ≤ 1/2")
    kappa_a: float = Field(2.0, ge=0, le=MAX_SCALE, description="training outlier weight κ_a")
    kappa_test: float | None = Field(None, ge=0, le=MAX_SCALE,
                                     description="test outlier weight κ'_a; None = κ_a")
    p_a: float = Field(0.6, ge=0, lt=1, description="training outlier probability p_a")
    basis: Literal["standard", "random"] = "standard"
    task_split: Literal["unseen", "all"] = Field(
        "unseen", description="'unseen': train on the shift tasks, test on the other ordered "
        "pairs; 'all': train and test on every ordered pair (for deep models, see module doc)")
    train_shifts: tuple[Annotated[int, at.Ge(1), at.Le(MAX_PATTERNS - 1)], ...] | None = Field(
        None, max_length=MAX_PATTERNS,
        description="cyclic shifts k of the training tasks; None = 1..floor(M1/2)")
    test_outliers: Literal["shifted", "train"] = Field(
        "shifted", description="test outlier set: the paper's V' or the training V*"
    )
    count: Literal["exact", "bernoulli"] = "exact"
    one_label_value: Literal[1, -1] = Field(1, description="the label of rule 'one_label'")

    @field_validator("one_label_value", mode="before")
    @classmethod
    def _label_not_bool(cls, v: object) -> object:
        if isinstance(v, bool):  # True == 1 would pass the Literal
            raise ValueError(f"must be 1 or -1, not {v!r}")
        return v

    @model_validator(mode="after")
    def _check(self) -> ICLDataConfig:
        if self.M1 + self.M2 + self.V > self.d:
            raise ValueError(f"M1 + M2 + V = {self.M1 + self.M2 + self.V} must be ≤ d = {self.d}")
        if self.M1 < 3:
            raise ValueError("M1 must be ≥ 3: with 2 patterns every ordered pair is a training task")
        shifts = self.shifts
        bad = [k for k in shifts if not 1 <= k < self.M1]
        if bad or not shifts or len(set(shifts)) != len(shifts):
            raise ValueError(f"train_shifts must be distinct values in 1..M1-1, got {shifts}")
        if self.task_split == "unseen" and len(training_tasks(self.M1, shifts)) >= self.M1 * (self.M1 - 1):
            raise ValueError("train_shifts cover every ordered pair: no unseen test task is left")
        return self

    @property
    def shifts(self) -> tuple[int, ...]:
        """The training shifts; default 1..floor(M₁/2): every unordered pair of patterns is a
        training task in one orientation (both for k = M₁/2), its reverse is an unseen task."""
        if self.train_shifts is not None:
            return tuple(self.train_shifts)
        return tuple(range(1, self.M1 // 2 + 1))


@dataclass(frozen=True)
class Patterns:
    """The orthogonal pattern vectors, each of norm β (shifted v' have norm ≈ β)."""

    mu: Tensor  # (M1, d)
    nu: Tensor  # (M2, d)
    v_star: Tensor  # (V, d)
    v_prime: Tensor  # (R, d)


def make_patterns(cfg: ICLDataConfig, seed: int = 0, dtype: torch.dtype = torch.float32) -> Patterns:
    """μ, ν, v* as β × orthonormal vectors; v' from the paper's coefficients (Sec. 5).

    The "random" basis is drawn from `seed` (QR of a Gaussian); "standard" ignores it."""
    n = cfg.M1 + cfg.M2 + cfg.V
    if cfg.basis == "standard":
        frame = torch.eye(cfg.d, dtype=torch.float64)[:n]  # (n, d)
    else:
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(cfg.d, cfg.d, generator=g, dtype=torch.float64))
        frame = q.T[:n]  # (n, d), orthonormal rows
    frame = cfg.beta * frame
    mu, nu, vs = frame[: cfg.M1], frame[cfg.M1 : cfg.M1 + cfg.M2], frame[cfg.M1 + cfg.M2 :]
    if cfg.test_outliers == "shifted" and cfg.V == 3:
        vp = torch.tensor(V_PRIME_COEFFS, dtype=torch.float64) @ vs  # (3, d)
    else:
        vp = vs.clone()
    return Patterns(*(t.to(dtype) for t in (mu, nu, vs, vp)))


def training_tasks(M1: int, shifts: tuple[int, ...] = (1,)) -> list[tuple[int, int]]:
    """Ordered pairs (a, b) = (i, i + k mod M₁): each pattern once per shift as +1 and as -1."""
    return [(i, (i + k) % M1) for k in shifts for i in range(M1)]


def unseen_tasks(M1: int, shifts: tuple[int, ...] = (1,)) -> list[tuple[int, int]]:
    """Every ordered pair of distinct patterns not used in training (unseen tasks)."""
    seen = set(training_tasks(M1, shifts))
    return [(a, b) for a in range(M1) for b in range(M1) if a != b and (a, b) not in seen]


def all_tasks(M1: int) -> list[tuple[int, int]]:
    """Every ordered pair of distinct patterns."""
    return [(a, b) for a in range(M1) for b in range(M1) if a != b]


def task_sets(cfg: ICLDataConfig) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(training tasks, test tasks) of the config's task split."""
    if cfg.task_split == "all":
        return all_tasks(cfg.M1), all_tasks(cfg.M1)
    return training_tasks(cfg.M1, cfg.shifts), unseen_tasks(cfg.M1, cfg.shifts)


@dataclass
class Prompts:
    """A batch of prompts with slice metadata.

    P: (B, l + 1, d + 1) rows p_i = (x_i, y_i), query last with y = 0.
    z: (B,) target ±1. outlier: (B, l) bool. rel: (B, l + 1) relevant-pattern index of each x.
    task: (B, 2) the pair (a, b)."""

    P: Tensor
    z: Tensor
    outlier: Tensor
    rel: Tensor
    task: Tensor


def _uniform(shape: tuple[int, ...], lo: float, hi: float, g: torch.Generator, dtype) -> Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=dtype)


def _clean_inputs(pat: Patterns, cfg: ICLDataConfig, tasks: Tensor, n: int,
                  g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """x = μ_j + κ ν_k with j ∈ {a, b} equiprobable: returns x (B, n, d), rel (B, n), f(x) (B, n)."""
    B = tasks.shape[0]
    dtype = pat.mu.dtype
    pick_b = torch.rand(B, n, generator=g) < 0.5  # (B, n)
    rel = torch.where(pick_b, tasks[:, 1:2], tasks[:, 0:1])  # (B, n)
    lab = torch.where(pick_b, -1.0, 1.0).to(dtype)  # (B, n)
    k = torch.randint(pat.nu.shape[0], (B, n), generator=g)  # (B, n)
    kappa = _uniform((B, n, 1), -cfg.K, cfg.K, g, dtype)  # (B, n, 1)
    x = pat.mu[rel] + kappa * pat.nu[k]  # (B, n, d)
    return x, rel, lab


def _assemble(x: Tensor, y: Tensor, xq: Tensor) -> Tensor:
    """Rows p_i = (x_i, y_i) and the query (x_q, 0): (B, l + 1, d + 1)."""
    ctx = torch.cat([x, y.unsqueeze(-1)], -1)  # (B, l, d+1)
    q = torch.cat([xq, xq.new_zeros(xq.shape[0], 1)], -1).unsqueeze(1)  # (B, 1, d+1)
    return torch.cat([ctx, q], 1)


def _task_tensor(tasks: list[tuple[int, int]], B: int, g: torch.Generator) -> Tensor:
    if not tasks:
        raise UserError("no tasks to sample prompts from")
    t = torch.tensor(tasks, dtype=torch.long)  # (T, 2)
    return t[torch.randint(len(tasks), (B,), generator=g)]  # (B, 2)


def sample_train(pat: Patterns, cfg: ICLDataConfig, B: int, l: int, g: torch.Generator,
                 tasks: list[tuple[int, int]] | None = None) -> Prompts:
    """Training prompts (Algorithm 1's batch): outliers with probability p_a, labels uniform."""
    tasks_t = _task_tensor(tasks if tasks is not None else task_sets(cfg)[0], B, g)
    x, rel, lab = _clean_inputs(pat, cfg, tasks_t, l + 1, g)  # query is the last one
    out = torch.rand(B, l, generator=g) < cfg.p_a  # (B, l)
    s = torch.randint(pat.v_star.shape[0], (B, l), generator=g)
    x_ctx = x[:, :l] + out.unsqueeze(-1) * (cfg.kappa_a * pat.v_star[s])  # (B, l, d)
    rand_lab = torch.where(torch.rand(B, l, generator=g) < 0.5, -1.0, 1.0).to(lab.dtype)
    y = torch.where(out, rand_lab, lab[:, :l])  # (B, l)
    return Prompts(_assemble(x_ctx, y, x[:, l]), lab[:, l], out, rel, tasks_t)


def n_outliers(alpha: float, l: int) -> int:
    """The exact outlier count of a context of l examples: round(α l), halves up."""
    return int(math.floor(alpha * l + 0.5))


def outlier_mask(B: int, l: int, alpha: float, placement: Placement, count: str,
                 g: torch.Generator) -> Tensor:
    """(B, l) bool: which context positions are outliers (position l - 1 is next to the query)."""
    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"outlier fraction alpha must be in [0, 1], got {alpha}")
    if count == "bernoulli":
        if placement != "random":
            raise UserError("count='bernoulli' needs placement='random' (placements need a count)")
        return torch.rand(B, l, generator=g) < alpha
    n = n_outliers(alpha, l)
    pos = torch.arange(l)
    if placement == "farthest":
        return (pos < n).expand(B, l).clone()
    if placement == "closest":
        return (pos >= l - n).expand(B, l).clone()
    if placement == "random":
        ranks = torch.rand(B, l, generator=g).argsort(-1).argsort(-1)  # random permutation ranks
        return ranks < n
    raise UserError(f"unknown placement {placement!r}; one of {PLACEMENTS}")


def sample_test(pat: Patterns, cfg: ICLDataConfig, B: int, l: int, alpha: float, rule: Rule,
                placement: Placement, g: torch.Generator,
                tasks: list[tuple[int, int]] | None = None) -> Prompts:
    """Test prompts on unseen tasks: a fraction α of the context carries a shifted outlier κ'_a v'
    (v' uniform in V'), labelled by `rule`, placed by `placement`; the query is clean."""
    if rule not in RULES:
        raise UserError(f"unknown labelling rule {rule!r}; one of {RULES}")
    tasks_t = _task_tensor(tasks if tasks is not None else task_sets(cfg)[1], B, g)
    x, rel, lab = _clean_inputs(pat, cfg, tasks_t, l + 1, g)
    out = outlier_mask(B, l, alpha, placement, cfg.count, g)  # (B, l)
    r = torch.randint(pat.v_prime.shape[0], (B, l), generator=g)
    kt = cfg.kappa_a if cfg.kappa_test is None else cfg.kappa_test
    x_ctx = x[:, :l] + out.unsqueeze(-1) * (kt * pat.v_prime[r])  # (B, l, d)
    if rule == "flipped":
        y_out = -lab[:, :l]
    elif rule == "one_label":
        y_out = torch.full_like(lab[:, :l], float(cfg.one_label_value))
    else:
        y_out = torch.where(torch.rand(B, l, generator=g) < 0.5, -1.0, 1.0).to(lab.dtype)
    y = torch.where(out, y_out, lab[:, :l])  # (B, l)
    return Prompts(_assemble(x_ctx, y, x[:, l]), lab[:, l], out, rel, tasks_t)
