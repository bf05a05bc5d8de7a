"""The report's HTML pieces, written once: escaping, embedded figures, tables, sections, intervals, JSON reading.

Every report module formats with these; none of them computes a number.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

TABLE_ROWS = 40  # rows shown per table; the rest are counted and the file named

def esc(value: Any) -> str:
    """Escaped text for HTML (None as empty)."""
    return html.escape("" if value is None else str(value), quote=True)


def png_for_page(path: Path) -> bytes:
    """The PNG as embedded: the file itself, or its 256-colour version when that is smaller (plots have few
    colours; this keeps a report with dozens of figures well under its 5 MB budget)."""
    import io

    from PIL import Image

    raw = Path(path).read_bytes()
    with Image.open(io.BytesIO(raw)) as image:
        if image.mode == "P":
            return raw
        small = io.BytesIO()
        image.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(small, "PNG",
                                                                                        optimize=True)
    return small.getvalue() if small.tell() < len(raw) else raw

def img(path: Path, caption: str) -> str:
    """A PNG embedded as a captioned figure (the file's name beside the caption: its PDF lies alongside)."""
    data = base64.b64encode(png_for_page(path)).decode("ascii")
    alt = Path(path).stem.replace("_", " ")
    return (f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{esc(caption)} <span class=file>({esc(Path(path).name)}, PDF alongside)</span>"
            "</figcaption></figure>")

def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)

def html_table(headers: list[str], rows: list[list[Any]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for k, row in enumerate(rows):
        cls = f' class="{esc(classes[k])}"' if classes and classes[k] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{esc(fmt(v))}</td>" for v in row) + "</tr>")
    # A wide table scrolls inside its own box instead of widening the page.
    return f"<div class=scroll><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"

def frame_table(frame, name: str, limit: int = TABLE_ROWS) -> str:
    """A DataFrame as a table; value/low/high (or chi/low/high) columns shown as one 'value [low, high]' column."""
    frame = frame.copy()
    for point in ("value", "chi"):
        if {point, "low", "high"} <= set(frame.columns):
            frame[f"{point} [95% CI]"] = [f"{v:.4g} [{lo:.4g}, {hi:.4g}]"
                                          for v, lo, hi in zip(frame[point], frame["low"], frame["high"], strict=True)]
            frame = frame.drop(columns=[point, "low", "high"])
    shown = frame.head(limit)
    note = ""
    if len(frame) > limit:
        note = f"<p class=note>First {limit} of {len(frame)} rows; all of them in {esc(name)}.</p>"
    return html_table([str(c) for c in shown.columns], shown.astype(object).values.tolist()) + note

def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{body}</section>'

def not_run(what: str) -> str:
    return f"<p class=notrun>{esc(what)}: not run.</p>"

def interval(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return ""
    if low is None or high is None:
        return f"{value:.3g}"
    return f"{value:.3g} [{low:.3g}, {high:.3g}]"
