"""Seeded fuzzing of every reader: malformed input must fail as a typed error naming the file.

Real annotation and label files arrive truncated, hand-edited or in a neighbouring format.
A reader may accept a damaged file (when what is left is still valid) or raise ValueError /
FileNotFoundError (ImageLoadError and AnnotationLoadError are ValueErrors) whose message names
the file, never a raw KeyError, TypeError, IndexError, JSONDecodeError, ... from deep inside.
Each loop is deterministic in its seed, so a failure reproduces from the reported case.
"""

from __future__ import annotations

import copy
import json
import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io
from PIL import Image

from vlmtl.data import (
    AnnotationLoadError,
    ImageLoadError,
    PascalContextMT,
    Sample,
    load_image,
    read_jsonl,
    read_karpathy,
    read_vqav2,
    write_synthetic_pascal,
)
from vlmtl.data.pascal import (
    read_human_parts,
    read_label_map,
    read_normals,
    read_normals_valid_classes,
    read_saliency,
    read_semseg,
)

MUTATIONS = 50
CLEAN = (ValueError, FileNotFoundError)  # ImageLoadError / AnnotationLoadError are ValueErrors
RAW = (json.JSONDecodeError, UnicodeDecodeError)  # ValueErrors too, but they never name the file
# Values a hand-edited or foreign file may hold where the reader expects something else.
JUNK: tuple[Any, ...] = (None, 0, -7, 2.5, float("inf"), float("nan"), True, "", "  ", "x", "\u00e9\u4e2d",
                         [], {}, [None], ["a", 1], {"k": None}, 10**30)


# ----------------------------------------------------------------------------- mutation helpers


def mutate_bytes(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One random byte-level damage: flips, truncation, inserted or deleted bytes."""
    op = rng.randrange(4)
    n = len(data)
    if op == 0 or n < 2:
        out = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return bytes(out), "flip"
    if op == 1:
        cut = rng.randrange(n)
        return data[:cut], f"truncate@{cut}"
    if op == 2:
        at = rng.randrange(n + 1)
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        return data[:at] + junk + data[at:], f"insert@{at}"
    start = rng.randrange(n)
    end = min(n, start + rng.randint(1, 64))
    return data[:start] + data[end:], f"delete[{start}:{end}]"


def _paths(obj: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def mutate_tree(doc: Any, rng: random.Random) -> tuple[Any, str]:
    """1-3 structural damages of a parsed JSON document: a value replaced by junk of another
    type, a key or list entry deleted, or an entry duplicated."""
    doc = copy.deepcopy(doc)
    done = []
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(list(_paths(doc)))
        if not path:
            doc = rng.choice(JUNK)
            done.append("top=junk")
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        op = rng.choice(("junk", "junk", "delete", "duplicate"))
        if op == "delete":
            del parent[key]
        elif op == "duplicate" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
        else:
            parent[key] = copy.deepcopy(rng.choice(JUNK))
        done.append(f"{'/'.join(map(str, path))}={op}")
        if not isinstance(doc, (dict, list)):
            break
    return doc, ",".join(done)


def problem(call: Callable[[], Any], must_name: Path) -> str | None:
    """None when ``call`` succeeds or fails cleanly; otherwise what went wrong."""
    try:
        result = call()
    except RAW as e:
        return f"raw {type(e).__name__} leaked: {e}"
    except CLEAN as e:
        if str(must_name) not in str(e):
            return f"{type(e).__name__} does not name {must_name}: {e}"
        return None
    except Exception as e:  # noqa: BLE001 - any other type is the bug this test looks for
        return f"raw {type(e).__name__} leaked: {e!r}"
    if isinstance(result, list) and not all(isinstance(s, Sample) for s in result):
        return f"returned non-Sample items: {result[:3]!r}"
    return None


def assert_no_problems(found: list[str]) -> None:
    assert not found, f"{len(found)} bad outcome(s), first ones:\n" + "\n".join(found[:8])


def write_json(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- valid base files


def vqa_docs() -> tuple[dict, dict]:
    def answers(words: list[str]) -> list[dict]:
        return [{"answer": w, "answer_confidence": "yes", "answer_id": i + 1} for i, w in enumerate(words)]

    questions = {"data_subtype": "train2014", "task_type": "Open-Ended", "questions": [
        {"image_id": 9, "question": "What color is the plate?", "question_id": 9000},
        {"image_id": 9, "question": "Is it sunny?", "question_id": 9001},
        {"image_id": 42, "question": "How many dogs?", "question_id": 42000},
    ]}
    annotations = {"data_subtype": "train2014", "annotations": [
        {"question_id": 9000, "image_id": 9, "multiple_choice_answer": "white",
         "answers": answers(["white"] * 8 + ["gray", "white and blue"])},
        {"question_id": 9001, "image_id": 9, "multiple_choice_answer": "yes",
         "answers": answers(["yes"] * 6 + ["no"] * 4)},
        {"question_id": 42000, "image_id": 42, "multiple_choice_answer": "2", "answers": answers(["2"] * 9 + ["3"])},
    ]}
    return questions, annotations


def karpathy_doc() -> dict:
    def sentences(base: int, raws: list[str]) -> list[dict]:
        return [{"raw": r, "tokens": r.lower().split(), "sentid": base + i, "imgid": base} for i, r in enumerate(raws)]

    return {"dataset": "coco", "images": [
        {"filepath": "train2014", "filename": "a.jpg", "imgid": 0, "cocoid": 11, "split": "train",
         "sentences": sentences(0, ["A dog runs.", "A brown dog."])},
        {"filepath": "val2014", "filename": "b.jpg", "imgid": 1, "cocoid": 12, "split": "restval",
         "sentences": sentences(10, ["Two cats sleep."])},
        {"filepath": "val2014", "filename": "c.jpg", "imgid": 2, "cocoid": 13, "split": "val",
         "sentences": sentences(20, ["A red bus.", "A bus on a road."])},
    ]}


def jsonl_objects() -> list[dict]:
    return [
        {"id": "q0", "task": "vqa", "image": "images/a.png", "image_id": "a", "text": "what shape?",
         "answers": ["circle"] * 10},
        {"id": "r0", "task": "retrieval", "image": "images/a.png", "image_id": "a", "text": "a red circle"},
        {"id": "c0", "task": "caption", "image": "images/b.png", "image_id": "b", "text": "a blue square",
         "references": ["a blue square", "one blue square"]},
    ]


def write_damaged_json(path: Path, doc: Any, damage: str, rng: random.Random) -> str:
    """Write ``doc`` to ``path`` with its bytes ("bytes") or its structure ("tree") mutated;
    returns what was done."""
    if damage == "bytes":
        data, how = mutate_bytes(json.dumps(doc).encode(), rng)
        path.write_bytes(data)
    else:
        bad, how = mutate_tree(doc, rng)
        write_json(path, bad)
    return how


def write_jsonl(path: Path, objects: list[Any]) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objects), encoding="utf-8")
    return path


def test_base_files_are_valid(tmp_path):
    """The fuzz loops start from files every reader accepts (else they would test nothing)."""
    q, a = vqa_docs()
    assert len(read_vqav2(write_json(tmp_path / "q.json", q), write_json(tmp_path / "a.json", a), tmp_path)) == 3
    assert len(read_karpathy(write_json(tmp_path / "k.json", karpathy_doc()), tmp_path, "train", "retrieval")) == 3
    assert [s.task for s in read_jsonl(write_jsonl(tmp_path / "s.jsonl", jsonl_objects()), tmp_path)] == [
        "vqa", "retrieval", "caption"]


# ----------------------------------------------------------------------------- JSON / JSONL readers


@pytest.mark.parametrize("which", ["questions", "annotations"])
@pytest.mark.parametrize("damage", ["bytes", "tree"])
def test_fuzz_read_vqav2(tmp_path, which, damage):
    questions, annotations = vqa_docs()
    q_path, a_path = tmp_path / "questions.json", tmp_path / "annotations.json"
    target, doc = (q_path, questions) if which == "questions" else (a_path, annotations)
    found = []
    for seed in range(MUTATIONS):
        rng = random.Random(seed)
        write_json(q_path, questions)
        write_json(a_path, annotations)
        how = write_damaged_json(target, doc, damage, rng)
        issue = problem(lambda: read_vqav2(q_path, a_path, tmp_path / "images"), target)
        if issue:
            found.append(f"seed {seed} ({how}): {issue}")
    assert_no_problems(found)


@pytest.mark.parametrize("damage", ["bytes", "tree"])
def test_fuzz_read_karpathy(tmp_path, damage):
    doc = karpathy_doc()
    path = tmp_path / "dataset_coco.json"
    found = []
    for seed in range(MUTATIONS):
        rng = random.Random(seed)
        how = write_damaged_json(path, doc, damage, rng)
        for split, task in (("train", "retrieval"), ("val", "caption")):
            issue = problem(lambda split=split, task=task: read_karpathy(path, tmp_path, split, task), path)
            if issue:
                found.append(f"seed {seed} ({how}) {split}/{task}: {issue}")
    assert_no_problems(found)


@pytest.mark.parametrize("damage", ["bytes", "tree"])
def test_fuzz_read_jsonl(tmp_path, damage):
    objects = jsonl_objects()
    path = tmp_path / "train.jsonl"
    found = []
    for seed in range(MUTATIONS):
        rng = random.Random(seed)
        if damage == "bytes":
            data, how = mutate_bytes(b"".join(json.dumps(o).encode() + b"\n" for o in objects), rng)
            path.write_bytes(data)
        else:
            bad, how = mutate_tree(objects, rng)
            write_jsonl(path, bad if isinstance(bad, list) else [bad])
        issue = problem(lambda: read_jsonl(path, tmp_path), path)
        if issue:
            found.append(f"seed {seed} ({how}): {issue}")
    assert_no_problems(found)


# ----------------------------------------------------------------------------- named bad cases


def test_vqav2_named_cases(tmp_path):
    questions, annotations = vqa_docs()
    q_path, a_path = tmp_path / "q.json", tmp_path / "a.json"

    def read(q: Any, a: Any) -> list[Sample]:
        return read_vqav2(write_json(q_path, q), write_json(a_path, a), tmp_path)

    orphan = copy.deepcopy(questions)
    orphan["questions"].append({"image_id": 42, "question": "Where?", "question_id": 777})
    with pytest.raises(ValueError, match=rf"{a_path}: no annotation for question_id 777 of {q_path}"):
        read(orphan, annotations)
    extra = copy.deepcopy(annotations)  # annotations of unknown questions are simply unused
    extra["annotations"].append({"question_id": 5, "image_id": 1, "answers": [{"answer": "no"}]})
    assert len(read(questions, extra)) == 3

    null_answer = copy.deepcopy(annotations)
    null_answer["annotations"][1]["answers"][3]["answer"] = None
    with pytest.raises(ValueError, match=rf"{a_path}: annotations\[1\]\.answers\[3\].*answer.*NoneType"):
        read(questions, null_answer)
    numeric = copy.deepcopy(annotations)  # a number is a fine answer: VQA answers "2" as text
    numeric["annotations"][2]["answers"] = [{"answer": 2}] * 10
    assert read(questions, numeric)[2].answers == ["2"] * 10
    no_answers = copy.deepcopy(annotations)
    no_answers["annotations"][0]["answers"] = []
    with pytest.raises(ValueError, match=rf"{a_path}: annotations\[0\] has an empty 'answers' list"):
        read(questions, no_answers)

    for bad_text in ("", "   ", 12, None):
        q = copy.deepcopy(questions)
        q["questions"][1]["question"] = bad_text
        with pytest.raises(ValueError, match=rf"{q_path}: questions\[1\].*text"):
            read(q, annotations)
    bad_image = copy.deepcopy(questions)
    bad_image["questions"][0]["image_id"] = "nine"
    with pytest.raises(ValueError, match=rf"{q_path}: questions\[0\].*image_id"):
        read(bad_image, annotations)
    for top in ([], "questions", 3, None):
        with pytest.raises(ValueError, match=rf"{q_path}: top level should be a JSON object"):
            read(top, annotations)


def test_karpathy_named_cases(tmp_path):
    path = tmp_path / "dataset_coco.json"
    doc = karpathy_doc()
    no_sentences = copy.deepcopy(doc)
    del no_sentences["images"][2]["sentences"]
    with pytest.raises(ValueError, match=rf"{path}: images\[2\] is missing key\(s\) \['sentences'\]"):
        read_karpathy(write_json(path, no_sentences), tmp_path, "val", "caption")
    empty = copy.deepcopy(doc)
    empty["images"][0]["sentences"][1] = {"raw": " ", "tokens": []}
    with pytest.raises(ValueError, match=rf"{path}: images\[0\]\.sentences\[1\].*empty text"):
        read_karpathy(write_json(path, empty), tmp_path, "train", "retrieval")
    tokens_only = copy.deepcopy(doc)  # an empty raw falls back to the tokens
    tokens_only["images"][0]["sentences"][1]["raw"] = ""
    assert read_karpathy(write_json(path, tokens_only), tmp_path, "train", "retrieval")[1].text == "a brown dog."
    bad_split = copy.deepcopy(doc)
    bad_split["images"][1]["split"] = ["train"]
    with pytest.raises(ValueError, match=rf"{path}: images\[1\].*split"):
        read_karpathy(write_json(path, bad_split), tmp_path, "train", "retrieval")


def test_jsonl_named_cases(tmp_path):
    path = tmp_path / "train.jsonl"
    good = json.dumps(jsonl_objects()[1])
    cases = {
        '{"task": "retrieval", "image": "a.png", "text": ""}': "empty text",
        '{"task": "retrieval", "image": "a.png", "text": 5}': "'text' must be a non-empty string, got int",
        '{"task": "vqa", "image": "a.png", "text": "why?", "answers": [null]}': "answers",
        '{"task": "vqa", "image": "a.png", "text": "why?", "answers": null}': "answers",
        '{"task": "retrieval", "image": 3, "text": "a"}': "image",
        '{"task": "captioning", "image": "a.png", "text": "a"}': "unknown task 'captioning'",
        '["retrieval", "a.png", "a"]': "expected a JSON object, got list",
        '{"task": "retrieval", "text": "a"}': r"missing key\(s\) \['image'\]",
        '{"task": "retrieval", "image": "a.png", "text": "a"': "Expecting",
    }
    for line, message in cases.items():
        path.write_text(f"{good}\n\n{line}\n{good}\n", encoding="utf-8")
        with pytest.raises(ValueError, match=rf"{path}: line 3: .*{message}"):
            read_jsonl(path, tmp_path)
    path.write_bytes(good.encode() + b"\n" + b'{"text": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=rf"{path}: line 2: not valid UTF-8"):
        read_jsonl(path, tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        read_jsonl(tmp_path / "missing.jsonl", tmp_path)


# ----------------------------------------------------------------------------- images and PASCAL labels


@pytest.fixture(scope="module")
def pascal(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pascal_fuzz")
    write_synthetic_pascal(root, n_train=0, n_val=2, seed=0, size=32)
    return root


@pytest.fixture
def pascal_copy(pascal, tmp_path) -> Path:
    shutil.copytree(pascal, tmp_path / "root")
    return tmp_path / "root"


def test_fuzz_image_files(pascal_copy):
    """Random damage to the JPEG image and the three label PNGs, through their readers and
    through the dataset (which must still name the damaged file)."""
    image_id = (pascal_copy / "ImageSets/Context/val.txt").read_text().split()[0]
    ds = PascalContextMT(pascal_copy, "val", img_size=16, augment=False)
    shape = np.array(load_image(ds.path("image", image_id))).shape[:2]
    readers: dict[str, Callable[[Path], Any]] = {
        "image": load_image,
        "semseg": lambda p: read_semseg(p, shape),
        "saliency": lambda p: read_saliency(p, shape),
        "normals": lambda p: read_normals(p, shape),
    }
    found = []
    for task, reader in readers.items():
        path = ds.path(task, image_id)
        original = path.read_bytes()
        for seed in range(MUTATIONS):
            data, how = mutate_bytes(original, random.Random(seed))
            path.write_bytes(data)
            for where, call in (("reader", lambda reader=reader, path=path: reader(path)),
                                ("dataset", lambda ds=ds: ds[0])):
                issue = problem(call, path)
                if issue:
                    found.append(f"{task} seed {seed} ({how}) via {where}: {issue}")
        path.write_bytes(original)
    assert_no_problems(found)
    ds[0]  # restored files read again


def test_label_pngs_of_the_wrong_kind(pascal_copy):
    """Decodable PNGs with the wrong mode, size or values: typed errors, never garbage labels."""
    image_id = (pascal_copy / "ImageSets/Context/val.txt").read_text().split()[0]
    ds = PascalContextMT(pascal_copy, "val", img_size=16, augment=False)
    h, w = np.array(load_image(ds.path("image", image_id))).shape[:2]
    rng = np.random.default_rng(0)
    variants = {
        "semseg": [np.full((h, w), 50, np.uint8), rng.integers(0, 21, (h, w, 3), dtype=np.uint8),
                   np.zeros((h + 1, w), np.uint8)],
        "normals": [np.zeros((h, w), np.uint8), np.zeros((h, w + 2, 3), np.uint8)],
        "saliency": [np.zeros((h - 1, w), np.uint8)],
    }
    for task, arrays in variants.items():
        path = ds.path(task, image_id)
        original = path.read_bytes()
        for arr in arrays:
            Image.fromarray(arr).save(path)
            with pytest.raises(AnnotationLoadError, match=str(path)):
                ds[0]
        path.write_bytes(original)


def _struct(fields: dict[str, Any]) -> np.ndarray:
    arr = np.zeros((1, 1), dtype=[(k, "O") for k in fields])
    arr[0, 0] = tuple(fields.values())
    return arr


def wrong_mat_structures(h: int, w: int) -> dict[str, dict[str, Any]]:
    """Parsable .mat files that are not a Pascal-Part ``anno`` struct (or a broken one)."""
    mask = np.ones((h, w), np.uint8)

    def anno(objects: Any) -> dict[str, Any]:
        return {"anno": _struct({"imname": "x", "objects": objects})}

    def person(**override: Any) -> np.ndarray:
        part = _struct({"part_name": "head", "mask": mask})
        fields = {"class": "person", "class_ind": np.array([[15]]), "mask": mask, "parts": part}
        fields.update(override)
        return _struct(fields)

    return {
        "no anno": {"something": np.zeros((2, 2))},
        "anno is a number": {"anno": np.array([[3.0]])},
        "anno is a string": {"anno": "person"},
        "anno without objects": {"anno": _struct({"imname": "x"})},
        "objects is a number": anno(np.array([[1.0]])),
        "objects is a string": anno("person"),
        "object without class_ind": anno(_struct({"class": "person", "mask": mask, "parts": np.zeros((0, 0))})),
        "class_ind empty": anno(person(class_ind=np.zeros((0, 0)))),
        "class_ind text": anno(person(class_ind="person")),
        "mask wrong size": anno(person(mask=np.ones((h, w)), parts=_struct({"part_name": "head",
                                                                            "mask": np.ones((h + 3, w))}))),
        "mask 3-D": anno(person(parts=_struct({"part_name": "head", "mask": np.ones((h, w, 2))}))),
        "part name unknown": anno(person(parts=_struct({"part_name": "tail", "mask": mask}))),
        "part name number": anno(person(parts=_struct({"part_name": 7.0, "mask": mask}))),
        "part without mask": anno(person(parts=_struct({"part_name": "head"}))),
        "parts is a string": anno(person(parts="head")),
    }


def test_human_parts_mat_of_the_wrong_structure(pascal_copy):
    image_id = (pascal_copy / "ImageSets/Context/val.txt").read_text().split()[0]
    ds = PascalContextMT(pascal_copy, "val", img_size=16, augment=False)
    shape = np.array(load_image(ds.path("image", image_id))).shape[:2]
    path = ds.path("human_parts", image_id)
    found = []
    for name, content in wrong_mat_structures(*shape).items():
        scipy.io.savemat(path, content)
        for where, call in (("reader", lambda: read_human_parts(path, shape)), ("dataset", lambda: ds[0])):
            issue = problem(call, path)
            if issue:
                found.append(f"{name} via {where}: {issue}")
    assert_no_problems(found)
    scipy.io.savemat(path, wrong_mat_structures(*shape)["part name unknown"])
    with pytest.raises(AnnotationLoadError, match=rf"{path}: unknown person part name 'tail'"):
        read_human_parts(path, shape)


def test_fuzz_human_parts_mat_bytes(pascal_copy):
    image_id = (pascal_copy / "ImageSets/Context/val.txt").read_text().split()[0]
    ds = PascalContextMT(pascal_copy, "val", img_size=16, augment=False)
    shape = np.array(load_image(ds.path("image", image_id))).shape[:2]
    path = ds.path("human_parts", image_id)
    original = path.read_bytes()
    found = []
    for seed in range(MUTATIONS):
        data, how = mutate_bytes(original, random.Random(seed))
        path.write_bytes(data)
        issue = problem(lambda: read_human_parts(path, shape), path)
        if issue:
            found.append(f"seed {seed} ({how}): {issue}")
    for garbage in (b"", b"MATLAB 5.0 MAT-file" + bytes(200), bytes(range(256)) * 3):
        path.write_bytes(garbage)
        issue = problem(lambda: read_human_parts(path, shape), path)
        if issue:
            found.append(f"garbage {garbage[:12]!r}: {issue}")
    assert_no_problems(found)


def test_fuzz_normals_class_lists_and_label_map(tmp_path):
    """The optional official normals masking files: class-list JSONs and a LabelMap .mat."""
    (tmp_path / "json").mkdir()
    nyu, ctx = tmp_path / "json/nyu_classes.json", tmp_path / "json/context_classes.json"
    nyu_doc, ctx_doc = ["wall", "floor", "unknown"], {"wall": 1, "floor": 2, "sky": 3, "tvmonitor": 4}
    write_json(nyu, nyu_doc)
    write_json(ctx, ctx_doc)
    assert read_normals_valid_classes(tmp_path) == frozenset({1, 2, 4})
    write_json(nyu, {"wall": 7, "floor": 8, "unknown": 0})  # the official layout: name -> index, keys iterated
    assert read_normals_valid_classes(tmp_path) == frozenset({1, 2, 4})
    found = []
    for seed in range(MUTATIONS):
        rng = random.Random(seed)
        write_json(nyu, nyu_doc)
        write_json(ctx, ctx_doc)
        target, doc = (nyu, nyu_doc) if seed % 2 else (ctx, ctx_doc)
        if rng.random() < 0.5:
            data, how = mutate_bytes(json.dumps(doc).encode(), rng)
            target.write_bytes(data)
        else:
            bad, how = mutate_tree(doc, rng)
            write_json(target, bad)
        issue = problem(lambda: read_normals_valid_classes(tmp_path), target)
        if issue:
            found.append(f"seed {seed} {target.name} ({how}): {issue}")

    label_map = tmp_path / "label.mat"
    scipy.io.savemat(label_map, {"LabelMap": np.arange(12, dtype=np.uint16).reshape(3, 4)})
    original = label_map.read_bytes()
    for seed in range(MUTATIONS):
        data, how = mutate_bytes(original, random.Random(seed))
        label_map.write_bytes(data)
        issue = problem(lambda: read_label_map(label_map), label_map)
        if issue:
            found.append(f"LabelMap seed {seed} ({how}): {issue}")
    assert_no_problems(found)


def test_fuzz_split_file(pascal_copy):
    split = pascal_copy / "ImageSets/Context/val.txt"
    original = split.read_bytes()
    found = []
    for seed in range(MUTATIONS):
        data, how = mutate_bytes(original, random.Random(seed))
        split.write_bytes(data)
        issue = problem(lambda: PascalContextMT(pascal_copy, "val", img_size=16), split)
        if issue:
            found.append(f"seed {seed} ({how}): {issue}")
    split.write_bytes(b"")
    with pytest.raises(ValueError, match=rf"split file {split} lists no image ids"):
        PascalContextMT(pascal_copy, "val", img_size=16)
    assert_no_problems(found)
    assert issubclass(AnnotationLoadError, ImageLoadError) and issubclass(ImageLoadError, ValueError)
