"""`python -m edgecut.server.fleet.state.migrations revision "what changed"`: draft the next revision file
from the difference between the models and a database at the newest revision (review it before use)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command
from sqlalchemy import create_engine

from edgecut.server.fleet.state.migrations import config, head, upgrade


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "revision":
        print(__doc__, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'head.sqlite3'}"
        engine = create_engine(url)
        upgrade(engine, url)
        with engine.begin() as conn:
            cfg = config(conn)
            cfg.set_main_option("file_template", "rev%%(rev)s_%%(slug)s")
            command.revision(cfg, message=argv[1], autogenerate=True, rev_id=f"{int(head()) + 1:04d}")
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
