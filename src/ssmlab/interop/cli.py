"""The work behind `ssmlab probe PATH -o DIR [--text-file F | --tokens 1,2,3] [--layers L]
[--channels C] [--quiet]`: validation, tokenisation, the probe, the report.

    --text-file F   UTF-8 text, tokenised with tokenizer.json beside the checkpoint (`tokenizers`)
    --tokens        comma-separated token ids, e.g. 1,2,3
    --layers        comma-separated indices and inclusive ranges, e.g. 0,5,10-12 (default: all)
    --channels      comma-separated indices, e.g. 0,7,42 (default: 8 evenly spaced); inner
                    channels of Mamba-1, heads of Mamba-2

Every bad input is a UserError with one line naming it; the CLI prints `error: ...`, exits 2.

How it uses a 2-core machine: torch runs on one thread while the probe runs
(`single_torch_thread`). With two OpenMP threads, any other busy process on the machine makes
them spin-wait at every small op: measured here (130M shape, 512 tokens), the probe took
26-28 s with 2 threads on an otherwise idle machine and 46-129 s while other jobs ran, against
30-43 s with one thread either way (docs/interop.md).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from ssmlab.errors import UserError
from ssmlab.interop.checkpoint import LoadedModel, load_checkpoint
from ssmlab.interop.deps import require
from ssmlab.interop.probe import Stopwatch, probe, resolve_selection
from ssmlab.interop.report import ReportWriter


def parse_index_list(text: str, what: str, ranges: bool) -> list[int]:
    """"0,5,10-12" -> [0, 5, 10, 11, 12] (ranges inclusive, only when `ranges`); sorted, unique.
    Anything else -> UserError naming the bad item."""
    items = [s.strip() for s in text.split(",")]
    if not text.strip() or any(not s for s in items):
        raise UserError(f"--{what} must be a comma-separated list of indices, got {text!r}")
    out: set[int] = set()
    for item in items:
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", item)
        if m is None or (m.group(2) is not None and not ranges):
            form = "N or N-M" if ranges else "N"
            raise UserError(f"--{what}: {item!r} is not a non-negative integer ({form})")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise UserError(f"--{what}: range {item!r} runs backwards")
        out.update(range(lo, hi + 1))
    return sorted(out)


def parse_tokens(text: str) -> list[int]:
    """"1,2,3" -> [1, 2, 3], in order, repeats kept."""
    items = [s.strip() for s in text.split(",")]
    if not text.strip() or any(not s for s in items):
        raise UserError(f"--tokens must be comma-separated token ids, got {text!r}")
    bad = [s for s in items if not re.fullmatch(r"\d+", s)]
    if bad:
        raise UserError(f"--tokens: {bad[0]!r} is not a non-negative integer token id")
    return [int(s) for s in items]


def read_text(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"text file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"text file {path} is not UTF-8 text") from None
    if not text.strip():
        raise UserError(f"text file {path} is empty")
    return text


def _tokenizer(loaded: LoadedModel):
    if loaded.tokenizer_path is None:
        return None
    tk = require("tokenizers", f"reading {loaded.tokenizer_path.name}")
    try:
        return tk.Tokenizer.from_file(str(loaded.tokenizer_path))
    except Exception as err:  # tokenizers raises a bare Exception subclass
        raise UserError(f"{loaded.tokenizer_path} is not a valid tokenizer: "
                        f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None


def token_labels(tokenizer, ids: list[int]) -> list[str]:
    """Each id decoded on its own (readable text such as ' the'), falling back to the
    vocabulary string, then to the id."""
    out = []
    for i in ids:
        try:
            text = tokenizer.decode([i], skip_special_tokens=False)
        except Exception:  # an id outside the tokenizer's vocabulary (padded embedding rows)
            text = ""
        out.append(text or tokenizer.id_to_token(i) or str(i))
    return out


class _LayerBar:
    """A rich progress bar over the probed layers; nothing when quiet or not a terminal."""

    def __init__(self, quiet: bool, total: int):
        self.enabled = not quiet and sys.stderr.isatty()
        self.total = total
        self.bar = None

    def __enter__(self) -> _LayerBar:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.bar = Progress(TextColumn("probing layers"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=Console(stderr=True),
                                transient=False)
            self.bar.start()
            self.task = self.bar.add_task("layers", total=self.total)
        return self

    def advance(self, _layer: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def probe_command(path: Path, out: Path, text_file: Path | None, tokens: str | None,
                  layers: str | None, channels: str | None, quiet: bool) -> Path:
    """Load the checkpoint at `path`, probe it on the text or token ids, write probe.json,
    figures/ and index.html into `out`; returns the path of index.html."""
    if (text_file is None) == (tokens is None):
        raise UserError("give exactly one of --text-file F or --tokens 1,2,3")
    token_ids = parse_tokens(tokens) if tokens is not None else None
    text = read_text(Path(text_file)) if text_file is not None else None
    layer_list = parse_index_list(layers, "layers", ranges=True) if layers is not None else None
    channel_list = parse_index_list(channels, "channels", ranges=False) \
        if channels is not None else None
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a directory")
    sw = Stopwatch()
    with sw("load"):
        loaded = load_checkpoint(path)
    with sw("tokenize"):
        tok = _tokenizer(loaded)
        if text is not None:
            if tok is None:
                raise UserError(f"no tokenizer.json beside {loaded.source} to tokenise "
                                f"{text_file}: pass --tokens instead")
            token_ids = tok.encode(text, add_special_tokens=False).ids
            if not token_ids:
                raise UserError(f"text file {text_file} gives no tokens")
        assert token_ids is not None
        bad = [t for t in token_ids if t >= loaded.spec.vocab_size]
        if bad:
            raise UserError(f"token id {bad[0]} is out of the vocabulary "
                            f"[0, {loaded.spec.vocab_size})")
        labels = token_labels(tok, token_ids) if tok is not None else None
    spec = loaded.spec
    layer_list, channel_list = resolve_selection(spec, layer_list, channel_list)
    n = len(layer_list)
    kind = "head" if spec.arch == "mamba2" else "channel"
    writer = ReportWriter(out, channel_list, kind, labels)
    with _LayerBar(quiet, n) as bar, single_torch_thread():
        def on_layer(lp) -> None:
            writer.layer(lp)
            bar.advance(lp.layer)

        res = probe(loaded, token_ids, layers=layer_list, channels=channel_list, labels=labels,
                    on_layer=on_layer, sw=sw)
    page = writer.finish(res, sw)
    if not quiet and res.truncated_from:
        print(f"note: the input has {res.truncated_from} tokens; probed the first {res.T}",
              file=sys.stderr)
    return page


@contextmanager
def single_torch_thread() -> Iterator[None]:
    """torch (and the fused Numba scans, which follow torch's thread count) on one thread for
    the probe, restored afterwards: two OpenMP intra-op threads next to any other busy process
    spin-wait at every small op, and the probe measured up to 4x slower that way on a 2-core
    machine (module doc)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
