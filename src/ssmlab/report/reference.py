"""Shipped results: a reference file of stored claims, written from one store and read beside
another, so that a report of the quick profile alone can show what the paper profile says
(docs/report.md, "Shipped results").

The format is JSON lines. The first line is a header, every other line one claim:

    {"format": "ssmlab-claims", "version": 1, "generated": "<ISO time>", "ssmlab": "<version>"}
    {"profile": "paper", "experiment": "...", "cfg_hash": "...", "analyzed": "<ISO time>",
     "claim": {... every field of ssmlab.records.Claim, as Claim.model_dump_json() writes it}}

A claim line names the profile and the analysed config it came from; the claim itself round
trips losslessly (`Claim.model_validate(line["claim"]) == claim`). Reading a file that is
missing, not UTF-8, not JSON lines, without the header, of a newer version, or with a claim that
does not validate raises UserError naming the file and the line.

`publish` makes the folder committed under docs/results/paper/ from a results folder's report:
report.md and its figures, each PNG at most PNG_LIMIT bytes (larger ones are re-encoded smaller,
or the call fails naming the file).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

import ssmlab
from ssmlab.errors import UserError
from ssmlab.records import Claim

FORMAT = "ssmlab-claims"
VERSION = 1
SHIPPED = "shipped"  # the word that marks a profile's verdicts as taken from a reference file
PNG_LIMIT = 200_000  # bytes: the most a committed figure may weigh


@dataclass
class RefConfig:
    """The claims of one analysed config, as the reference file carries them."""

    profile: str
    experiment: str
    cfg_hash: str
    analyzed: str
    claims: list[Claim] = field(default_factory=list)

    @property
    def paper(self) -> str:
        return self.claims[0].paper if self.claims else self.experiment.split("/", 1)[0]

    @property
    def variant(self) -> str:
        return next((c.variant for c in self.claims if c.variant), "")


@dataclass
class Reference:
    """A loaded reference file: its header and its configs, in file order."""

    path: Path
    generated: str
    ssmlab_version: str
    configs: list[RefConfig]

    @property
    def date(self) -> str:
        """The day it was generated (YYYY-MM-DD)."""
        return self.generated[:10]

    def label(self, profile: str) -> str:
        """How the report names the verdicts of `profile` taken from this file, e.g.
        'paper (shipped, 2025-06-01)', never the bare profile of a stored config."""
        return shipped_label(profile, self.date)

    def claims_by_label(self) -> dict[str, list[Claim]]:
        """label -> every claim the file holds at that profile (the shipped count rows)."""
        out: dict[str, list[Claim]] = {}
        for rc in self.configs:
            out.setdefault(self.label(rc.profile), []).extend(rc.claims)
        return out

    def summary(self) -> str:
        counts = Counter(rc.profile for rc in self.configs for _ in rc.claims)
        profs = ", ".join(f"{n} at {p}" for p, n in counts.items()) or "no claims"
        return (f"shipped results from {self.path} (generated {self.generated}, ssmlab "
                f"{self.ssmlab_version}): {profs}; the store's own claims win over them")


def shipped_label(profile: str, date: str) -> str:
    return f"{profile} ({SHIPPED}, {date})"


def is_shipped(label: str) -> bool:
    return label.endswith(")") and f" ({SHIPPED}, " in label


def base_profile(label: str) -> str:
    """'paper (shipped, 2025-06-01)' -> 'paper'; a stored profile is its own base."""
    return label.split(f" ({SHIPPED}, ", 1)[0] if is_shipped(label) else label


# -- writing ------------------------------------------------------------------------------------
def _check_target(path: Path) -> None:
    """Bad paths are the user's: one-line errors before anything is written."""
    if path.is_dir():
        raise UserError(f"cannot write the claims to {path}: it is a directory")
    parent = path.parent
    if not parent.is_dir():
        raise UserError(f"cannot write the claims to {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UserError(f"cannot write the claims to {path}: folder {parent} is not writable")
    if path.exists() and not path.is_file():
        raise UserError(f"cannot write the claims to {path}: it is not a regular file")


def write_reference(configs: list[RefConfig], path: str | Path, generated: str) -> int:
    """Write `configs` as a reference file (atomically: a temporary file beside it, renamed);
    return the number of claims written."""
    path = Path(path)
    _check_target(path)
    lines = [json.dumps({"format": FORMAT, "version": VERSION, "generated": generated,
                         "ssmlab": ssmlab.__version__})]
    n = 0
    for rc in configs:
        for c in rc.claims:
            lines.append(json.dumps({"profile": rc.profile, "experiment": rc.experiment,
                                     "cfg_hash": rc.cfg_hash, "analyzed": rc.analyzed,
                                     "claim": json.loads(c.model_dump_json())},
                                    ensure_ascii=False))
            n += 1
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"cannot write the claims to {path}: {e.strerror or e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return n


# -- reading ------------------------------------------------------------------------------------
def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(x) for x in err.get("loc", ())) or "claim"
    return f"{where}: {err.get('msg', 'invalid')}"


def load_reference(path: str | Path) -> Reference:
    """Read a reference file; UserError (one line, naming the file) when it cannot be used."""
    path = Path(path)
    what = f"reference file {path}"
    if not path.exists():
        raise UserError(f"{what} not found")
    if not path.is_file():
        raise UserError(f"{what} is not a regular file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{what} is not UTF-8 (byte {e.start})") from e
    except OSError as e:
        raise UserError(f"cannot read {what}: {e.strerror or e}") from e
    lines = [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    objs = []
    for i, line in lines:
        try:
            objs.append((i, json.loads(line)))
        except json.JSONDecodeError as e:
            raise UserError(f"{what} line {i} is not JSON: {e.msg}") from e
    if not objs or not isinstance(objs[0][1], dict) or objs[0][1].get("format") != FORMAT:
        raise UserError(f"{what} is not an ssmlab claims reference (its first line must be "
                        f"the header {{\"format\": \"{FORMAT}\", ...}})")
    head = objs[0][1]
    version = head.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise UserError(f"{what} has format version {version!r}; this ssmlab reads up to "
                        f"{VERSION}")
    configs: dict[tuple[str, str, str], RefConfig] = {}
    for i, obj in objs[1:]:
        if not isinstance(obj, dict):
            raise UserError(f"{what} line {i} is not an object")
        try:
            profile, exp, cfg_hash = (obj[k] for k in ("profile", "experiment", "cfg_hash"))
            raw = obj["claim"]
        except KeyError as e:
            raise UserError(f"{what} line {i} lacks {e.args[0]!r}") from e
        if not all(isinstance(x, str) and x for x in (profile, exp, cfg_hash)):
            raise UserError(f"{what} line {i}: profile, experiment and cfg_hash must be "
                            "non-empty strings")
        try:
            claim = Claim.model_validate(raw)
        except ValidationError as e:
            raise UserError(f"{what} line {i} holds an invalid claim: {_first_error(e)}") from e
        if claim.experiment != exp:
            raise UserError(f"{what} line {i}: the claim's experiment {claim.experiment!r} is "
                            f"not the line's {exp!r}")
        rc = configs.setdefault((profile, exp, cfg_hash),
                                RefConfig(profile, exp, cfg_hash, str(obj.get("analyzed") or "")))
        rc.claims.append(claim)
    return Reference(path, str(head.get("generated") or "unknown date"),
                     str(head.get("ssmlab") or "?"), list(configs.values()))


# -- publishing (make paper-results) ------------------------------------------------------------
def shrink_png(path: Path, limit: int = PNG_LIMIT) -> int:
    """Re-encode a PNG larger than `limit` bytes at a lower resolution until it fits; return its
    size. UserError naming the file when it cannot be made to fit (or cannot be read)."""
    size = path.stat().st_size
    if size <= limit:
        return size
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - Pillow comes with matplotlib
        raise UserError(f"{path} is {size} bytes (> {limit}) and Pillow is not installed to "
                        "re-encode it") from e
    try:
        with Image.open(path) as im:
            im.load()
            original = im.copy()
    except OSError as e:
        raise UserError(f"{path} is {size} bytes (> {limit}) and is not a readable PNG: {e}") \
            from e
    scale = 1.0
    for _ in range(12):
        scale *= max(0.3, min(0.9, (limit / size) ** 0.5 * 0.95))
        w, h = (max(1, round(d * scale)) for d in original.size)
        original.resize((w, h), Image.Resampling.LANCZOS).save(path, "PNG", optimize=True)
        size = path.stat().st_size
        if size <= limit:
            return size
        if w <= 16 or h <= 16:
            break
    raise UserError(f"{path} is still {size} bytes after re-encoding (limit {limit}); "
                    "make that figure smaller")


def _unnest_shipped(figs: Path, report_md: Path) -> None:
    """A report written with `--reference` holds the reference's figures under
    figures/shipped/<experiment>/<config hash>/; published, they go back to
    figures/<experiment>/<config hash>/, where the next report with this folder's claims.jsonl
    as its reference looks for them (a store's own figure folder of the same name wins)."""
    nested = figs / "shipped"
    if not nested.is_dir():
        return
    for exp in sorted(p for p in nested.iterdir() if p.is_dir()):
        for cfg in sorted(p for p in exp.iterdir() if p.is_dir()):
            target = figs / exp.name / cfg.name
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(cfg), str(target))
    shutil.rmtree(nested)
    report_md.write_text(report_md.read_text(encoding="utf-8").replace("figures/shipped/",
                                                                       "figures/"),
                         encoding="utf-8")


def publish(results: str | Path, dest: str | Path, limit: int = PNG_LIMIT) -> list[Path]:
    """Copy results/report/report.md and its figures into `dest` (replacing the previous
    report.md and figures/, leaving other files such as claims.jsonl and README.md alone) and
    re-encode every PNG over `limit` bytes; return the PNGs written."""
    src = Path(results) / "report"
    dest = Path(dest)
    if not (src / "report.md").is_file():
        raise UserError(f"no report in {src}: run `ssmlab report --results {results}` first")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "report.md", dest / "report.md")
    figs = dest / "figures"
    if figs.exists():
        shutil.rmtree(figs)
    if (src / "figures").is_dir():
        shutil.copytree(src / "figures", figs)
    _unnest_shipped(figs, dest / "report.md")
    pngs = sorted(p for p in figs.rglob("*") if p.suffix.lower() == ".png") if figs.is_dir() \
        else []
    for p in pngs:
        shrink_png(p, limit)
    return pngs


def main(argv: list[str] | None = None) -> int:
    """`python -m ssmlab.report.reference publish RESULTS DEST`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3 or args[0] != "publish":
        print("usage: python -m ssmlab.report.reference publish RESULTS DEST", file=sys.stderr)
        return 2
    try:
        pngs = publish(args[1], args[2])
    except UserError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    big = max((p.stat().st_size for p in pngs), default=0)
    print(f"published {args[2]}/report.md and {len(pngs)} PNG(s), largest {big} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
