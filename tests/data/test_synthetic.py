"""Synthetic scenes: determinism, disjoint splits, and text/image consistent with the scene."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from vlmtl.data import SPLITS, load_image, read_jsonl, write_synthetic_dataset
from vlmtl.data.scenes import COLORS, SHAPES, generate_scenes, render_scene

from ..conftest import hash_tree

# Written independently of the library's phrase functions: (row, col) of each phrase.
LOCATION = {
    "at the top left": (0, 0),
    "at the top": (0, 1),
    "at the top right": (0, 2),
    "on the left": (1, 0),
    "in the center": (1, 1),
    "on the right": (1, 2),
    "at the bottom left": (2, 0),
    "at the bottom": (2, 1),
    "at the bottom right": (2, 2),
}
WHERE = {phrase.split(" ", 2)[2]: cell for phrase, cell in LOCATION.items()}
SIZES = {"n_train": 24, "n_val": 8, "n_test": 8, "n_pretrain": 16}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synthetic")
    meta = write_synthetic_dataset(root, seed=5, image_size=64, **SIZES)
    return root, meta


def _scenes(root: Path, split: str) -> dict[str, dict]:
    rows = [json.loads(line) for line in (root / "scenes" / f"{split}.jsonl").read_text().splitlines()]
    return {r["scene_id"]: r for r in rows}


def test_same_seed_byte_identical_other_seed_differs(dataset, tmp_path):
    root, _ = dataset
    write_synthetic_dataset(tmp_path / "again", seed=5, image_size=64, **SIZES)
    assert hash_tree(tmp_path / "again") == hash_tree(root)
    write_synthetic_dataset(tmp_path / "other", seed=6, image_size=64, **SIZES)
    assert hash_tree(tmp_path / "other") != hash_tree(root)


def test_layout_meta_and_read_back(dataset):
    root, meta = dataset
    on_disk = json.loads((root / "meta.json").read_text())
    assert on_disk == meta and on_disk["seed"] == 5
    assert list(meta["splits"]) == list(SPLITS)
    for split in SPLITS:
        samples = read_jsonl(root / f"{split}.jsonl", root)
        info = meta["splits"][split]
        assert Counter(s.task for s in samples) == Counter(info["n_samples"])
        image_ids = {s.image_id for s in samples}
        assert len(image_ids) == info["n_images"] == SIZES[f"n_{split}"]
        for task in ("vqa", "retrieval", "caption"):  # every image serves every task
            assert {s.image_id for s in samples if s.task == task} == image_ids
        assert load_image(samples[0].image).size == (64, 64)
        assert len({s.sample_id for s in samples}) == len(samples)
    assert len(list((root / "images").glob("*.png"))) == sum(SIZES.values())


def test_splits_are_disjoint(dataset):
    root, _ = dataset
    ids, signatures = {}, {}
    for split in SPLITS:
        scenes = _scenes(root, split)
        ids[split] = set(scenes)
        signatures[split] = {
            tuple(sorted((o["shape"], o["color"], o["size"], o["row"], o["col"]) for o in s["objects"]))
            for s in scenes.values()
        }
        assert len(signatures[split]) == len(scenes)
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not ids[a] & ids[b]
            assert not signatures[a] & signatures[b]


def _truth(question: str, objs: list[dict]) -> str:
    """Answer a generated question from the scene, independently of the generator."""
    at = {(o["row"], o["col"]): o for o in objs}
    if question == "how many objects are there?":
        return str(len(objs))
    if m := re.fullmatch(r"how many (\w+) are there\?", question):
        shape = {"circles": "circle", "squares": "square", "triangles": "triangle", "stars": "star", "crosses": "cross"}
        return str(sum(o["shape"] == shape[m.group(1)] for o in objs))
    if m := re.fullmatch(r"what color is the object (.+)\?", question):
        return at[LOCATION[m.group(1)]]["color"]
    if m := re.fullmatch(r"what color is the (\w+)\?", question):
        (match,) = [o for o in objs if o["shape"] == m.group(1)]
        return match["color"]
    if m := re.fullmatch(r"what shape is (.+)\?", question):
        return at[LOCATION[m.group(1)]]["shape"]
    if m := re.fullmatch(r"what is the size of the (\w+) object\?", question):
        (match,) = [o for o in objs if o["color"] == m.group(1)]
        return match["size"]
    if m := re.fullmatch(r"where is the (\w+) (\w+)\?", question):
        (match,) = [o for o in objs if (o["color"], o["shape"]) == m.groups()]
        return next(name for name, cell in WHERE.items() if cell == (match["row"], match["col"]))
    if m := re.fullmatch(r"is there an? (\w+) (\w+)\?", question):
        return "yes" if any((o["color"], o["shape"]) == m.groups() for o in objs) else "no"
    raise AssertionError(f"unexpected question {question!r}")


def test_answers_consistent_with_scene(dataset):
    root, _ = dataset
    types, yes_no = Counter(), Counter()
    for split in SPLITS:
        scenes = _scenes(root, split)
        for line in (root / f"{split}.jsonl").read_text().splitlines():
            rec = json.loads(line)
            if rec["task"] != "vqa":
                continue
            truth = _truth(rec["text"], scenes[rec["image_id"]]["objects"])
            assert rec["answer"] == truth, rec
            assert len(rec["answers"]) == 10
            assert rec["answers"].count(truth) >= 7  # noise never outvotes the truth
            types[rec["question_type"]] += 1
            if rec["question_type"] == "exist":
                yes_no[truth] += 1
    assert len(types) >= 6  # varied question types
    assert yes_no["yes"] > 0 and yes_no["no"] > 0
    records = [json.loads(line) for line in (root / "train.jsonl").read_text().splitlines()]
    per_image = Counter(r["image_id"] for r in records if r["task"] == "vqa")
    assert set(per_image.values()) <= {3, 4, 5}


def test_captions_describe_every_object(dataset):
    root, _ = dataset
    scenes = _scenes(root, "train")
    captions: dict[str, list[str]] = {}
    for line in (root / "train.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["task"] == "retrieval":
            captions.setdefault(rec["image_id"], []).append(rec["text"])
            assert rec["text"] in rec["references"]
    for sid, caps in captions.items():
        assert 2 <= len(caps) <= 3 and len(set(caps)) == len(caps)
        for cap in caps:
            for o in scenes[sid]["objects"]:
                assert f"{o['size']} {o['color']} {o['shape']}" in cap
    # Captions are specific: no two images of the split share a caption.
    all_caps = [c for caps in captions.values() for c in caps]
    assert len(set(all_caps)) == len(all_caps)


def test_rendered_pixels_match_scene():
    """The pixel at each object's centre has (nearest palette colour) the object's colour."""
    palette = np.array(list(COLORS.values()), dtype=np.float32)
    for scene in generate_scenes(40, seed=123, image_size=64):
        pixels = np.asarray(render_scene(scene), dtype=np.float32)
        assert 1 <= len(scene.objects) <= 4
        assert len({(o.row, o.col) for o in scene.objects}) == len(scene.objects)
        for o in scene.objects:
            assert o.shape in SHAPES
            px = pixels[int(o.cy), int(o.cx)]
            nearest = list(COLORS)[int(np.argmin(((palette - px) ** 2).sum(1)))]
            assert nearest == o.color, (scene.scene_id, o)


def test_generate_scenes_deterministic_and_excludes():
    a = generate_scenes(30, seed=9)
    b = generate_scenes(30, seed=9)
    assert [s.to_dict() for s in a] == [s.to_dict() for s in b]
    assert [s.signature() for s in generate_scenes(30, seed=10)] != [s.signature() for s in a]
    excluded = {s.signature() for s in a}
    c = generate_scenes(30, seed=9, exclude=excluded)
    assert not excluded & {s.signature() for s in c}
    assert np.array_equal(np.asarray(render_scene(a[0])), np.asarray(render_scene(b[0])))


def test_interference_renames_colours_in_retrieval_captions_only(dataset, tmp_path):
    from vlmtl.data.synthetic import retrieval_colour_names

    assert retrieval_colour_names(0.0) == {c: c for c in COLORS} == retrieval_colour_names(0.1)  # < 2 colours
    names = retrieval_colour_names(1.0)
    assert sorted(names.values()) == sorted(COLORS) and all(c != n for c, n in names.items())  # a derangement
    half = retrieval_colour_names(0.5)
    assert sum(c != n for c, n in half.items()) == len(COLORS) // 2
    with pytest.raises(ValueError, match="interference must be in"):
        retrieval_colour_names(1.5)
    root, _ = dataset
    conflicted = tmp_path / "conflict"
    meta = write_synthetic_dataset(conflicted, seed=5, image_size=64, interference=1.0, **SIZES)
    assert meta["interference"] == 1.0 and meta["retrieval_colour_names"] == names

    def records(folder, split):
        return [json.loads(line) for line in (folder / f"{split}.jsonl").read_text().splitlines()]

    word = re.compile(r"\b(" + "|".join(COLORS) + r")\b")
    for split in ("train", "val", "pretrain"):
        plain, renamed = records(root, split), records(conflicted, split)
        assert [r["id"] for r in plain] == [r["id"] for r in renamed]
        for a, b in zip(plain, renamed):
            if a["task"] == "retrieval" and split != "pretrain":
                assert b["text"] == word.sub(lambda m: names[m.group(1)], a["text"])
                assert b["text"] != a["text"] or not word.search(a["text"])
            else:  # questions, answers, captions and the pre-training split keep the true names
                assert a == b
