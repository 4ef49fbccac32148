"""A store for report tests: builtin/test_sleepy analysed at both profiles, its stored claims
replaced by spec-style claims (ids, intervals, diagnoses, every verdict) that differ between
quick and paper, a real PNG figure for each, and builtin/test_flaky with its legacy claim
(`passed`, no id) at the quick profile only.

    quick  sleepy:total  FAIL profile-too-small   paper  PASS
           sleepy:slope  INCONCLUSIVE (12 seeds)         PASS
           sleepy:absent SKIP                            SKIP
           sleepy:wrong  FAIL undiagnosed                FAIL finding
           -                                             sleepy:extra PASS (paper only)
           flaky: legacy PASS (quick only)
"""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

from ssmlab.records import Claim
from ssmlab.runner.store import Store
from ssmlab.runner.sweep import figdir_for, run_sweep
from ssmlab.runner.testing import registered_test_experiments

SLEEPY = "builtin/test_sleepy"
FLAKY = "builtin/test_flaky"


def md_table(md: str, title: str) -> list[list[str]]:
    """The cells of the first Markdown table under '## title': header, separator, rows."""
    lines = md.split(f"\n## {title}\n", 1)[1].splitlines()[1:]
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def png(width: int = 24, height: int = 16, rgb: tuple[int, int, int] = (40, 120, 200)) -> bytes:
    """A valid RGB PNG of one colour (no imaging library needed)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    row = b"\x00" + bytes(rgb) * width
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b""))


def spec_claim(name: str, verdict: str, **kw) -> Claim:
    base = dict(paper="builtin", experiment=SLEEPY, id=f"{SLEEPY}:{name}", ref=f"Fig. {name}",
                claim=f"the {name} claim holds", paper_value="0.9", tolerance_source="seed spread",
                expected="0.9 ± 0.1", verdict=verdict, figure=f"{name}.png")
    return Claim(**(base | kw))


def interval(v: float, lo: float, hi: float, n: int = 3) -> dict:
    return dict(measured=f"accuracy: {v} [{lo}, {hi}] (bootstrap, n={n})", value=v, ci_low=lo,
                ci_high=hi, n=n)


QUICK = [
    spec_claim("total", "FAIL", **interval(0.55, 0.5, 0.6), diagnosis_kind="profile-too-small",
               diagnosis="150 steps cannot reach the regime; paper profile 0.93"),
    spec_claim("slope", "INCONCLUSIVE", **interval(0.82, 0.7, 0.95), seeds_needed=12),
    spec_claim("absent", "SKIP", measured="accuracy: no IMDb data"),
    spec_claim("wrong", "FAIL", **interval(0.1, 0.05, 0.15), diagnosis_kind="undiagnosed",
               diagnosis="no diagnosis recorded"),
]
PAPER = [
    spec_claim("total", "PASS", **interval(0.93, 0.91, 0.95)),
    spec_claim("slope", "PASS", **interval(0.9, 0.85, 0.95)),
    spec_claim("absent", "SKIP", measured="accuracy: no IMDb data"),
    spec_claim("wrong", "FAIL", **interval(0.2, 0.15, 0.25), diagnosis_kind="finding",
               diagnosis="the verdict does not flip from 10^3 to 10^4 steps"),
    spec_claim("extra", "PASS", **interval(0.95, 0.92, 0.97)),
]


def two_profile_store(res: Path) -> dict[str, str]:
    """Fill `res` as the module docstring says; return profile -> sleepy's config hash."""
    hashes = {}
    with registered_test_experiments(), Store.open(res) as st:
        for profile, claims in (("paper", PAPER), ("quick", QUICK)):  # quick analysed last
            r = run_sweep(SLEEPY, store=st, profile=profile)
            fd = figdir_for(res, SLEEPY, r.cfg_hash)
            fd.mkdir(parents=True, exist_ok=True)
            for c in claims:
                (fd / c.figure).write_bytes(png(rgb=(len(c.figure) * 9, 100, 150)))
            st.put_claims(SLEEPY, r.cfg_hash, claims)
            hashes[profile] = r.cfg_hash
        run_sweep(FLAKY, store=st)
    return hashes


def second_paper(res: Path) -> None:
    """A synthetic analysed config of another paper (filtering/fake, quick): one PASS and one
    FAIL (finding), each with a figure, so that the paper filter has something to filter."""
    from ssmlab.runner.store import ConfigRow, now_iso

    exp, cfg_hash = "filtering/fake", "feedfacecafe"
    fd = figdir_for(res, exp, cfg_hash)
    fd.mkdir(parents=True, exist_ok=True)
    claims = []
    for name, verdict, extra in (
            ("ordering", "PASS", {}),
            ("locality", "FAIL", {"diagnosis_kind": "finding",
                                  "diagnosis": "holds at no training length tried"})):
        (fd / f"{name}.png").write_bytes(png(rgb=(200, 60, len(name) * 20)))
        claims.append(Claim(paper="filtering", experiment=exp, id=f"{exp}:{name}",
                            ref=f"Lemma {len(claims) + 1}", claim=f"{name} holds",
                            measured="m: 1 [0.9, 1.1] (bootstrap, n=3)", expected="≥ 0.5",
                            tolerance_source="the lemma's constant", verdict=verdict,
                            figure=f"{name}.png", **extra))
    with Store.open(res) as st:
        st.put_config(ConfigRow(exp, cfg_hash, cfg_hash, "filtering", "quick", {"seeds": 3},
                                "filtering (synthetic): two claims", [],
                                str(fd.relative_to(res)), now_iso(), None))
        st.put_claims(exp, cfg_hash, claims)


def quick_store(res: Path) -> str:
    """Like two_profile_store, but the quick profile only (what a fresh clone has after `make
    reproduce`): sleepy's QUICK claims with figures, flaky's legacy claim; return sleepy's
    config hash."""
    with registered_test_experiments(), Store.open(res) as st:
        r = run_sweep(SLEEPY, store=st, profile="quick")
        fd = figdir_for(res, SLEEPY, r.cfg_hash)
        fd.mkdir(parents=True, exist_ok=True)
        for c in QUICK:
            (fd / c.figure).write_bytes(png(rgb=(len(c.figure) * 9, 100, 150)))
        st.put_claims(SLEEPY, r.cfg_hash, QUICK)
        run_sweep(FLAKY, store=st)
    return r.cfg_hash


SHIPPED_DATE = "2025-06-01"


def fake_claims() -> list[Claim]:
    """filtering/fake at the paper profile: an experiment a quick store of builtin lacks."""
    exp = "filtering/fake"
    return [Claim(paper="filtering", experiment=exp, id=f"{exp}:ordering", ref="Lemma 1",
                  claim="ordering holds", measured="m: 1 [0.9, 1.1] (bootstrap, n=3)",
                  expected="≥ 0.5", verdict="PASS", value=1.0, ci_low=0.9, ci_high=1.1, n=3,
                  figure="ordering.png"),
            Claim(paper="filtering", experiment=exp, id=f"{exp}:locality", ref="Lemma 2",
                  claim="locality holds", measured="m: 0.1 [0.0, 0.2] (bootstrap, n=3)",
                  expected="≥ 0.5", verdict="FAIL", diagnosis_kind="finding",
                  diagnosis="holds at no training length tried")]


def reference_file(path: Path, sleepy: list[Claim] | None = None) -> Path:
    """A reference file as `ssmlab claims --export` writes it, generated on SHIPPED_DATE:
    sleepy's `sleepy` claims (default PAPER) and filtering/fake's at the paper profile."""
    from ssmlab.report.reference import RefConfig, write_reference

    configs = [RefConfig("paper", SLEEPY, "5h1pp3d5133py", "2025-06-01T10:00:00+00:00",
                         list(PAPER if sleepy is None else sleepy)),
               RefConfig("paper", "filtering/fake", "5h1pp3df4k3", "2025-06-01T11:00:00+00:00",
                         fake_claims())]
    write_reference(configs, path, f"{SHIPPED_DATE}T12:00:00.000+00:00")
    return path
