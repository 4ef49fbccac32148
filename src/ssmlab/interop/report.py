"""The probe's output folder: probe.json (every number), index.html (self-contained: inline CSS,
no scripts, figures as PNG files under figures/), one attention figure per probed layer.

Figures (matplotlib Agg, Figure objects without pyplot so nothing global is touched):
    summary.png                 s_A, ρ_A and its bound, ln capacity and mean Δ over the layers
    tokens.png                  layer × token maps of the gate and of the retention, token labels
    memory.png                  per layer the histogram of log10 memory factors, and the mean
                                factor per token
    layer_XX_attention.png      |α_{t,s}| of the channel mean (large) and the chosen channels
                                (tiles), log colour scale (4 decades below each map's maximum),
                                token labels (16 per axis on the mean map, 5 per tile) when a
                                tokenizer is present, positions otherwise
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ssmlab.interop.results import DEFINITIONS, LayerProbe, ProbeResult, Stopwatch

MAX_TICKS = 24  # token labels per axis; each tick costs ~3 ms to build and draw here
ATTENTION_TICKS = 16  # on the large channel-mean map
TILE_TICKS = 5  # per tile of the channel mosaic
DPI = 72


def _fig(w: float, h: float) -> Figure:
    """A Figure with the Agg canvas and no layout engine (constrained layout costs seconds per
    figure here: it measures every tick label repeatedly); margins are set by hand."""
    fig = Figure(figsize=(w, h), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _short(label: str, n: int = 10) -> str:
    label = label.replace("\n", "\\n").replace("\t", "\\t")
    return label if len(label) <= n else label[: n - 1] + "…"


def _ticks(T: int, shown: int, labels: list[str] | None,
           most: int = MAX_TICKS) -> tuple[np.ndarray, list[str]]:
    """At most `most` evenly spaced tokens: tick positions in display pixels (the matrix may
    be pooled to `shown` rows) and their labels (token text, or positions without a
    tokenizer)."""
    pos = np.unique(np.linspace(0, T - 1, min(T, most)).round().astype(int))
    scale = shown / T
    text = [_short(labels[p]) if labels else str(p) for p in pos]
    return (pos + 0.5) * scale - 0.5, text


def _log_rel(m: np.ndarray) -> tuple[np.ndarray, float]:
    """log10(|α| / max|α|) clipped to [-4, 0], NaN above the diagonal (drawn white)."""
    top = float(m.max())
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.log10(m / top) if top > 0 else np.full_like(m, -4.0)
    S = m.shape[-1]
    return np.where(np.tril(np.ones((S, S), dtype=bool)), np.clip(rel, -4.0, 0.0), np.nan), top


def attention_figure(lp: LayerProbe, channels: list[int], kind: str, T: int,
                     labels: list[str] | None, path: Path) -> None:
    """Left: the channel mean, large, with token labels on both axes; right: the chosen
    channels as a mosaic of small tiles in one image, fewer token labels per tile. Colour: log10(|α| / max|α|) in [-4, 0]
    per tile. Two Axes and one image each keep matplotlib's per-artist cost low (9 separate
    panels with labels cost ~1 s per layer on this machine)."""
    mats = lp.alpha_display  # (k + 1, L', L'): chosen channels, then the mean
    k, S = mats.shape[0] - 1, mats.shape[-1]
    cols = min(3, max(k, 1))
    rows = max(1, math.ceil(k / cols))
    gap = max(4, round(0.14 * S))  # room for each tile's title
    fig = _fig(15, 7.4)
    ax = fig.add_axes((0.07, 0.17, 0.4, 0.74))
    rel, top = _log_rel(mats[-1])
    im = ax.imshow(rel, vmin=-4.0, vmax=0.0, cmap="magma", interpolation="nearest")
    pos, text = _ticks(T, S, labels, ATTENTION_TICKS)
    ax.set_yticks(pos, text, fontsize=6)
    ax.set_xticks(pos, text, fontsize=6, rotation=90)
    ax.set_ylabel("t (output token)")
    ax.set_xlabel("s (input token)")
    ax.set_title(f"mean over all {kind}s: max {top:.2g}, lookback {lp.lookback['mean']:.1f} "
                 "tokens", fontsize=9)
    big = np.full((rows * (S + gap), cols * (S + gap) - gap), np.nan)
    mosaic = fig.add_axes((0.54, 0.12, 0.38, 0.8))
    for i in range(k):
        r, c = divmod(i, cols)
        tile, top = _log_rel(mats[i])
        big[r * (S + gap) + gap:r * (S + gap) + gap + S, c * (S + gap):c * (S + gap) + S] = tile
        mosaic.text(c * (S + gap) + S / 2, r * (S + gap) + gap - 0.5,
                    f"{kind} {channels[i]}: max {top:.2g}, lb {lp.lookback[str(channels[i])]:.1f}",
                    fontsize=7, ha="center", va="bottom")
    mosaic.imshow(big, vmin=-4.0, vmax=0.0, cmap="magma", interpolation="nearest")
    pos, text = _ticks(T, S, labels, TILE_TICKS)  # fewer labels per tile, same tokens
    used_rows = math.ceil(k / cols)
    mosaic.set_yticks(np.concatenate([pos + r * (S + gap) + gap for r in range(used_rows)]),
                      text * used_rows, fontsize=5)
    mosaic.set_xticks(np.concatenate([pos + c * (S + gap) for c in range(cols)]), text * cols,
                      fontsize=5, rotation=90)
    for side in mosaic.spines.values():
        side.set_visible(False)
    cax = fig.add_axes((0.94, 0.3, 0.01, 0.4))
    fig.colorbar(im, cax=cax, label="log10 |α_(t,s)| / max")
    fig.suptitle(f"layer {lp.layer}: implied attention α_(t,s) (rows t, columns s ≤ t; "
                 "lb = lookback in tokens)", fontsize=10)
    fig.savefig(path)


def tokens_by_layers_figure(res: ProbeResult, path: Path) -> None:
    """Two layer × token maps: the gate (which tokens each layer lets in) and the retention of
    each token at the end of the input (how long each layer remembers it)."""
    ls = [lp.layer for lp in res.layers]
    gate = np.stack([lp.gate for lp in res.layers])  # (layers, T)
    ret = np.stack([lp.memory["retention"] for lp in res.layers])  # (layers, T)
    fig = _fig(13, 2.4 + 2 * max(1.2, 0.16 * len(ls)))
    fig.subplots_adjust(left=0.07, right=0.93, bottom=0.16, top=0.93, hspace=0.35)
    a1, a2 = fig.subplots(2, 1)
    pos, text = _ticks(res.T, res.T, res.labels, MAX_TICKS * 2)
    for ax, data, title, lab in (
            (a1, gate, "gate g_t = mean_c Δ_t[c] / mean Δ[c]: which tokens each layer lets in",
             "g_t"),
            (a2, ret, "retention: mean Π_(k>s) exp(Δ_k A) of token s at the last token",
             "retention")):
        im = ax.imshow(data, aspect="auto", interpolation="nearest", cmap="viridis")
        fig.colorbar(im, ax=ax, pad=0.01, label=lab)
        ax.set_yticks(range(len(ls)), [str(v) for v in ls], fontsize=6)
        ax.set_ylabel("layer")
        ax.set_title(title, fontsize=9)
        ax.set_xticks(pos, text, fontsize=6, rotation=90)
    fig.savefig(path)


def memory_figure(res: ProbeResult, path: Path) -> None:
    """Per layer: the histogram of log10 memory factors (rows normalised), and the kept
    fraction per token."""
    ls = [lp.layer for lp in res.layers]
    hist = np.stack([lp.memory["hist"] for lp in res.layers]).astype(float)
    hist /= np.maximum(hist.sum(1, keepdims=True), 1)
    edges = res.layers[0].memory["edges"]
    keep = np.stack([lp.memory["keep"] for lp in res.layers])
    fig = _fig(13, 1.4 + max(1.2, 0.16 * len(ls)))
    fig.subplots_adjust(left=0.07, right=0.95, bottom=0.18, top=0.88, wspace=0.25)
    a1, a2 = fig.subplots(1, 2)
    with np.errstate(divide="ignore"):
        im = a1.imshow(np.log10(hist), aspect="auto", interpolation="nearest", cmap="Blues",
                       extent=(edges[0], edges[-1], len(ls) - 0.5, -0.5), vmin=-5, vmax=0)
    fig.colorbar(im, ax=a1, pad=0.01, label="log10 fraction")
    a1.set_xlabel("log10 memory factor exp(Δ_t A) (left bin: ≤ 1e-8)")
    a1.set_title("memory factors per layer", fontsize=9)
    im = a2.imshow(keep, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=1)
    fig.colorbar(im, ax=a2, pad=0.01, label="mean factor")
    a2.set_xlabel("token position")
    a2.set_title("mean memory factor per token (1: keeps, 0: resets)", fontsize=9)
    for ax in (a1, a2):
        ax.set_yticks(range(len(ls)), [str(v) for v in ls], fontsize=6)
        ax.set_ylabel("layer")
    fig.savefig(path)


def summary_figure(res: ProbeResult, path: Path) -> None:
    ls = [lp.layer for lp in res.layers]
    get = {k: np.array([lp.scalars[k] for lp in res.layers], dtype=float)
           for k in ("s_A", "rho_A", "rho_A_bound", "log_capacity_sqrt_m", "delta_mean")}
    fig = _fig(13, 3.4)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.16, top=0.88, wspace=0.3)
    a1, a2, a3, a4 = fig.subplots(1, 4)
    a1.plot(ls, get["s_A"], "o-", ms=3)
    a1.set_title("s_A (spectral abscissa)", fontsize=9)
    with np.errstate(divide="ignore", invalid="ignore"):
        a2.semilogy(ls, 1 - get["rho_A"], "o-", ms=3, label="1 - ρ_A (this input)")
        a2.semilogy(ls, 1 - get["rho_A_bound"], "s--", ms=3, label="1 - ρ_A bound")
    a2.legend(fontsize=7)
    a2.set_title("distance of ρ_A to 1", fontsize=9)
    a3.plot(ls, get["log_capacity_sqrt_m"], "o-", ms=3)
    a3.set_title(f"ln capacity·√m at T = {res.T}", fontsize=9)
    a4.plot(ls, get["delta_mean"], "o-", ms=3)
    a4.set_title("mean Δ", fontsize=9)
    for ax in (a1, a2, a3, a4):
        ax.set_xlabel("layer")
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.savefig(path)


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1300px;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;
text-align:right}th{background:#f3f3f3}td.l{text-align:left}img{max-width:100%}
code{background:#f3f3f3;padding:0 3px}.tok{font-family:monospace;background:#fde;padding:0 2px}
h2{margin-top:2em;border-bottom:1px solid #ddd}dl dt{font-weight:600}"""


def _f(v: Any, fmt: str = ".4g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return format(v, fmt)


def _tok(e: dict[str, Any]) -> str:
    text = e.get("label", str(e["token"]))
    return f'<span class="tok">{html.escape(_short(text, 20))}</span>@{e["position"]}'


def write_html(res: ProbeResult, out: Path, figs: dict[int, str]) -> Path:
    kind = "head" if res.spec["arch"] == "mamba2" else "channel"
    spec = res.spec
    rows = []
    for lp in res.layers:
        s = lp.scalars
        rows.append(
            f"<tr><td>{lp.layer}</td><td>{_f(s['s_A'])}</td><td>{_f(s['B_A'])}</td>"
            f"<td>{_f(s['rho_A'], '.6f')}</td><td>{_f(s['rho_A_bound'], '.6f')}</td>"
            f"<td>{_f(s['log_S2'])}</td><td>{_f(s['S2_fraction_of_limit'], '.3g')}</td>"
            f"<td>{_f(s['log_capacity_sqrt_m'])}</td><td>{_f(s['delta_mean'])}</td>"
            f"<td>{_f(lp.lookback['mean'], '.1f')}</td>"
            f"<td class=l>{' '.join(_tok(e) for e in lp.top_tokens[:5])}</td></tr>")
    sections = []
    for lp in res.layers:
        att = figs[lp.layer]
        per_ch = "".join(
            f"<tr><td>{c}</td><td>{_f(float(lp.delta_stats['mean'][c]))}</td>"
            f"<td>{_f(float(lp.delta_stats['std'][c]))}</td>"
            f"<td>{_f(float(lp.delta_stats['min'][c]))}</td>"
            f"<td>{_f(float(lp.delta_stats['max'][c]))}</td>"
            f"<td>{_f(float(lp.s_A_channel[c]))}</td><td>{_f(lp.lookback[str(c)], '.1f')}</td>"
            f"<td class=l>{' '.join(_tok(e) for e in lp.channel_top_tokens[c])}</td></tr>"
            for c in res.channels)
        tau = lp.memory["tau"]
        tau = tau[np.isfinite(tau)]
        tau_txt = (f"median {np.median(tau):.3g}, 90th percentile {np.quantile(tau, 0.9):.3g}"
                   if tau.size else "–")
        sections.append(
            f'<h2 id="layer{lp.layer}">Layer {lp.layer}</h2>'
            f"<p>s_A = {_f(lp.scalars['s_A'])}, ρ_A = {_f(lp.scalars['rho_A'], '.6f')} "
            f"(bound {_f(lp.scalars['rho_A_bound'], '.6f')}), memory horizons in tokens: "
            f"{tau_txt}.</p>"
            f"<table><tr><th>{kind}</th><th>mean Δ</th><th>std Δ</th><th>min Δ</th>"
            f"<th>max Δ</th><th>s_A,c</th><th>lookback</th><th>largest Δ at</th></tr>"
            f"{per_ch}</table>"
            f'<p><img src="{att}" alt="attention layer {lp.layer}"></p>')
    trunc = (f" (cut from {res.truncated_from})" if res.truncated_from else "")
    defs = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>"
                   for k, v in DEFINITIONS.items())
    timing = ", ".join(f"{k} {v:.2f} s" for k, v in res.timings.items())
    page = f"""<!DOCTYPE html><html><head><meta charset="utf-8">
<title>ssmlab probe: {html.escape(Path(res.source).name)}</title><style>{_CSS}</style></head><body>
<h1>ssmlab probe</h1>
<p><code>{html.escape(res.source)}</code> ({html.escape(res.fmt)}, {spec['arch']}): {spec['n_layer']}
layers, d_model {spec['d_model']}, d_state {spec['d_state']}, {kind}s per layer {_channels(spec)},
vocabulary {spec['vocab_size']}. Input: T = {res.T} tokens{trunc}; {kind}s shown:
{', '.join(map(str, res.channels))}. All numbers are in <code>probe.json</code>.</p>
<p><img src="figures/summary.png" alt="summary"></p>
<p><img src="figures/tokens.png" alt="gate and retention per layer and token"></p>
<p><img src="figures/memory.png" alt="memory factors per layer"></p>
<table><tr><th>layer</th><th>s_A</th><th>B_A</th><th>ρ_A</th><th>ρ_A bound</th><th>ln S₂</th>
<th>S₂ / S₂(∞)</th><th>ln capacity·√m</th><th>mean Δ</th><th>lookback (mean α)</th>
<th class=l>gate: top tokens</th></tr>{''.join(rows)}</table>
{''.join(sections)}
<h2>Definitions</h2><dl>{defs}</dl>
<p>Timings: {html.escape(timing)}.</p>
</body></html>"""
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def _channels(spec: dict[str, Any]) -> int:
    d_inner = spec["expand"] * spec["d_model"]
    return d_inner // spec["headdim"] if spec["arch"] == "mamba2" else d_inner


class ReportWriter:
    """Writes the probe's folder: `layer(lp)` draws a layer's attention figure as soon as the
    layer is probed (so a progress bar advances with the figures), `finish(res)` draws the
    summaries and writes probe.json and index.html.

    Drawing in a second thread or process while the next layers are probed was measured and
    dropped: a thread shares the GIL with the probe (matplotlib is Python-bound), and a spawned
    process was no faster on the shared 2-core machine (docs/interop.md)."""

    def __init__(self, out: str | Path, channels: list[int], kind: str,
                 labels: list[str] | None):
        self.out = Path(out)
        self.figdir = self.out / "figures"
        self.figdir.mkdir(parents=True, exist_ok=True)
        self.channels, self.kind, self.labels = channels, kind, labels
        self.figs: dict[int, str] = {}
        self.sw = Stopwatch()

    def layer(self, lp: LayerProbe) -> None:
        name = f"layer_{lp.layer:02d}_attention.png"
        T = lp.gate.shape[0]
        with self.sw("layer figures"):
            attention_figure(lp, self.channels, self.kind, T,
                             self.labels[:T] if self.labels else None, self.figdir / name)
        self.figs[lp.layer] = f"figures/{name}"

    def finish(self, res: ProbeResult, sw: Stopwatch | None = None) -> Path:
        for lp in res.layers:
            if lp.layer not in self.figs:
                self.layer(lp)
        with self.sw("summary figures"):
            summary_figure(res, self.figdir / "summary.png")
            tokens_by_layers_figure(res, self.figdir / "tokens.png")
            memory_figure(res, self.figdir / "memory.png")
        sw = sw or Stopwatch()
        with sw("json and html"):
            res.timings.update(sw.seconds | self.sw.seconds)
            (self.out / "probe.json").write_text(
                json.dumps(res.as_json(), indent=1, allow_nan=False), encoding="utf-8")
            return write_html(res, self.out, self.figs)


def write_report(res: ProbeResult, out: str | Path, sw: Stopwatch | None = None) -> Path:
    """Write probe.json, the figures and index.html into `out` (no threads); returns
    index.html's path."""
    kind = "head" if res.spec["arch"] == "mamba2" else "channel"
    return ReportWriter(out, res.channels, kind, res.labels).finish(res, sw)
