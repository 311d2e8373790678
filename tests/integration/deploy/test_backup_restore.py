"""docs/operations.md's backup and restore, done as written: pg_dump / pg_restore of the PostgreSQL
registry, the S3 store kept. A server on the restored registry answers a need it had built from the
store (a cache hit, no build), and a need recorded after the dump is built again.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from edgecut.broker import EmbeddedBroker
from tests.support.fleet_server import Device, start_server
from tests.support.onnx_engine import OnnxTestEngine
from tests.support.postgres import PostgresServer
from tests.support.s3_server import S3Server

pytestmark = pytest.mark.integration


def test_a_restored_registry_and_the_store_answer_from_the_cache(
    tmp_path: Path, broker: EmbeddedBroker, postgres: PostgresServer, s3: S3Server
) -> None:
    db, store = postgres.create_database(), s3.create_bucket()
    engine = OnnxTestEngine(tmp_path / "work")
    server = start_server(tmp_path / "a", engine, broker.url, registry_url=db, store_url=store)
    dev = Device(broker.url, "cam-1")
    try:
        dev.needs(["seg"])
        first = dev.model_ready()
        dump = tmp_path / "registry.dump"
        subprocess.run(
            [str(postgres.bindir / "pg_dump"), "-Fc", "-d", db, "-f", str(dump)], check=True, timeout=120
        )
        dev.needs(["depth"], seq=2)  # after the dump: the restore will not know it was built
        dev.model_ready()
    finally:
        server.stop()
    restored = postgres.create_database()
    subprocess.run(
        [str(postgres.bindir / "pg_restore"), "--no-owner", "-d", restored, str(dump)],
        check=True,
        timeout=120,
    )
    engine.builds.clear()
    again = start_server(tmp_path / "b", engine, broker.url, registry_url=restored, store_url=store)
    try:
        dev.needs(["seg"], seq=3)
        hit = dev.model_ready()
        assert hit.cache_hit and hit.artifact_id == first.artifact_id and engine.builds == []
        dev.needs(["depth"], seq=4)
        assert not dev.model_ready().cache_hit and [s.tasks for s in engine.builds] == [("depth",)]
    finally:
        dev.close()
        again.stop()
