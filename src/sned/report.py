"""Report writing: Markdown + HTML tables, cost-vs-quality plots, embedded videos.

A report is a list of result rows (dicts) plus media; :func:`write_report` renders both formats
from the same rows so they never disagree.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Sequence

from .store.files import atomic_write_text

COLUMNS = [("preset", "Model"), ("params", "#Params"), ("macs", "GMACs/forward"),
           ("latency_ms", "Denoiser ms"), ("sample_s", "Sample s"),
           ("val_loss_init", "Val loss at init"), ("val_loss", "Val loss"),
           ("caption_color", "Colour acc."), ("caption_all", "Caption acc."),
           ("caption_n", "n"), ("ssr_psnr_db", "SSR consistency dB"), ("fvd", "FVD"),
           ("kvd", "KVD")]
CAPTION_COLUMNS = [("preset", "Model"), ("resolution", "Resolution"),
                   ("caption_color", "Colour"), ("caption_shape", "Shape"),
                   ("caption_direction", "Motion"), ("caption_all", "All three"),
                   ("caption_n", "n")]
"""Per-attribute caption accuracy; each cell shows its 95 % Wilson interval."""
COHERENCE_COLUMNS = [("coherent", "Coherent"), ("present_all", "Object in every frame"),
                     ("jump_ratio", "Jump / prompted speed"),
                     ("track_residual", "Track residual (frame)")]
"""Temporal coherence of the dominant object's track (:mod:`sned.metrics.coherence`), each
cell with its 95 % interval."""
_PERCENT = ("coherent", "present_all", "track_residual")


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, dict) and "mean" in value:
        return f"{_fmt(key, value['mean'])} ± {_fmt(key, value.get('std', 0))}"
    if key == "params":
        return f"{value / 1e6:.2f} M"
    if key == "macs":
        return f"{value / 1e9:.2f}"
    if (key.startswith("caption_") and key != "caption_n") or key in _PERCENT:
        return f"{value:.1%}" if key == "track_residual" else f"{value:.0%}"
    if key == "jump_ratio":
        return f"{value:.2f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _cell(key: str, row: dict) -> str:
    """A row's value formatted, with its confidence interval when the row records one
    (``caption_ci[attr]`` for ``caption_<attr>``, ``ssr_psnr_ci`` for ``ssr_psnr_db``)."""
    text = _fmt(key, row.get(key))
    ci = (row.get("caption_ci") or {}).get(key[len("caption_"):]) \
        if key.startswith("caption_") else None
    if ci is not None and row.get(key) is not None:
        text += f" [{ci[0]:.0%}–{ci[1]:.0%}]"
    if key == "ssr_psnr_db" and row.get("ssr_psnr_ci") and row.get(key) is not None:
        lo, hi = row["ssr_psnr_ci"]
        text += f" [{lo:.1f}–{hi:.1f}]"
    if key in _PERCENT + ("jump_ratio",) and row.get(f"{key}_ci") and row.get(key) is not None:
        lo, hi = row[f"{key}_ci"]
        text += f" [{_fmt(key, lo)}–{_fmt(key, hi)}]"
    return text


def markdown_table(rows: Sequence[dict], columns=COLUMNS) -> str:
    cols = [(k, t) for k, t in columns if any(r.get(k) is not None for r in rows)]
    lines = ["| " + " | ".join(t for _, t in cols) + " |",
             "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(k, r) for k, _ in cols) + " |")
    return "\n".join(lines)


def html_table(rows: Sequence[dict], columns=COLUMNS) -> str:
    cols = [(k, t) for k, t in columns if any(r.get(k) is not None for r in rows)]
    head = "".join(f"<th>{html.escape(t)}</th>" for _, t in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(k, r))}</td>"
                                    for k, _ in cols) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def plot_cost_quality(path: Path, rows: Sequence[dict], quality_key: str = "val_loss",
                      label: str = "validation loss (lower is better)") -> Path | None:
    """params vs quality, one line per resolution, points labelled by preset."""
    import matplotlib
    from matplotlib.figure import Figure

    matplotlib.use("Agg", force=False)
    pts = [r for r in rows if r.get(quality_key) is not None]
    if not pts:
        return None
    fig = Figure(figsize=(6, 4), dpi=110)
    ax = fig.add_subplot()
    for res in sorted({r["resolution"] for r in pts}):
        sel = sorted((r for r in pts if r["resolution"] == res), key=lambda r: r["params"])
        xs = [r["params"] / 1e6 for r in sel]
        ys = [r[quality_key] for r in sel]
        ax.plot(xs, ys, marker="o", label=f"{res}px")
        for r, x, y in zip(sel, xs, ys):
            ax.annotate(r["preset"], (x, y), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)
    ax.set_xlabel("parameters of the subnet (M)")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend(title="resolution")
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_loss_curve(path: Path, metrics_files: dict[str, Path]) -> Path | None:
    """Training loss (moving average) per run from ``metrics.jsonl`` files."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5), dpi=110)
    ax = fig.add_subplot()
    drawn = False
    for name, f in metrics_files.items():
        if not Path(f).exists():
            continue
        rows = [json.loads(line) for line in Path(f).read_text().splitlines() if line.strip()]
        rows = [r for r in rows if not r.get("skipped")]
        if not rows:
            continue
        k = max(1, len(rows) // 20)
        losses = [r["loss"] for r in rows]
        smooth = [sum(losses[max(0, i - k):i + 1]) / len(losses[max(0, i - k):i + 1])
                  for i in range(len(losses))]
        ax.plot([r["step"] for r in rows], smooth, label=name)
        drawn = True
    if not drawn:
        return None
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (moving average)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_report(out: Path, title: str, intro: str, sections: list[dict]) -> tuple[Path, Path]:
    """Write ``out/report.md`` and ``out/report.html``.

    Each section: ``{"title": str, "text": str (optional), "rows": [...] (optional),
    "columns": [(key, heading)] (optional, default :data:`COLUMNS`), "images": [relative
    paths] (optional), "videos": [(caption, gif, mp4 or None)]}``.
    """
    md = [f"# {title}", "", intro, ""]
    body = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(intro)}</p>"]
    for s in sections:
        md += [f"## {s['title']}", ""]
        body.append(f"<h2>{html.escape(s['title'])}</h2>")
        if s.get("text"):
            md += [s["text"], ""]
            body.append(f"<p>{html.escape(s['text'])}</p>")
        if s.get("rows"):
            cols = s.get("columns", COLUMNS)
            md += [markdown_table(s["rows"], cols), ""]
            body.append(html_table(s["rows"], cols))
        for img in s.get("images", []):
            md += [f"![{img}]({img})", ""]
            body.append(f'<p><img src="{html.escape(img)}" alt="{html.escape(img)}"></p>')
        if s.get("videos"):
            body.append('<div class="videos">')
            for caption, gif, mp4 in s["videos"]:
                link = f" ([mp4]({mp4}))" if mp4 else ""
                md.append(f"- ![{caption}]({gif}) {caption}{link}")
                mp4_link = f' <a href="{html.escape(mp4)}">mp4</a>' if mp4 else ""
                body.append(f'<figure><img src="{html.escape(gif)}" alt="{html.escape(caption)}">'
                            f"<figcaption>{html.escape(caption)}{mp4_link}</figcaption></figure>")
            body.append("</div>")
            md.append("")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
             "padding:4px 8px;text-align:right}th{background:#f3f3f3}"
             ".videos{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;text-align:center}"
             "figure img{width:128px;image-rendering:pixelated}figcaption{font-size:11px;"
             "max-width:160px}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>")
    md_path, html_path = out / "report.md", out / "report.html"
    atomic_write_text(md_path, "\n".join(md) + "\n")
    atomic_write_text(html_path, page)
    return md_path, html_path
