"""The Summary's bullets in docs/benchmarks.md: a bench rewrites its own bullet and keeps the others."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from edgecut.doc_sections import write_section


def write_bullet(path: Path, title: str, lead: str, text: str, width: int = 104) -> None:
    """Replace the bullet that starts `- **{lead}**` in section `## {title}` (or add it at the end of the
    section's list) with `- **{lead}** {text}`, wrapped; every other line of the file is kept."""
    bullet = textwrap.fill(f"- **{lead}** {text}", width, subsequent_indent="  ", break_on_hyphens=False)
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    heading = f"## {title}\n"
    start = doc.find(heading)
    if start == -1:
        write_section(path, title, bullet)
        return
    body_start = start + len(heading)
    end = doc.find("\n## ", body_start)
    end = len(doc) if end == -1 else end + 1
    lines = doc[body_start:end].split("\n")
    at = next((i for i, ln in enumerate(lines) if ln.startswith(f"- **{lead}**")), None)
    if at is None:
        last = max((i for i, ln in enumerate(lines) if ln.strip()), default=0)
        lines[last + 1 : last + 1] = bullet.split("\n")
    else:
        stop = at + 1
        while stop < len(lines) and lines[stop].startswith("  "):
            stop += 1
        lines[at:stop] = bullet.split("\n")
    doc = doc[:body_start] + "\n".join(lines) + doc[end:]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(doc)
    os.replace(tmp, path)


def tables(markdown: str) -> list[list[dict[str, str]]]:
    """Every pipe table of `markdown` as rows of {column header: cell}, in order: a Summary bullet is
    rendered from the table its section shows, so the test can render it again from the doc alone."""
    found: list[list[dict[str, str]]] = []
    lines = markdown.split("\n")
    for i in range(len(lines) - 1):
        if lines[i].startswith("|") and lines[i + 1].startswith("|---"):
            header = [c.strip() for c in lines[i].strip().strip("|").split("|")]
            rows = []
            for line in lines[i + 2 :]:
                if not line.startswith("|"):
                    break
                rows.append(
                    dict(zip(header, (c.strip() for c in line.strip().strip("|").split("|")), strict=False))
                )
            found.append(rows)
    return found
