"""docs/benchmarks.md is shared by every benchmark (and `edgecut demo --bench-doc`): each one owns a
`## Title` section and rewrites only that section, so reruns of one never touch the figures of another."""

from __future__ import annotations

import os
from pathlib import Path


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
