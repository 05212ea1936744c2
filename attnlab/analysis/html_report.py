"""A self-contained HTML page: matplotlib figures embedded as base64 PNGs, plain tables.

Opens offline (no scripts, no external files). Used by `attnlab analyze`
(`analyze_cli`); `figure_tag` closes the figure it embeds.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:1em auto;padding:0 1em}"
         "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;"
         "text-align:right}img{max-width:100%}.refused{color:#a33}")


def figure_tag(fig, alt: str, dpi: int = 90) -> str:
  """<img> with `fig` as an embedded PNG (data URI); closes the figure."""
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
  plt.close(fig)
  data = base64.b64encode(buf.getvalue()).decode("ascii")
  return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def table(header: Sequence[str], rows: Sequence[Sequence], fmt: str = "{:.3g}") -> str:
  """An HTML table; float cells formatted with `fmt`."""
  def cell(v):
    return fmt.format(v) if isinstance(v, float) else html.escape(str(v))
  head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
  body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
  return f"<table><tr>{head}</tr>{body}</table>"


def section(title: str, *parts: str) -> str:
  """<h2>title</h2> followed by the parts (already HTML)."""
  return f"<h2>{html.escape(title)}</h2>\n" + "\n".join(parts)


def paragraph(text: str, cls: str = "") -> str:
  """<p> with escaped text."""
  attr = f' class="{cls}"' if cls else ""
  return f"<p{attr}>{html.escape(text)}</p>"


def page(title: str, sections: Sequence[str]) -> str:
  """The whole document."""
  return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
          f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n"
          + "\n".join(sections) + "\n</body></html>\n")


__all__ = ["figure_tag", "page", "paragraph", "section", "table"]
