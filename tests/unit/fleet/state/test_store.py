from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from edgecut.errors import ConfigError
from edgecut.server.errors import ArtifactNotFoundError
from edgecut.server.fleet.state.store import LocalStore
from edgecut.server.fleet.state.store_backends import open_store
from tests.support.onnx_models import tiny_meta


def test_put_is_content_addressed_idempotent_and_resumable(tmp_path: Path) -> None:
    src = tmp_path / "m.onnx"
    data = bytes(range(256)) * 1000
    src.write_bytes(data)
    store = LocalStore(tmp_path / "store")
    a = store.put_file(src, tiny_meta())
    assert a.artifact_id == hashlib.sha256(data).hexdigest() == a.sha256
    assert a.size == len(data) == store.size(a.artifact_id)
    assert store.exists(a.artifact_id)
    assert store.meta(a.artifact_id) == tiny_meta()
    with store.open(a.artifact_id, 1000) as f:
        assert f.read() == data[1000:]
    again = store.put_file(src, tiny_meta())
    assert again == a
    files = sorted(p.name for p in (tmp_path / "store").rglob("*") if p.is_file())
    assert files == [f"{a.artifact_id}.json", f"{a.artifact_id}.onnx"]  # no temp files left behind


@pytest.mark.parametrize("bad", ["../../etc/passwd", "A" * 64, "0" * 63, "", "0" * 64 + "/x"])
def test_ids_that_are_not_sha256_hex_never_reach_the_filesystem(tmp_path: Path, bad: str) -> None:
    store = LocalStore(tmp_path)
    assert not store.exists(bad)
    with pytest.raises(ArtifactNotFoundError):
        store.open(bad)
    with pytest.raises(ArtifactNotFoundError):
        store.size(bad)


def test_missing_artifact_is_not_found(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(ArtifactNotFoundError, match="not in the store"):
        store.open("ab" * 32)
    with pytest.raises(ArtifactNotFoundError):
        store.meta("ab" * 32)


def test_open_store_by_url(tmp_path: Path) -> None:
    assert isinstance(open_store(f"file://{tmp_path}/a"), LocalStore)
    assert isinstance(open_store(str(tmp_path / "b")), LocalStore)
    with pytest.raises(ConfigError, match="no backend for scheme 'ftp'"):
        open_store("ftp://host/models")
