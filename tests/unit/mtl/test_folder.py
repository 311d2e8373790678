"""FolderDataset: real labelled data in the NYUv2 npy layout and in the image-file layout."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgecut.server.errors import DatasetError, ServerError
from edgecut.server.mtl import build_model
from edgecut.server.mtl.data import batches
from edgecut.server.mtl.evaluate import evaluate, evaluate_fn
from edgecut.server.mtl.folder import NYUV2_CLASSES, FolderDataset
from edgecut.server.mtl.tasks import SCENE_TASKS, TaskSpec, by_name

H, W = 6, 8


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _npy(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, arr)


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _unit_normals(rng: np.random.Generator, h: int = H, w: int = W) -> np.ndarray:
    n = rng.normal(size=(h, w, 3)).astype(np.float32)
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


def write_npy_layout(
    root: Path, split: str = "train", ids: tuple[int, ...] = (0, 1, 2, 10)
) -> dict[int, dict]:
    """MTAN/DiSparse NYUv2: image H x W x 3 (0-1 floats, or uint8 for id 1), label -1 = ignore, depth H x W x 1."""
    rng = np.random.default_rng(len(split))
    written: dict[int, dict] = {}
    for i in ids:
        image = rng.uniform(0, 1, (H, W, 3)).astype(np.float32)
        if i == 1:
            image = np.round(image * 255) / 255
        label = rng.integers(0, 13, (H, W)).astype(np.float32)
        label[0, :3] = -1
        depth = rng.uniform(0.5, 9.0, (H, W, 1)).astype(np.float32)
        depth[1, 1] = 0.0
        normal = _unit_normals(rng)
        normal[2, 2] = 0.0
        _npy(root / split / "image" / f"{i}.npy", np.round(image * 255).astype(np.uint8) if i == 1 else image)
        _npy(root / split / "label" / f"{i}.npy", label)
        _npy(root / split / "depth" / f"{i}.npy", depth)
        _npy(root / split / "normal" / f"{i}.npy", normal)
        written[i] = {"image": image, "label": label, "depth": depth, "normal": normal}
    return written


def write_file_layout(root: Path) -> dict[str, dict]:
    """images/*.png|jpg, seg pngs, depth as 16-bit png (a) and npy (b), normals png/npy, edges, count.json."""
    rng = np.random.default_rng(7)
    written: dict[str, dict] = {}
    for key, ext in (("a", ".png"), ("b", ".jpg")):
        image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        seg = rng.integers(0, 6, (H, W), dtype=np.uint8)
        seg[0, 0] = 255
        depth_mm = rng.integers(500, 9000, (H, W), dtype=np.uint16)
        depth_mm[3, 3] = 0
        normals = _unit_normals(rng)
        edges = np.where(rng.uniform(size=(H, W)) < 0.3, 255, 0).astype(np.uint8)
        edges[0, 1], edges[0, 2] = 127, 128
        _png(root / "images" / f"{key}{ext}", image)
        _png(root / "seg" / f"{key}.png", seg)
        _png(root / "edges" / f"{key}.png", edges)
        if key == "a":
            _png(root / "depth" / "a.png", depth_mm)
            encoded = np.round((normals + 1) / 2 * 255).astype(np.uint8)
            encoded[4, 4] = 0  # black = no measurement
            _png(root / "normals" / "a.png", encoded)
        else:
            _npy(root / "depth" / "b.npy", depth_mm.astype(np.float32) / 1000)
            _npy(root / "normals" / "b.npy", normals)
        written[key] = {"image": image, "seg": seg, "depth_mm": depth_mm, "normals": normals, "edges": edges}
    (root / "count.json").write_text(json.dumps({"a": 3, "b": 0}))
    return written


def test_npy_layout_values_shapes_dtypes_and_ignore(tmp_path: Path) -> None:
    written = write_npy_layout(tmp_path)
    ds = FolderDataset(tmp_path)
    assert ds.ids == ["0", "1", "2", "10"]  # numeric order, not "10" before "2"
    assert set(ds.specs) == {"seg", "depth", "normals"}  # label/ -> seg, normal/ -> normals
    assert ds.specs["seg"].classes == NYUV2_CLASSES and ds.specs["seg"].channels == 13
    for idx, i in enumerate((0, 1, 2, 10)):
        s, w = ds[idx], written[i]
        assert s["image"].dtype == torch.float32 and s["image"].shape == (3, H, W)
        np.testing.assert_allclose(s["image"].numpy(), w["image"].transpose(2, 0, 1), atol=1e-6)
        assert s["seg"].dtype == torch.int64 and s["seg"].shape == (H, W)
        assert (s["seg"][0, :3] == 255).all()
        assert torch.equal(s["seg"][1:], torch.from_numpy(w["label"][1:].astype(np.int64)))
        assert s["depth"].dtype == torch.float32 and s["depth"].shape == (1, H, W)
        np.testing.assert_allclose(s["depth"][0].numpy(), w["depth"][..., 0])
        assert s["depth"][0, 1, 1] == 0
        assert s["normals"].shape == (3, H, W)
        np.testing.assert_allclose(s["normals"].numpy(), w["normal"].transpose(2, 0, 1), atol=1e-6)
        assert (s["normals"][:, 2, 2] == 0).all()


def test_npy_layout_split_selection(tmp_path: Path) -> None:
    write_npy_layout(tmp_path, "train", (0, 1, 2))
    val = write_npy_layout(tmp_path, "val", (5, 6))
    ds = FolderDataset(tmp_path, split="val")
    assert ds.ids == ["5", "6"]
    np.testing.assert_allclose(ds[1]["depth"][0].numpy(), val[6]["depth"][..., 0])
    with pytest.raises(DatasetError, match=r"no split 'test' .*found train, val"):
        FolderDataset(tmp_path, split="test")


def test_file_layout_decodes_each_encoding(tmp_path: Path) -> None:
    written = write_file_layout(tmp_path)
    ds = FolderDataset(tmp_path)
    assert ds.ids == ["a", "b"]
    assert set(ds.specs) == {"seg", "depth", "normals", "edges", "count"}
    assert ds.specs["seg"] == by_name(SCENE_TASKS)["seg"] and ds.specs["count"].kind == "classification"
    a, b = ds[0], ds[1]
    np.testing.assert_allclose(a["image"].numpy(), written["a"]["image"].transpose(2, 0, 1) / 255, atol=1e-6)
    assert b["image"].shape == (3, H, W) and 0 <= float(b["image"].min()) <= float(b["image"].max()) <= 1
    assert torch.equal(a["seg"], torch.from_numpy(written["a"]["seg"].astype(np.int64)))
    assert a["seg"][0, 0] == 255
    # 16-bit png in millimetres -> metres; 0 stays "no measurement"
    np.testing.assert_allclose(a["depth"][0].numpy(), written["a"]["depth_mm"] / 1000, rtol=1e-6)
    assert a["depth"][0, 3, 3] == 0
    np.testing.assert_allclose(b["depth"][0].numpy(), written["b"]["depth_mm"] / 1000, rtol=1e-6)
    # RGB png normals: within the 8-bit quantisation of the truth, unit length, black -> all zero
    n = a["normals"]
    truth = torch.from_numpy(written["a"]["normals"].transpose(2, 0, 1))
    valid = torch.ones(H, W, dtype=torch.bool)
    valid[4, 4] = False
    assert (n[:, 4, 4] == 0).all()
    assert torch.allclose(n.norm(dim=0)[valid], torch.ones(()), atol=1e-5)
    angle = torch.rad2deg(torch.acos(torch.cosine_similarity(n, truth, dim=0)[valid].clamp(-1, 1)))
    assert float(angle.max()) < 1.0
    np.testing.assert_allclose(b["normals"].numpy(), written["b"]["normals"].transpose(2, 0, 1), atol=1e-6)
    # edges: > 127 is an edge
    assert a["edges"].shape == (1, H, W) and a["edges"].dtype == torch.float32
    assert a["edges"][0, 0, 1] == 0 and a["edges"][0, 0, 2] == 1
    assert torch.equal(a["edges"][0], torch.from_numpy((written["a"]["edges"] > 127).astype(np.float32)))
    assert a["count"].dtype == torch.int64 and int(a["count"]) == 3 and int(b["count"]) == 0


def test_tasks_json_and_tasks_argument_choose_tasks_and_classes(tmp_path: Path) -> None:
    write_file_layout(tmp_path)
    (tmp_path / "tasks.json").write_text(json.dumps(["seg", "depth"]))
    ds = FolderDataset(tmp_path)
    assert list(ds.specs) == ["seg", "depth"] and set(ds[0]) == {"image", "seg", "depth"}

    classes = ["a", "b", "c", "d", "e", "f", "g", "h"]
    (tmp_path / "tasks.json").write_text(json.dumps({"seg": {"classes": classes}, "edges": {}}))
    ds = FolderDataset(tmp_path)
    assert ds.specs["seg"].channels == 8 and ds.specs["seg"].classes == tuple(classes)
    assert ds.specs["edges"].kind == "edges"

    # the argument wins over tasks.json; folder aliases and TaskSpecs are accepted
    spec = TaskSpec("seg", "segmentation", 7, tuple("abcdefg"))
    ds = FolderDataset(tmp_path, tasks=["normal", spec, "count"])
    assert list(ds.specs) == ["normals", "seg", "count"] and ds.specs["seg"] is spec


def test_unknown_folders_are_skipped_unless_declared(tmp_path: Path) -> None:
    write_file_layout(tmp_path)
    (tmp_path / "masks").mkdir()
    assert "masks" not in FolderDataset(tmp_path).specs
    (tmp_path / "tasks.json").write_text(json.dumps(["seg", "masks"]))
    # the message lists every kind, classification and regression included
    kinds = "segmentation, classification, depth, regression, normals, edges"
    with pytest.raises(
        DatasetError, match=rf"task 'masks' .*no kind: declare it in tasks\.json as one of {kinds}"
    ):
        FolderDataset(tmp_path)


def test_resize_nearest_for_labels_and_valid_only_bilinear_for_depth(tmp_path: Path) -> None:
    seg = np.kron(np.array([[0, 1, 2, 3], [4, 5, 255, 0]], np.uint8), np.ones((2, 2), np.uint8))  # 4 x 8
    seg = np.concatenate([seg, seg[::-1]])  # 8 x 8, blocks of 2 x 2
    depth = np.full((8, 8), 2000, np.uint16)
    depth[:, :4] = 0  # left half unmeasured
    depth[:, 6:] = 4000
    normals = np.zeros((8, 8, 3), np.float32)
    normals[..., 2] = -1
    normals[:, 6:] = [0, -1, 0]
    normals[:4] = 0  # top half unmeasured
    edges = np.zeros((8, 8), np.uint8)
    edges[:, 4:] = 255
    _png(tmp_path / "images" / "x.png", np.full((8, 8, 3), 200, np.uint8))
    _png(tmp_path / "seg" / "x.png", seg)
    _png(tmp_path / "depth" / "x.png", depth)
    _npy(tmp_path / "normals" / "x.npy", normals)
    _png(tmp_path / "edges" / "x.png", edges)

    s = FolderDataset(tmp_path, size=4)[0]
    assert s["image"].shape == (3, 4, 4) and torch.allclose(s["image"], torch.full((3, 4, 4), 200 / 255))
    assert s["seg"].dtype == torch.int64
    assert torch.equal(s["seg"], torch.from_numpy(seg[::2, ::2].astype(np.int64)))  # 2 x 2 blocks -> 1 pixel
    d = s["depth"][0]
    assert d.shape == (4, 4)
    assert (d[:, :2] == 0).all()  # unmeasured stays unmeasured
    assert (d[:, 2:] >= 2.0 - 1e-5).all() and (d[:, 2:] <= 4.0 + 1e-5).all()  # no zero bleeds in
    assert (d[:, 2] < d[:, 3]).all() and float(d[:, 2].min()) < 3.0  # the 2 m side stays nearer
    n = s["normals"]
    assert (n[:, :2] == 0).all()
    assert torch.allclose(n[:, 2:].norm(dim=0), torch.ones(2, 4), atol=1e-5)
    assert torch.allclose(n[:, 2:, 0], torch.tensor([0.0, 0.0, -1.0]).view(3, 1).expand(3, 2))
    assert torch.equal(s["edges"][0], torch.from_numpy((edges[::2, ::2] > 127).astype(np.float32)))

    up = FolderDataset(tmp_path, size=16)[0]
    assert up["seg"].shape == (16, 16) and set(up["seg"].unique().tolist()) == set(np.unique(seg).tolist())


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    write_npy_layout(tmp_path)
    (tmp_path / "train" / "depth" / "2.npy").unlink()
    with pytest.raises(DatasetError, match=r"depth[/\\]2\.png\|\.npy is missing: 1 of 4 images") as exc:
        FolderDataset(tmp_path)
    assert isinstance(exc.value, ServerError) and exc.value.code == "INTERNAL"


def test_missing_image_level_label_names_the_json(tmp_path: Path) -> None:
    write_file_layout(tmp_path)
    (tmp_path / "count.json").write_text(json.dumps({"a": 1}))
    with pytest.raises(DatasetError, match=r"count\.json has no label for image 'b'"):
        FolderDataset(tmp_path)
    (tmp_path / "count.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"cannot read .*count\.json"):
        FolderDataset(tmp_path)


@pytest.mark.parametrize(
    "setup",
    ["no_root", "empty_root", "empty_images", "no_task_folders"],
)
def test_empty_or_absent_folders_are_clear_errors(tmp_path: Path, setup: str) -> None:
    root = tmp_path / "data"
    if setup != "no_root":
        root.mkdir()
    if setup in ("empty_images", "no_task_folders"):
        (root / "images").mkdir()
    if setup == "no_task_folders":
        _png(root / "images" / "a.png", np.zeros((H, W, 3), np.uint8))
    expected = {
        "no_root": "no dataset folder at",
        "empty_root": "no image folder in",
        "empty_images": "no images in",
        "no_task_folders": "no task labels in",
    }[setup]
    with pytest.raises(DatasetError, match=expected):
        FolderDataset(root)


def test_bad_files_are_reported_with_their_path(tmp_path: Path) -> None:
    write_file_layout(tmp_path)
    ds = FolderDataset(tmp_path)
    (tmp_path / "seg" / "a.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"cannot read .*seg[/\\]a\.png"):
        ds[0]
    _png(tmp_path / "seg" / "a.png", np.full((H, W), 9, np.uint8))  # beyond the 6 scene classes
    with pytest.raises(DatasetError, match=r"seg[/\\]a\.png holds class id 9 but 'seg' has 6 classes"):
        ds[0]
    _png(tmp_path / "seg" / "a.png", np.zeros((H + 1, W), np.uint8))
    with pytest.raises(DatasetError, match=r"a\.png is 7 x 8 but its image .*a\.png is 6 x 8"):
        ds[0]
    _png(tmp_path / "seg" / "a.png", np.zeros((H, W), np.uint8))
    _png(tmp_path / "depth" / "a.png", np.zeros((H, W), np.uint8))
    with pytest.raises(DatasetError, match=r"depth[/\\]a\.png is a L png: save depth as a 16-bit png"):
        ds[0]
    with pytest.raises(DatasetError, match=r"no labels for task 'flow'.*found"):
        FolderDataset(tmp_path, tasks=["flow"])


def test_loads_in_batches_and_evaluates_with_a_model(tmp_path: Path) -> None:
    write_file_layout(tmp_path)
    ds = FolderDataset(tmp_path, size=16)
    batch = next(batches(ds, 2))
    assert batch["image"].shape == (2, 3, 16, 16) and batch["seg"].shape == (2, 16, 16)
    assert batch["count"].shape == (2,) and batch["count"].dtype == torch.int64

    torch.manual_seed(0)
    model = build_model(
        "resnet-mtl", tasks=list(ds.specs.values()), input_size=16, widths=[8, 8, 8, 8], head_width=8
    )
    metrics = evaluate(model, ds.specs, ds, batch_size=2)
    assert set(metrics) == set(ds.specs)
    assert 0 <= metrics["seg"]["miou"] <= 1 and math.isfinite(metrics["depth"]["abs_err"])
    assert 0 <= metrics["normals"]["mean_angle"] <= 180 and 0 <= metrics["count"]["accuracy"] <= 1

    # an oracle that returns the folder's own labels scores perfectly, ignore and invalid pixels included
    samples = [ds[i] for i in range(len(ds))]

    def oracle(x: torch.Tensor) -> dict[str, torch.Tensor]:
        found = [next(s for s in samples if torch.equal(s["image"], img)) for img in x]
        seg = torch.stack([s["seg"] for s in found]).clamp_max(5)
        return {
            "seg": torch.nn.functional.one_hot(seg, 6).permute(0, 3, 1, 2).float(),
            "depth": torch.stack([s["depth"] for s in found]),
            "normals": torch.stack([s["normals"] for s in found]),
            "edges": torch.stack([s["edges"] for s in found]) * 20 - 10,
            "count": torch.nn.functional.one_hot(torch.stack([s["count"] for s in found]), 5).float(),
        }

    perfect = evaluate_fn(oracle, ds.specs, ds, batch_size=2)
    assert perfect["seg"]["miou"] == 1.0 and perfect["seg"]["pixel_acc"] == 1.0
    assert perfect["depth"]["abs_err"] < 1e-6 and perfect["depth"]["delta1"] == 1.0
    assert perfect["normals"]["mean_angle"] < 0.1 and perfect["normals"]["within_11.25"] == 1.0
    assert perfect["edges"]["f1"] == 1.0 and perfect["count"]["accuracy"] == 1.0


def _one_image_folder(root: Path, image: np.ndarray, name: str = "x.npy") -> None:
    (root / "images").mkdir(parents=True)
    if name.endswith(".npy"):
        np.save(root / "images" / name, image)
    else:
        Image.fromarray(image).save(root / "images" / name)
    (root / "count.json").write_text(json.dumps({Path(name).stem: 0}))


def test_float_images_outside_0_1_fail_naming_the_file_unless_scaled(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    noisy = rng.uniform(0, 0.006, (H, W, 3)).astype(np.float32)  # dim but valid: kept as it is
    _one_image_folder(tmp_path / "dim", noisy)
    np.testing.assert_allclose(FolderDataset(tmp_path / "dim")[0]["image"].numpy(), noisy.transpose(2, 0, 1))

    bright = rng.uniform(0, 255, (H, W, 3)).astype(np.float32)
    _one_image_folder(tmp_path / "bright", bright)
    with pytest.raises(
        DatasetError, match=r"images[/\\]x\.npy holds values from .* to 25\d.*outside \[0, 1\].*--image-scale"
    ):
        FolderDataset(tmp_path / "bright")[0]
    scaled = FolderDataset(tmp_path / "bright", image_scale=255)[0]["image"]
    np.testing.assert_allclose(scaled.numpy(), bright.transpose(2, 0, 1) / 255, rtol=1e-6)
    with pytest.raises(DatasetError, match=r"after dividing by --image-scale 100"):
        FolderDataset(tmp_path / "bright", image_scale=100)[0]

    nan = noisy.copy()
    nan[0, 0, 0] = np.nan
    _one_image_folder(tmp_path / "nan", nan)
    with pytest.raises(DatasetError, match=r"x\.npy holds NaN"):
        FolderDataset(tmp_path / "nan")[0]


def test_integer_images_are_scaled_by_their_depth(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    eight = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    _one_image_folder(tmp_path / "u8", eight)
    np.testing.assert_allclose(
        FolderDataset(tmp_path / "u8")[0]["image"].numpy(), eight.transpose(2, 0, 1) / 255
    )
    sixteen = rng.integers(0, 65536, (H, W, 3), dtype=np.uint16)
    _one_image_folder(tmp_path / "u16", sixteen)
    got = FolderDataset(tmp_path / "u16")[0]["image"].numpy()
    np.testing.assert_allclose(got, sixteen.transpose(2, 0, 1) / 65535, rtol=1e-6)


def test_a_declared_regression_keeps_zero_as_a_value_and_depth_missing_is_configurable(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(2)
    _png(tmp_path / "images" / "a.png", rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    field = rng.normal(size=(H, W, 2)).astype(np.float32)
    field[0, 0] = 0.0  # a real zero, not a gap
    _npy(tmp_path / "flow" / "a.npy", field)
    depth = rng.integers(500, 9000, (H, W), dtype=np.uint16)
    depth[1, 1] = 65535  # this sensor marks gaps with the largest value
    depth[2, 2] = 0
    _png(tmp_path / "range" / "a.png", depth)
    (tmp_path / "tasks.json").write_text(
        json.dumps({"flow": {"kind": "regression"}, "range": {"kind": "depth", "missing": 65535}})
    )
    ds = FolderDataset(tmp_path)
    assert ds.specs["flow"] == TaskSpec("flow", "regression", 2)  # channels from the file
    s = ds[0]
    np.testing.assert_allclose(s["flow"].numpy(), field.transpose(2, 0, 1))
    assert s["flow"][:, 0, 0].tolist() == [0.0, 0.0]
    assert s["range"][0, 1, 1] == 0 and s["range"][0, 2, 2] == 0  # both gaps, stored as 0
    np.testing.assert_allclose(s["range"][0, 3, 3].item(), depth[3, 3] / 1000, rtol=1e-6)

    field[0, 1] = np.nan
    _npy(tmp_path / "flow" / "a.npy", field)
    with pytest.raises(DatasetError, match=r"flow[/\\]a\.npy holds NaN"):
        ds[0]
    # the model's spec wins over the file: a 3-channel regression cannot read 2-channel files
    _npy(tmp_path / "flow" / "a.npy", np.zeros((H, W, 2), np.float32))
    with pytest.raises(DatasetError, match=r"a\.npy has 2 channels but task 'flow' has 3"):
        FolderDataset(tmp_path, tasks=[TaskSpec("flow", "regression", 3)])[0]
