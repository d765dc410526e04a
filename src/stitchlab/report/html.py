"""The report as one self-contained HTML file: inline style, figures as data: URIs, no script.

Nothing in the page refers to the network, so it reads the same offline, from an e-mail
attachment or a CI artefact. Tables carry stable ids (``headline-models``, ``headline-splice``,
...) and cells carry ``data-*`` attributes, so tests and scripts can find the numbers.
"""

from __future__ import annotations

import base64
from html import escape

from .document import Section, Table
from .figures import RenderedFigure

STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f;
       max-width: 1100px; margin: 0 auto; padding: 1.5rem 1.25rem 4rem; background: #fff; }
h1 { font-size: 1.6rem; margin: 0 0 .25rem; }
h2 { font-size: 1.25rem; margin: 2.2rem 0 .6rem; padding-bottom: .2rem;
     border-bottom: 1px solid #ddd; }
p.meta { color: #666; margin: 0 0 1rem; font-size: .9rem; }
nav { font-size: .9rem; margin: .5rem 0 1rem; }
nav a { margin-right: 1rem; color: #1b6ca8; text-decoration: none; }
p.reading { font-size: 1.02rem; background: #f5f8fb; border-left: 4px solid #1b6ca8;
            padding: .7rem 1rem; }
table { border-collapse: collapse; margin: .6rem 0 1.2rem; font-size: .9rem; }
caption { text-align: left; font-weight: 600; padding-bottom: .3rem; white-space: nowrap; }
th, td { border: 1px solid #d7d7d7; padding: .25rem .6rem; }
thead th { background: #f0f0f0; }
td { text-align: right; font-variant-numeric: tabular-nums; }
tbody th { text-align: left; font-weight: 600; background: #fafafa; }
td.own { background: #eef5ea; }
td.flagged { color: #b00020; font-weight: 600; text-align: center; }
table.kv td { text-align: left; font-family: ui-monospace, monospace; font-size: .85rem;
              word-break: break-all; }
div.figures { display: flex; flex-wrap: wrap; gap: 0 1.5rem; align-items: flex-start; }
figure { margin: 1rem 0 1.6rem; flex: 0 1 auto; max-width: 100%; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: .88rem; margin-top: .3rem; }
figcaption a { color: #1b6ca8; }
div.tables { display: flex; flex-wrap: wrap; gap: 0 2rem; align-items: flex-start; }
"""


def _table(t: Table, kv: bool = False) -> str:
    head = "".join(f"<th scope=\"col\">{escape(h)}</th>" for h in t.head)
    body = []
    for row in t.rows:
        cells = []
        for c in row:
            attrs = "".join(f' {escape(k)}="{escape(v)}"' for k, v in c.attrs.items())
            if c.header:
                cells.append(f"<th scope=\"row\"{attrs}>{escape(c.text)}</th>")
            else:
                cells.append(f"<td{attrs}>{escape(c.text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cls = ' class="kv"' if kv else ""
    return (f'<table id="{escape(t.id)}"{cls}><caption>{escape(t.caption)}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(body) +
            "\n</tbody></table>")


def _figure(f: RenderedFigure) -> str:
    data = base64.b64encode(f.png).decode("ascii")
    width, height = png_size(f.png)
    # A figure caption no wider than its image keeps side-by-side figures apart.
    return (f'<figure id="fig-{escape(f.name)}" style="width: {width}px">'
            f'<img src="data:image/png;base64,{data}" width="{width}" height="{height}" '
            f'alt="{escape(f.title)}"><figcaption><b>{escape(f.title)}.</b> '
            f'{escape(f.caption)} <a href="figures/{escape(f.name)}.svg">SVG</a></figcaption>'
            f"</figure>")


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's header chunk."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR", "not a PNG"
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _section(s: Section) -> str:
    parts = [f'<section id="{escape(s.id)}">', f"<h2>{escape(s.title)}</h2>"]
    for k, p in enumerate(s.paragraphs):
        cls = ' class="reading" id="reading"' if s.id == "summary" and k == 0 else ""
        parts.append(f"<p{cls}>{escape(p)}</p>")
    if s.tables:
        tables = [_table(t, kv=t.id in ("config-table", "environment-table")) for t in s.tables]
        parts.append('<div class="tables">\n' + "\n".join(tables) + "\n</div>")
    if s.figures:
        parts.append('<div class="figures">')
        parts += [_figure(f) for f in s.figures]
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)


def render(sections: list[Section], title: str, meta: str) -> str:
    """The whole page as a string."""
    nav = "".join(f'<a href="#{escape(s.id)}">{escape(s.title)}</a>' for s in sections)
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
        f"<title>{escape(title)}</title>",
        f"<style>{STYLE}</style>",
        "</head>",
        "<body>",
        f"<header><h1>{escape(title)}</h1><p class=\"meta\">{escape(meta)}</p></header>",
        f"<nav>{nav}</nav>",
        *(_section(s) for s in sections),
        "</body>",
        "</html>",
        "",
    ])
