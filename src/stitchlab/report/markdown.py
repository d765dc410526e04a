"""The report as Markdown: the same sections and tables as the HTML page, figures linked."""

from __future__ import annotations

from .document import Section, Table


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(t: Table) -> str:
    lines = [f"**{_cell(t.caption)}**", "",
             "| " + " | ".join(_cell(h) for h in t.head) + " |",
             "|" + "|".join("---" if k == 0 else "---:" for k in range(len(t.head))) + "|"]
    for row in t.rows:
        lines.append("| " + " | ".join(_cell(c.text) for c in row) + " |")
    return "\n".join(lines)


def render(sections: list[Section], title: str, meta: str) -> str:
    """The whole document as a string; image links are relative to the run directory."""
    out = [f"# {title}", "", meta, ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        for p in s.paragraphs:
            out += [p, ""]
        for t in s.tables:
            out += [_table(t), ""]
        for f in s.figures:
            out += [f"![{f.title}](figures/{f.name}.png)", "",
                    f"*{f.title}.* {f.caption} ([SVG](figures/{f.name}.svg))", ""]
    return "\n".join(out)
