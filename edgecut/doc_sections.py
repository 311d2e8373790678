"""docs/benchmarks.md is shared by every benchmark: each one owns a `## Title` section and rewrites
only that section, so reruns of one benchmark never touch the figures of another."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DOC = Path("docs/benchmarks.md")


def write_section(path: Path, title: str, body: str) -> None:
    """Replace the section headed `## {title}` (or append it) with `body` (which omits the heading)."""
    heading = f"## {title}\n"
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    text = heading + "\n" + body.strip("\n") + "\n"
    start = doc.find(heading)
    if start == -1:
        doc = doc.rstrip("\n") + "\n\n" + text
    else:
        end = doc.find("\n## ", start + len(heading))
        doc = doc[:start] + text + (doc[end:] if end != -1 else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(doc)
    os.replace(tmp, path)


def write_bullet(path: Path, title: str, lead: str, text: str, width: int = 104) -> None:
    """Replace the bullet that starts `- **{lead}**` in section `## {title}` (or add it at the end of the
    section's list) with `- **{lead}** {text}`, wrapped; every other line of the file is kept."""
    import textwrap

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
