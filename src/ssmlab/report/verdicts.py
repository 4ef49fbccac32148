"""Claims as a reader sees them, shared by the report and `ssmlab claims`: which analysed config
of each experiment and profile is current, verdict counts per paper, the diagnosis and the
"seeds that would settle it" in words, the quick / paper comparison, and the JSON record of a
claim.

Claims stored by earlier versions (legacy: empty id, no interval, no diagnosis) are rendered
like the others; they are matched across profiles by (experiment, ref, statement) instead of id.

A config that runs a variant of the paper's set-up (its claims carry `variant`, e.g.
'model.mixer=gla') is kept apart: "latest" means latest per (experiment, variant), so a variant
run last never hides the paper's own verdicts, claims match across profiles only within one
variant, and a variant's claims are never counted among the paper's verdicts (Tally.variants
counts them instead).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ssmlab.experiment import BUILTIN_PAPERS
from ssmlab.records import Claim
from ssmlab.report.reference import RefConfig, Reference, base_profile, is_shipped
from ssmlab.runner.store import ConfigRow, Store

VERDICTS = ("PASS", "FAIL", "INCONCLUSIVE", "SKIP")
PROFILE_ORDER = ("quick", "paper")  # other profiles follow, sorted
JSON_FIELDS = ("id", "paper", "experiment", "ref", "statement", "paper_value", "measured",
               "ci_low", "ci_high", "tolerance", "tolerance_source", "verdict", "diagnosis")


def paper_rank(paper: str) -> int:
    """Report order of papers: the built-in ones in their order, then the others."""
    return BUILTIN_PAPERS.index(paper) if paper in BUILTIN_PAPERS else len(BUILTIN_PAPERS)


def profile_order(profiles: Any) -> list[str]:
    """quick, paper, then the others sorted; a shipped label ('paper (shipped, <date>)', taken
    from a reference file) right after its own profile."""
    def key(p: str) -> tuple[int, str, bool, str]:
        base = base_profile(p)
        rank = PROFILE_ORDER.index(base) if base in PROFILE_ORDER else len(PROFILE_ORDER)
        return rank, base, is_shipped(p), p

    return sorted(set(profiles), key=key)


def claim_key(c: Claim) -> str:
    """What matches one claim across configs and profiles: its id, or for a legacy claim
    (empty id) its experiment, reference and statement; a variant's claims only match the same
    variant's."""
    key = c.id or f"{c.experiment}|{c.ref}|{c.claim}"
    return f"{key}|variant={c.variant}" if c.variant else key


def diagnosis_text(c: Claim) -> str:
    """'kind: evidence', or '' (no diagnosis: not a FAIL, or a legacy claim)."""
    if not c.diagnosis_kind:
        return ""
    return f"{c.diagnosis_kind}: {c.diagnosis}" if c.diagnosis else c.diagnosis_kind


# Past this many, the point estimate sits on the bound: more seeds would not settle the claim
# in practice, and the 1/√n extrapolation is not worth quoting as a number.
SETTLE_CAP = 100


def settle_text(c: Claim) -> str:
    """For an INCONCLUSIVE claim: 'about N seeds would settle it' when the evaluator estimated N
    (over SETTLE_CAP: 'the estimate sits at the bound')."""
    if c.verdict == "INCONCLUSIVE" and c.seeds_needed:
        if c.seeds_needed > SETTLE_CAP:
            return (f"more than {SETTLE_CAP} {c.n_unit} would be needed: the estimate sits at "
                    "the bound")
        return f"about {c.seeds_needed} {c.n_unit} would settle it"
    return ""


def measured_text(c: Claim) -> str:
    """Our number with its interval; n appended when the text does not name it already."""
    text = c.measured
    if c.n is not None and "n=" not in text:
        text += f" (n={c.n})"
    return text


def claim_json(c: Claim, with_variant: bool = False) -> dict[str, Any]:
    """The record `ssmlab claims --json` prints, one per claim, with exactly JSON_FIELDS (and
    `variant` last with `with_variant`)."""
    out = {"id": c.id, "paper": c.paper, "experiment": c.experiment, "ref": c.ref,
           "statement": c.claim, "paper_value": c.paper_value, "measured": c.measured,
           "ci_low": c.ci_low, "ci_high": c.ci_high, "tolerance": c.expected,
           "tolerance_source": c.tolerance_source, "verdict": c.verdict,
           "diagnosis": diagnosis_text(c)}
    assert tuple(out) == JSON_FIELDS
    if with_variant:
        out["variant"] = c.variant
    return out


@dataclass
class Entry:
    """One analysed config with its claims."""

    cfg: ConfigRow
    claims: list[Claim]

    @property
    def variant(self) -> str:
        """'' for the paper's set-up; else what the config changes (from its claims)."""
        return next((c.variant for c in self.claims if c.variant), "")


def catalog(store: Store) -> list[Entry]:
    """Every analysed config with its claims, newest analysis first per experiment."""
    return [Entry(cfg, store.claims(cfg.experiment, cfg.cfg_hash))
            for cfg in store.configs(latest_only=False)]


def latest(entries: list[Entry], profile: str | None = None) -> list[Entry]:
    """The latest analysed config per (experiment, variant), of `profile` when given; the
    paper's set-up before its variants."""
    seen: set[tuple[str, str]] = set()
    out = []
    for e in entries:
        key = (e.cfg.experiment, e.variant)
        if (profile is None or e.cfg.profile == profile) and key not in seen:
            seen.add(key)
            out.append(e)
    return sorted(out, key=lambda e: (e.cfg.experiment, e.variant != "", e.variant))


def latest_per_profile(entries: list[Entry]) -> dict[tuple[str, str], dict[str, Entry]]:
    """(experiment, variant) -> profile -> its most recently analysed config."""
    out: dict[tuple[str, str], dict[str, Entry]] = {}
    for e in entries:  # newest analysis first per experiment
        out.setdefault((e.cfg.experiment, e.variant), {}).setdefault(e.cfg.profile, e)
    return out


@dataclass
class Tally:
    """Verdict counts of one paper at one profile."""

    paper: str
    profile: str
    counts: Counter = field(default_factory=Counter)
    undiagnosed: list[str] = field(default_factory=list)  # ids of FAILs marked "undiagnosed"
    legacy_fails: int = 0  # FAILs stored by an older version, which carry no diagnosis
    variants: int = 0  # claims of variants of the paper's set-up: not counted above

    def add(self, c: Claim) -> None:
        if c.variant:
            self.variants += 1
            return
        self.counts[c.verdict] += 1
        if c.verdict == "FAIL":
            if c.diagnosis_kind == "undiagnosed":
                self.undiagnosed.append(c.id or f"{c.experiment} {c.ref}")
            elif not c.diagnosis_kind:
                self.legacy_fails += 1


def tally(claims_by_profile: dict[str, list[Claim]], paper_order: Any = None) -> list[Tally]:
    """One Tally per (paper, profile) present, papers in `paper_order(paper)` order."""
    table: dict[tuple[str, str], Tally] = {}
    for prof, claims in claims_by_profile.items():
        for c in claims:
            table.setdefault((c.paper, prof), Tally(c.paper, prof)).add(c)
    order = profile_order(claims_by_profile)
    key = paper_order or (lambda p: 0)
    return sorted(table.values(), key=lambda t: (key(t.paper), t.paper, order.index(t.profile)))


@dataclass
class Comparison:
    """One experiment's claims at every profile that has an analysed config: profile -> claim
    key -> claim. `profiles` lists them in report order; a comparison is shown when there are
    two or more."""

    claims: dict[str, dict[str, Claim]]

    @property
    def profiles(self) -> list[str]:
        return profile_order(self.claims)

    @property
    def shown(self) -> bool:
        return len(self.claims) > 1

    def verdicts(self, own_profile: str, c: Claim) -> dict[str, str | None]:
        """profile -> the verdict of the claim matching `c` there (None: not stored there);
        `c` itself stands for its own profile."""
        key = claim_key(c)
        out: dict[str, str | None] = {}
        for p in self.profiles:
            if p == own_profile:
                out[p] = c.verdict
            else:
                other = self.claims[p].get(key)
                out[p] = other.verdict if other else None
        return out

    def missing_from(self, own_profile: str, own: list[Claim]) -> list[tuple[str, Claim]]:
        """Claims stored at another profile that the shown config does not have."""
        keys = {claim_key(c) for c in own}
        seen: set[str] = set()
        out = []
        for p in self.profiles:
            if p == own_profile:
                continue
            for k, c in self.claims[p].items():
                if k not in keys and k not in seen:
                    seen.add(k)
                    out.append((p, c))
        return out


def comparisons(entries: list[Entry], reference: Reference | None = None) -> tuple[
        dict[tuple[str, str], Comparison], dict[str, list[Claim]]]:
    """Per (experiment, variant) its Comparison, and per profile every claim of the latest
    analysed config of each (experiment, variant) at that profile (what the per-paper counts
    are made of).

    With a `reference` (shipped results), each of its configs whose (experiment, variant,
    profile) the store has no analysed config of joins the Comparison under its shipped label,
    e.g. 'paper (shipped, 2025-06-01)': the store's own claims always win. Shipped claims are
    not in the returned per-profile lists (`reference_tallies` counts the file apart)."""
    comp: dict[tuple[str, str], Comparison] = {}
    by_profile: dict[str, list[Claim]] = {}
    stored = latest_per_profile(entries)
    for key, by in stored.items():
        claims = {}
        for prof, e in by.items():
            claims[prof] = {claim_key(c): c for c in e.claims}
            by_profile.setdefault(prof, []).extend(e.claims)
        comp[key] = Comparison(claims)
    for rc in shipped_configs(entries, reference):
        comp.setdefault((rc.experiment, rc.variant), Comparison({})).claims.setdefault(
            reference.label(rc.profile), {claim_key(c): c for c in rc.claims})  # type: ignore
    return comp, by_profile


def shipped_configs(entries: list[Entry], reference: Reference | None) -> list[RefConfig]:
    """The reference's configs the store does not override: no analysed config of the same
    (experiment, variant) at the same profile is stored."""
    if reference is None:
        return []
    stored = latest_per_profile(entries)
    out, seen = [], set()
    for rc in reference.configs:
        key = (rc.experiment, rc.variant, rc.profile)
        if rc.profile not in stored.get(key[:2], {}) and key not in seen:
            seen.add(key)
            out.append(rc)
    return out


def reference_tallies(reference: Reference | None) -> dict[str, list[Claim]]:
    """Shipped label -> every claim the reference holds there: the per-paper count rows marked
    as shipped (the whole file's counts, whichever of its claims the store overrides)."""
    return reference.claims_by_label() if reference is not None else {}
