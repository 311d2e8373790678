"""FP16 twins of tailored models: the packaged reference and a gallery model (attention and LayerNorm)
convert, load in the agent's runtime on the CPU provider with fp32 inputs and outputs, and agree with
their fp32 model within half.FP16_TOLERANCE; a model over the tolerance is refused, no file left."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgecut.agent.runtime import load_model
from edgecut.server.cut.export import export_onnx
from edgecut.server.cut.half import FP16_TOLERANCE, compare, runs_fp16, to_fp16
from edgecut.server.cut.tailor import TailorOptions, tailor
from edgecut.server.errors import BuildError
from edgecut.server.mtl import checkpoint
from edgecut.server.mtl.data import TensorSamples, synthetic_scenes
from edgecut.server.paths import PACKAGED_REFERENCE
from edgecut.server.spec import Budget
from tests.support.tailored import report_meta

OPTIONS = TailorOptions(calib_batches=1, batch_size=8, bn_batches=1)


@pytest.fixture(scope="module")
def reference_scenes() -> TensorSamples:
    return synthetic_scenes(16, seed=7, size=64, show_progress=False)


@pytest.fixture(scope="module")
def tailored_reference(reference_scenes: TensorSamples, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """seg+depth of the packaged reference at half its MACs, exported as the engine exports it."""
    torch.set_num_threads(1)
    base = checkpoint.load(PACKAGED_REFERENCE).eval()
    rep = tailor(base, ["seg", "depth"], Budget(macs_fraction=0.5), reference_scenes, OPTIONS)
    path = tmp_path_factory.mktemp("ref") / "ref.onnx"
    assert export_onnx(rep.model, report_meta(rep, "reference"), path) < 1e-4
    return path


def test_reference_fp16_matches_fp32_and_runs_in_the_agent(
    tailored_reference: Path, reference_scenes: TensorSamples, tmp_path: Path
) -> None:
    images = (
        reference_scenes.tensors["image"][:8].numpy().astype(np.float32) / 255
    )  # as data.batches feeds them
    half = tmp_path / "ref.fp16.onnx"
    check = to_fp16(tailored_reference, half, images)
    assert set(check.errors) == {"seg", "depth"}
    assert max(check.errors.values()) <= FP16_TOLERANCE
    assert check.fp16_bytes < 0.6 * check.fp32_bytes  # the weights are stored in half the bytes
    loaded = load_model(half, "fp16")  # the device's warm-up and output checks, on the CPU provider
    assert loaded.meta.precision == "fp16" and loaded.meta.tasks == ["seg", "depth"]
    outs = loaded.run(images[:2])
    assert all(o.dtype == np.float32 for o in outs.values())  # I/O stays fp32 (keep_io_types)
    assert compare(tailored_reference, half, images) == check.errors  # the check is the files' own


def test_a_gallery_model_with_attention_converts_within_tolerance(tmp_path: Path) -> None:
    from tests.unit.cut.test_gallery import gallery_model  # its architectures and configs

    torch.set_num_threads(1)
    samples = TensorSamples({"image": torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))})
    rep = tailor(gallery_model("mobilevit"), ["seg", "depth"], Budget(macs_fraction=0.5), samples, OPTIONS)
    fp32, half = tmp_path / "m.onnx", tmp_path / "m.fp16.onnx"
    assert export_onnx(rep.model, report_meta(rep, "mobilevit"), fp32) < 1e-4
    check = to_fp16(fp32, half)
    assert max(check.errors.values()) <= FP16_TOLERANCE
    assert load_model(half, "fp16").meta.precision == "fp16"


def test_a_model_over_the_tolerance_is_refused_and_no_file_is_left(
    tailored_reference: Path, tmp_path: Path
) -> None:
    half = tmp_path / "ref.fp16.onnx"
    with pytest.raises(BuildError, match=r"FP16 model's '(seg|depth)' output is .* off the fp32 one"):
        to_fp16(tailored_reference, half, tolerance=1e-7)  # fp16 keeps ~3 digits: never this close
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(BuildError, match="is a fp16 model"):
        to_fp16(_fp16(tailored_reference, tmp_path), tmp_path / "again.onnx")


def _fp16(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ok.fp16.onnx"
    to_fp16(src, dst)
    return dst


def test_fp16_is_for_devices_running_cuda_or_tensorrt() -> None:
    assert runs_fp16(["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert runs_fp16(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    assert not runs_fp16(["CPUExecutionProvider"])  # onnxruntime's CPU casts fp16 back to fp32
    assert not runs_fp16([])
