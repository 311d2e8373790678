"""The committed generated code (edgecut/v1) must be what `make proto` produces from protos/."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def test_generated_code_matches_the_protos(tmp_path: Path) -> None:
    protoc = pytest.importorskip("grpc_tools.protoc")
    protos = sorted((ROOT / "protos" / "edgecut" / "v1").glob("*.proto"))
    assert protos, "no .proto files found"
    rel = [str(p.relative_to(ROOT / "protos")) for p in protos]
    out = str(tmp_path)
    # Same flags as the Makefile's proto target; protoc's own includes (google/protobuf/*) come along.
    include = Path(protoc.__file__).parent / "_proto"
    rc = protoc.main(
        [
            "protoc",
            f"-I{ROOT / 'protos'}",
            f"-I{include}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            *rel,
        ]
    )
    assert rc == 0
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(ROOT) for p in (ROOT / "edgecut" / "v1").glob("*_pb2*.py*"))
    assert generated == committed, "generated file set differs: run `make proto`"
    stale = [str(p) for p in generated if (tmp_path / p).read_bytes() != (ROOT / p).read_bytes()]
    assert not stale, f"stale generated code, run `make proto`: {stale}"
