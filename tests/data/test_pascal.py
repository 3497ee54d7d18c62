"""PASCAL-Context multi-task reader and its synthetic writer: layout, label conventions,
augmentation geometry, determinism, and clear errors for missing or corrupt files."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from torch.utils.data import DataLoader

from vlmtl.data import (
    AnnotationLoadError,
    AugParams,
    ImageLoadError,
    PascalContextMT,
    write_synthetic_pascal,
)
from vlmtl.data.pascal import read_human_parts
from vlmtl.registry import DENSE_TASKS

from ..conftest import hash_tree

# The official PASCAL-MT table (ASTMT / MTI-Net HUMAN_PART, 6 parts), written out independently.
OFFICIAL_PARTS = {
    "hair": 1, "head": 1, "lear": 1, "lebrow": 1, "leye": 1, "lfoot": 6, "lhand": 4, "llarm": 4, "llleg": 6,
    "luarm": 3, "luleg": 5, "mouth": 1, "neck": 2, "nose": 1, "rear": 1, "rebrow": 1, "reye": 1, "rfoot": 6,
    "rhand": 4, "rlarm": 4, "rlleg": 6, "ruarm": 3, "ruleg": 5, "torso": 2,
}


def official_parts(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """The official loader's positional reading, followed by its AddIgnoreRegions."""
    objs = scipy.io.loadmat(str(path))["anno"][0][0][1][0]
    target = np.zeros(shape)
    if any(o[1][0][0] == 15 and np.sum(o[2]) > 0 for o in objs):
        for o in objs:
            if o[1][0][0] == 15 and len(o[3]) != 0:
                for p in o[3][0]:
                    target[p[1].astype(bool)] = OFFICIAL_PARTS[str(p[0][0])]
    if (target == 0).all():
        target[:] = 255
    return target


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, dict[str, list[str]]]:
    root = tmp_path_factory.mktemp("pascal")
    ids = write_synthetic_pascal(root, n_train=6, n_val=4, seed=0, size=48)
    return root, ids


@pytest.fixture
def copy(data, tmp_path) -> Path:
    """A private copy to damage."""
    shutil.copytree(data[0], tmp_path / "root")
    return tmp_path / "root"


def _size(root: Path, image_id: str) -> tuple[int, int]:
    with Image.open(root / "JPEGImages" / f"{image_id}.jpg") as im:
        return im.height, im.width


# ----------------------------------------------------------------------------- generator


def test_layout_and_determinism(data, tmp_path):
    root, ids = data
    assert (root / "ImageSets/Context/train.txt").read_text().split() == ids["train"]
    for sub, ext in (("JPEGImages", "jpg"), ("semseg/pascal-context", "png"), ("human_parts", "mat"),
                     ("sal_distill", "png"), ("normals_distill", "png")):
        assert sorted(p.stem for p in (root / sub).glob(f"*.{ext}")) == sorted(ids["train"] + ids["val"])
    write_synthetic_pascal(tmp_path / "a", 6, 4, seed=0, size=48)
    assert hash_tree(tmp_path / "a") == hash_tree(root)
    write_synthetic_pascal(tmp_path / "b", 6, 4, seed=1, size=48)
    assert hash_tree(tmp_path / "b") != hash_tree(root)


def test_mat_structure_matches_official_reading(data):
    root, ids = data
    seen: set[int] = set()
    for image_id in ids["train"] + ids["val"]:
        path = root / "human_parts" / f"{image_id}.mat"
        anno = scipy.io.loadmat(str(path))["anno"]
        assert anno.dtype.names == ("imname", "objects")
        assert anno[0, 0]["objects"].dtype.names == ("class", "class_ind", "mask", "parts")
        shape = _size(root, image_id)
        ours = read_human_parts(path, shape)
        np.testing.assert_array_equal(ours, official_parts(path, shape))
        seen |= set(np.unique(ours).tolist())
    assert seen == {0, 1, 2, 3, 4, 5, 6, 255}  # all 7 classes, and images without persons


def test_read_human_parts_handmade(tmp_path):
    shape = (4, 5)

    def mask(*cells):
        m = np.zeros(shape, np.uint8)
        for r, c in cells:
            m[r, c] = 1
        return m

    def obj(name, ind, m, parts):
        arr = np.zeros((1, len(parts)), dtype=[("part_name", "O"), ("mask", "O")]) if parts else np.zeros((0, 0))
        for j, p in enumerate(parts):
            arr[0, j] = p
        return (name, np.array([[ind]], np.uint8), m, arr)

    def write(name, objects):
        objs = np.zeros((1, len(objects)), dtype=[("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")])
        for k, o in enumerate(objects):
            objs[0, k] = o
        anno = np.zeros((1, 1), dtype=[("imname", "O"), ("objects", "O")])
        anno[0, 0] = (name, objs)
        scipy.io.savemat(tmp_path / f"{name}.mat", {"anno": anno})
        return tmp_path / f"{name}.mat"

    cat = obj("cat", 8, mask((3, 4)), [("head", mask((3, 4)))])  # a non-person's parts never count
    person = obj("person", 15, mask((0, 0), (0, 1), (1, 0), (2, 2), (3, 3)),
                 [("hair", mask((0, 0))), ("neck", mask((0, 1))), ("lhand", mask((1, 0))), ("rfoot", mask((2, 2)))])
    out = read_human_parts(write("a", [cat, person, obj("person", 15, mask((1, 1)), [])]), shape)
    expected = np.zeros(shape, np.uint8)
    expected[0, 0], expected[0, 1], expected[1, 0], expected[2, 2] = 1, 2, 4, 6
    np.testing.assert_array_equal(out, expected)
    assert (read_human_parts(write("b", [cat]), shape) == 255).all()
    assert (read_human_parts(write("c", []), shape) == 255).all()
    assert (read_human_parts(write("d", [obj("person", 15, mask((1, 1)), [])]), shape) == 255).all()
    with pytest.raises(AnnotationLoadError, match="elbow"):
        read_human_parts(write("e", [obj("person", 15, mask((1, 1)), [("elbow", mask((1, 1)))])]), shape)


# ----------------------------------------------------------------------------- reader


def test_val_items_shapes_dtypes_and_ranges(data):
    root, ids = data
    ds = PascalContextMT(root, "val", img_size=(40, 56))
    assert len(ds) == 4 and not ds.augment
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (3, 40, 56) and item["image"].dtype == torch.float32
        assert torch.isfinite(item["image"]).all() and item["image"].abs().max() < 3.0
        for task, allowed in (("semseg", set(range(21))), ("human_parts", set(range(7))), ("saliency", {0, 1})):
            lab = item[task]
            assert lab.shape == (40, 56) and lab.dtype == torch.long
            assert set(lab.unique().tolist()) <= allowed | {255}
        n, m = item["normals"], item["normals_mask"]
        assert n.shape == (3, 40, 56) and n.dtype == torch.float32 and m.dtype == torch.bool and m.shape == (40, 56)
        assert m.any()
        torch.testing.assert_close(n.norm(dim=0)[m], torch.ones(int(m.sum())), atol=1e-4, rtol=0)
        assert (n[:, ~m] == 0).all()
        assert item["meta"] == {"id": ids["val"][i], "orig_size": _size(root, ids["val"][i])}
    assert (ds[1]["human_parts"] == 255).all()  # item 1 has no person: fully ignored
    assert set(ds[0]["human_parts"].unique().tolist()) & {1, 2, 3, 4, 5, 6}


def test_task_subset_and_bad_arguments(data):
    root, _ = data
    item = PascalContextMT(root, "val", tasks=("saliency",), img_size=32)[0]
    assert set(item) == {"image", "saliency", "meta"}
    with pytest.raises(ValueError, match="tasks"):
        PascalContextMT(root, "val", tasks=("depth",))
    with pytest.raises(ValueError, match="split"):
        PascalContextMT(root, "test")
    assert set(DENSE_TASKS) == {"semseg", "human_parts", "saliency", "normals"}


def test_flip_mirrors_everything_and_negates_normals_x(data):
    ds = PascalContextMT(data[0], "train", img_size=48, augment=True)
    for params in (AugParams(), AugParams(angle=12.0, scale=1.1)):
        a = ds.get(0, params)
        b = ds.get(0, AugParams(flip=True, angle=params.angle, scale=params.scale))
        for key in ("image", "semseg", "human_parts", "saliency", "normals_mask"):
            assert torch.equal(b[key], a[key].flip(-1)), key
        assert torch.equal(b["normals"][0], -a["normals"][0].flip(-1))
        assert torch.equal(b["normals"][1:], a["normals"][1:].flip(-1))


def _angles(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.rad2deg(torch.acos((a * b).sum(0).clamp(-1, 1)))


def test_rotation_turns_normal_vectors_with_the_image(copy):
    """A centred sphere is rotation invariant: rotated normals must equal the unrotated ones."""
    image_id = (copy / "ImageSets/Context/val.txt").read_text().split()[0]
    h, w = _size(copy, image_id)
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    r = 0.4 * min(h, w)
    dx, dy = (xx - w / 2) / r, (yy - h / 2) / r
    inside = dx**2 + dy**2 < 1
    n = np.stack((dx, -dy, np.sqrt(np.clip(1 - dx**2 - dy**2, 0, 1))), -1)
    png = np.where(inside[..., None], np.round((n + 1) * 127.5), 128).astype(np.uint8)
    Image.fromarray(png).save(copy / "normals_distill" / f"{image_id}.png")
    ds = PascalContextMT(copy, "val", tasks=("normals",), img_size=64)
    base = ds.get(0)
    rot = ds.get(0, AugParams(angle=20.0))
    both = base["normals_mask"] & rot["normals_mask"]
    assert both.sum() > 500
    assert _angles(base["normals"], rot["normals"])[both].mean() < 2.0
    unrotated = PascalContextMT(copy, "val", tasks=("normals",), img_size=64, rotate_normals=False)
    assert _angles(base["normals"], unrotated.get(0, AugParams(angle=20.0))["normals"])[both].mean() > 5.0


def test_augmentation_is_seeded_and_pads_with_ignore(data):
    root, _ = data
    ds = PascalContextMT(root, "train", img_size=48, seed=3)
    assert ds.augment
    draws = [ds.aug_params(i) for i in range(len(ds))]
    assert draws == [ds.aug_params(i) for i in range(len(ds))]
    assert len(set(draws)) == len(ds)
    assert all(-20 <= p.angle <= 20 and 0.75 <= p.scale <= 1.25 for p in draws)
    ds.set_epoch(1)
    assert ds.aug_params(0) != draws[0]
    item = ds.get(0, AugParams(angle=20.0, scale=0.75))
    for task in ("semseg", "human_parts", "saliency"):
        assert item[task][0, 0] == 255 and item[task][-1, -1] == 255
    assert not item["normals_mask"][0, 0]


def test_dataloader_with_two_workers_matches_direct_access(data):
    ds = PascalContextMT(data[0], "train", img_size=32, seed=7)
    loader = DataLoader(ds, batch_size=2, num_workers=2, shuffle=False)
    batches = list(loader)
    assert len(batches) == 3
    assert batches[0]["image"].shape == (2, 3, 32, 32) and batches[0]["normals_mask"].shape == (2, 32, 32)
    for b, batch in enumerate(batches):
        for j in range(2):
            direct = ds[2 * b + j]
            assert batch["meta"]["id"][j] == direct["meta"]["id"]
            for key in ("image", "semseg", "human_parts", "saliency", "normals", "normals_mask"):
                assert torch.equal(batch[key][j], direct[key]), key


def test_official_normals_class_mask(copy):
    """With json/{nyu,context}_classes.json, normals are valid only on shared classes (+ tvmonitor)."""
    (copy / "json").mkdir()
    (copy / "json/context_classes.json").write_text(json.dumps(
        {"unknown": 0, "wall": 1, "floor": 2, "sky": 3, "tvmonitor": 4, "cat": 5}))
    # the official files: JSON objects of class name -> index (the loader iterates the NYUD keys)
    (copy / "json/nyu_classes.json").write_text(json.dumps({"unknown": 0, "wall": 1, "floor": 2, "bed": 3}))
    with pytest.raises(FileNotFoundError, match="trainval"):
        PascalContextMT(copy, "val", tasks=("normals",))
    (copy / "pascal-context/trainval").mkdir(parents=True)
    ids = (copy / "ImageSets/Context/val.txt").read_text().split()
    rng = np.random.default_rng(0)
    maps = {}
    for image_id in ids:
        maps[image_id] = rng.integers(0, 6, size=_size(copy, image_id)).astype(np.uint16)
        scipy.io.savemat(copy / "pascal-context/trainval" / f"{image_id}.mat", {"LabelMap": maps[image_id]})
    plain = PascalContextMT(copy, "val", tasks=("normals",), img_size=_size(copy, ids[0]))
    assert plain.normals_valid_classes == frozenset({1, 2, 4})
    item = plain.get(0)
    png = np.array(Image.open(copy / "normals_distill" / f"{ids[0]}.png")).astype(np.float32)
    png_valid = np.linalg.norm(2 * png / 255 - 1, axis=2) > 0.5
    expected = png_valid & np.isin(maps[ids[0]], [1, 2, 4])
    np.testing.assert_array_equal(item["normals_mask"].numpy(), expected)


# ----------------------------------------------------------------------------- errors


def test_missing_folders_and_files(copy, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        PascalContextMT(tmp_path / "nowhere")
    ids = (copy / "ImageSets/Context/train.txt").read_text().split()
    (copy / "normals_distill" / f"{ids[2]}.png").unlink()
    with pytest.raises(FileNotFoundError, match=f"normals_distill/{ids[2]}.png"):
        PascalContextMT(copy, "train")
    PascalContextMT(copy, "train", tasks=("semseg", "saliency"))  # normals not asked for: fine
    shutil.rmtree(copy / "sal_distill")
    with pytest.raises(FileNotFoundError, match="sal_distill"):
        PascalContextMT(copy, "val")
    (copy / "JPEGImages" / f"{ids[3]}.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=f"'{ids[3]}'.*JPEGImages/{ids[3]}.jpg"):
        PascalContextMT(copy, "train", tasks=("semseg",))
    (copy / "ImageSets/Context/val.txt").unlink()
    with pytest.raises(FileNotFoundError, match="val.txt"):
        PascalContextMT(copy, "val", tasks=("semseg",))
    shutil.rmtree(copy / "JPEGImages")
    with pytest.raises(FileNotFoundError, match="JPEGImages"):
        PascalContextMT(copy, "train", tasks=("semseg",))


@pytest.mark.parametrize(
    ("rel", "damage"),
    [
        ("JPEGImages/{}.jpg", "garbage"),
        ("JPEGImages/{}.jpg", "truncate"),
        ("semseg/pascal-context/{}.png", "truncate"),
        ("sal_distill/{}.png", "garbage"),
        ("normals_distill/{}.png", "truncate"),
        ("human_parts/{}.mat", "garbage"),
        ("human_parts/{}.mat", "no_anno"),
    ],
)
def test_corrupt_files_name_the_file(copy, rel, damage):
    image_id = (copy / "ImageSets/Context/val.txt").read_text().split()[0]
    path = copy / rel.format(image_id)
    if damage == "garbage":
        path.write_bytes(b"this is not an image or a MATLAB file" * 10)
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    else:
        scipy.io.savemat(path, {"something": np.zeros((2, 2))})
    ds = PascalContextMT(copy, "val", img_size=32)
    with pytest.raises(ImageLoadError, match=re.escape(str(path))) as info:
        ds[0]
    if rel.startswith(("semseg", "sal", "normals", "human")):
        assert isinstance(info.value, AnnotationLoadError)
    ds[1]  # other items are unaffected


def test_missing_normals_class_lists_warn_that_the_protocol_differs(copy):
    with pytest.warns(UserWarning, match="normals are supervised and scored on every pixel"):
        data = PascalContextMT(copy, "val", tasks=("normals",))
    assert data.normals_valid_classes is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PascalContextMT(copy, "val", tasks=("semseg",))  # no normals: nothing to warn about
