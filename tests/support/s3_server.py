"""A real S3-compatible HTTP server on loopback for the store and replica tests: moto's server mode.

MinIO is not packaged by Debian; moto (PyPI) serves the S3 API (buckets, multipart uploads, ranged
GETs) in a child process that dies with the test process. Credentials are anything: the variables
below are what the store (boto3) and the server replicas read.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

from edgecut.broker import die_with_parent, free_port

from .processes import child_log, stop, wait_listening

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "edgecut-test",
    "AWS_SECRET_ACCESS_KEY": "edgecut-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class S3Server:
    def __init__(self) -> None:
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = child_log("moto")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        wait_listening(self._proc, self.port, "moto's S3 server", self._log)
        return self

    def client(self, config=None):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.session.Session(
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        ).client("s3", endpoint_url=self.endpoint, config=config)

    def create_bucket(self) -> str:
        """A new bucket; returns a store URL for it (under the prefix `artifacts`)."""
        name = f"edgecut-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return f"s3://{name}/artifacts?endpoint_url={self.endpoint}"

    def stop(self) -> None:
        stop(self._proc)
        self._proc = None


def use_credentials() -> None:
    """Point boto3 in this process at the test credentials (kept if already set)."""
    for k, v in CREDENTIALS.items():
        os.environ.setdefault(k, v)
