"""bench precision's file handling: the user's static INT8 is onnxruntime's QDQ with per-channel weights and
the activations asked for, and a file made larger computes what the model built for that size computes
(the reference is fully convolutional, so its 128 px timing is the same network's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edgecut.errors import ConfigError
from edgecut.server.cut.latency import export_for_timing
from edgecut.server.mtl import build_model
from edgecut.server.mtl.contract import MultiTaskModel
from edgecut_bench.precision_onnx import resized, user_static_int8

SMALL, LARGE = 32, 64
TASKS = ("seg", "depth", "normals")  # normals: a unit-norm head (its Expand carries the image size)


def _model(size: int) -> MultiTaskModel:
    torch.manual_seed(0)
    model = build_model("resnet-mtl", input_size=size, widths=[8, 8, 16, 24], head_width=8)
    from edgecut.server.cut.decompose import decompose

    return decompose(model, TASKS).eval()


def _run(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"image": x}), strict=True))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("precision")
    fp32 = export_for_timing(_model(SMALL), d / "m.onnx")
    images = np.random.default_rng(0).random((16, 3, SMALL, SMALL), dtype=np.float32)
    out = {"fp32": fp32}
    for scheme in ("S8S8", "U8S8"):
        out[scheme] = d / f"m.{scheme}.onnx"
        user_static_int8(fp32, out[scheme], images, scheme)
    return out


def _large_model() -> MultiTaskModel:
    """The same weights built for LARGE px images."""
    small, large = _model(SMALL), _model(LARGE)
    large.load_state_dict(small.state_dict())
    return large.eval()


def test_a_file_made_larger_computes_what_the_model_built_for_that_size_computes(
    files: dict[str, Path], tmp_path: Path
) -> None:
    x = torch.rand(1, 3, LARGE, LARGE)
    with torch.no_grad():
        want = _large_model()(x)
    got = _run(resized(files["fp32"], tmp_path / "large.onnx", LARGE), x.numpy())
    for task in TASKS:
        assert got[task].shape == tuple(want[task].shape)
        np.testing.assert_allclose(got[task], want[task].numpy(), atol=1e-4)


def test_an_int8_file_made_larger_runs_at_that_size_within_its_quantisation_error(
    files: dict[str, Path], tmp_path: Path
) -> None:
    """The quantised file (pre-processing folded its sizes into constants) grows too; its error against
    fp32 at the large size stays of the order it has at its own size."""
    rng = np.random.default_rng(1)
    small_x = rng.random((1, 3, SMALL, SMALL), dtype=np.float32)
    large_x = rng.random((1, 3, LARGE, LARGE), dtype=np.float32)
    small_err = {
        t: np.abs(v - _run(files["fp32"], small_x)[t]).mean() for t, v in _run(files["U8S8"], small_x).items()
    }
    with torch.no_grad():
        want = _large_model()(torch.from_numpy(large_x))
    got = _run(resized(files["U8S8"], tmp_path / "large.int8.onnx", LARGE), large_x)
    for task in TASKS:
        assert got[task].shape == tuple(want[task].shape)
        err = np.abs(got[task] - want[task].numpy()).mean()
        assert err < 3 * small_err[task] + 1e-3, (task, err, small_err[task])


@pytest.mark.parametrize(("scheme", "activations"), [("S8S8", np.int8), ("U8S8", np.uint8)])
def test_the_users_int8_is_qdq_with_per_channel_weights_and_the_activations_asked_for(
    files: dict[str, Path], scheme: str, activations: type
) -> None:
    model = onnx.load(str(files[scheme]))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs and all(producer[c.input[0]].op_type == "DequantizeLinear" for c in convs)
    for conv in convs:
        weight = producer[conv.input[1]]  # DequantizeLinear(int8 weight, per-channel scales)
        q, scale = inits[weight.input[0]], inits[weight.input[1]]
        assert q.dtype == np.int8 and scale.shape == (q.shape[0],)
        act = producer[conv.input[0]]
        assert inits[act.input[2]].dtype == activations


def test_a_file_whose_input_is_not_a_fixed_square_is_refused_in_one_sentence(tmp_path: Path) -> None:
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 48])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 32, 48])
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["y"])], "g", [image], [out])
    src = tmp_path / "wide.onnx"
    onnx.save(helper.make_model(graph), str(src))
    with pytest.raises(ConfigError, match="only a fixed square input can be resized"):
        resized(src, tmp_path / "out.onnx", 64)


def test_a_size_the_graph_takes_from_an_input_is_refused(tmp_path: Path) -> None:
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])
    sizes = helper.make_tensor_value_info("sizes", TensorProto.INT64, [4])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("Resize", ["image", "", "", "sizes"], ["y"], name="up", mode="linear")
    src = tmp_path / "fed.onnx"
    onnx.save(helper.make_model(helper.make_graph([node], "g", [image, sizes], [out])), str(src))
    with pytest.raises(ConfigError, match="up takes its size from the graph's input sizes"):
        resized(src, tmp_path / "out.onnx", 64)


def test_a_size_the_network_cannot_take_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    """34 px: the stride-4 skip connection the exporter sized 8 x 8 would be 8.5 wide."""
    with pytest.raises(ConfigError, match="is not a whole size"):
        resized(files["fp32"], tmp_path / "odd.onnx", 34)
