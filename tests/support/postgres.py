"""A throw-away PostgreSQL server on loopback, from Debian's `postgresql` package (initdb + postgres).

PostgreSQL refuses to run as root, so under root the cluster belongs to the `postgres` user (created by
the package) or `nobody`. The server dies with the test process (parent-death signal), fsync is off
and authentication is `trust` on 127.0.0.1 only: it is for tests, never for data.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from edgecut.broker import die_with_parent, free_port

from .processes import child_log, log_tail, stop
from .waiting import WAIT_S

SUPERUSER = "edgecut"


def bin_dir() -> Path | None:
    """The newest installed PostgreSQL's bin directory, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def missing_reason() -> str | None:
    """Why no PostgreSQL can be started here, or None when one can."""
    if bin_dir() is None:
        return "PostgreSQL is not installed (apt-get install postgresql); .ci/run installs it"
    if os.geteuid() == 0 and _run_as() is None:
        return "running as root and no `postgres` or `nobody` user to own the cluster"
    return None


def _run_as() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    return None


class PostgresServer:
    def __init__(self) -> None:
        bindir = bin_dir()
        if bindir is None:
            raise RuntimeError(missing_reason())
        self.bindir = bindir
        self.port = free_port()
        self._tmp = tempfile.mkdtemp(prefix="edgecut-pg-")
        os.chmod(self._tmp, 0o755)
        self.data = Path(self._tmp) / "data"
        self.data.mkdir(mode=0o700)
        self._user = _run_as()
        if self._user is not None:
            os.chown(self.data, self._user.pw_uid, self._user.pw_gid)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = child_log("postgres")

    def _as_owner(self) -> dict[str, object]:
        return {} if self._user is None else {"user": self._user.pw_uid, "group": self._user.pw_gid}

    def start(self) -> PostgresServer:
        subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
            cwd=self._tmp,
            **self._as_owner(),  # type: ignore[arg-type]
        )
        self._proc = subprocess.Popen(
            [
                str(self.bindir / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-h",
                "127.0.0.1",
                "-k",
                str(self.data),
                "-F",
                "-c",
                "max_connections=200",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            cwd=self._tmp,
            start_new_session=True,
            preexec_fn=die_with_parent,
            **self._as_owner(),  # type: ignore[arg-type]
        )
        import psycopg

        deadline = time.monotonic() + WAIT_S
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited at start: {log_tail(self._log)}")
            try:
                psycopg.connect(self.dsn("postgres"), connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def dsn(self, db: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{db}"

    def create_database(self) -> str:
        """A new empty database; returns its SQLAlchemy URL (postgresql:// = psycopg 3 in edgecut)."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        stop(self._proc)
        self._proc = None
        shutil.rmtree(self._tmp, ignore_errors=True)
