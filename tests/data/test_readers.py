"""Readers on small fixtures written in the exact public layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vlmtl.data import Sample, load_image, read_jsonl, read_karpathy, read_vqav2


def _png(path: Path, color=(200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)


def _answers(words: list[str]) -> list[dict]:
    return [{"answer": w, "answer_confidence": "yes", "answer_id": i + 1} for i, w in enumerate(words)]


@pytest.fixture
def vqa_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    image_dir = tmp_path / "train2014"
    for image_id in (9, 42):
        _png(image_dir / f"COCO_train2014_{image_id:012d}.jpg")
    questions = {
        "info": {"description": "VQA v2"},
        "task_type": "Open-Ended",
        "data_type": "mscoco",
        "license": {},
        "data_subtype": "train2014",
        "questions": [
            {"image_id": 9, "question": "What color is the plate?", "question_id": 9000},
            {"image_id": 9, "question": "Is it sunny?", "question_id": 9001},
            {"image_id": 42, "question": "How many dogs?", "question_id": 42000},
        ],
    }
    annotations = {
        "info": {},
        "license": {},
        "data_subtype": "train2014",
        "annotations": [
            {
                "question_id": 9000,
                "image_id": 9,
                "question_type": "what color is the",
                "answer_type": "other",
                "multiple_choice_answer": "white",
                "answers": _answers(["white"] * 8 + ["gray", "white and blue"]),
            },
            {
                "question_id": 9001,
                "image_id": 9,
                "question_type": "is it",
                "answer_type": "yes/no",
                "multiple_choice_answer": "yes",
                "answers": _answers(["yes"] * 6 + ["no"] * 4),
            },
            {
                "question_id": 42000,
                "image_id": 42,
                "question_type": "how many",
                "answer_type": "number",
                "multiple_choice_answer": "2",
                "answers": _answers(["2"] * 9 + ["3"]),
            },
        ],
    }
    q_path = tmp_path / "v2_OpenEnded_mscoco_train2014_questions.json"
    a_path = tmp_path / "v2_mscoco_train2014_annotations.json"
    q_path.write_text(json.dumps(questions))
    a_path.write_text(json.dumps(annotations))
    return q_path, a_path, image_dir


def test_read_vqav2(vqa_files):
    q_path, a_path, image_dir = vqa_files
    samples = read_vqav2(q_path, a_path, image_dir)
    assert [s.sample_id for s in samples] == ["9000", "9001", "42000"]
    assert all(s.task == "vqa" for s in samples)
    first = samples[0]
    assert first.text == "What color is the plate?"
    assert first.image_id == "9"
    assert first.answers == ["white"] * 8 + ["gray", "white and blue"]
    assert Path(first.image).name == "COCO_train2014_000000000009.jpg"
    assert load_image(samples[2].image).size == (8, 8)
    assert [s.answer_type for s in samples] == ["other", "yes/no", "number"]


def test_read_vqav2_custom_pattern(vqa_files, tmp_path):
    q_path, a_path, _ = vqa_files
    samples = read_vqav2(q_path, a_path, tmp_path / "imgs", image_pattern="{split}/{image_id}.png")
    assert samples[2].image == str(tmp_path / "imgs" / "train2014" / "42.png")


def test_vqav2_wrong_layout_names_file_and_key(vqa_files, tmp_path):
    q_path, a_path, image_dir = vqa_files
    doc = json.loads(q_path.read_text())
    del doc["data_subtype"]
    bad_q = tmp_path / "bad_questions.json"
    bad_q.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"bad_questions\.json.*data_subtype"):
        read_vqav2(bad_q, a_path, image_dir)

    ann = json.loads(a_path.read_text())
    del ann["annotations"][1]["answers"]
    bad_a = tmp_path / "bad_annotations.json"
    bad_a.write_text(json.dumps(ann))
    with pytest.raises(ValueError, match=r"bad_annotations\.json.*annotations\[1\].*answers"):
        read_vqav2(q_path, bad_a, image_dir)


def test_vqav2_question_without_annotation(vqa_files, tmp_path):
    q_path, a_path, image_dir = vqa_files
    ann = json.loads(a_path.read_text())
    ann["annotations"] = ann["annotations"][:2]
    short = tmp_path / "short.json"
    short.write_text(json.dumps(ann))
    with pytest.raises(ValueError, match="42000"):
        read_vqav2(q_path, short, image_dir)


def test_not_json_and_missing_file(vqa_files, tmp_path):
    q_path, a_path, image_dir = vqa_files
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json at all")
    with pytest.raises(ValueError, match=r"garbage\.json.*not a valid JSON"):
        read_vqav2(garbage, a_path, image_dir)
    with pytest.raises(FileNotFoundError, match=r"nowhere\.json"):
        read_vqav2(tmp_path / "nowhere.json", a_path, image_dir)
    with pytest.raises(FileNotFoundError, match=r"absent_karpathy\.json"):
        read_karpathy(tmp_path / "absent_karpathy.json", image_dir, "train", "retrieval")
    with pytest.raises(FileNotFoundError, match=r"absent\.jsonl"):
        read_jsonl(tmp_path / "absent.jsonl", image_dir)


def _sentences(imgid: int, first_sentid: int, raws: list[str]) -> list[dict]:
    return [
        {"tokens": raw.lower().strip(" .").split(), "raw": raw, "imgid": imgid, "sentid": first_sentid + k}
        for k, raw in enumerate(raws)
    ]


@pytest.fixture
def coco_karpathy(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "coco"
    entries = []
    layout = [
        ("train2014", "train", 57870),
        ("val2014", "restval", 179765),
        ("val2014", "val", 391895),
        ("val2014", "test", 522418),
    ]
    for imgid, (folder, split, cocoid) in enumerate(layout):
        filename = f"COCO_{folder}_{cocoid:012d}.jpg"
        _png(root / folder / filename)
        raws = [f"A photo number {imgid} sentence {k}. " for k in range(5)]
        entries.append(
            {
                "filepath": folder,
                "sentids": list(range(imgid * 5, imgid * 5 + 5)),
                "filename": filename,
                "imgid": imgid,
                "split": split,
                "sentences": _sentences(imgid, imgid * 5, raws),
                "cocoid": cocoid,
            }
        )
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"images": entries, "dataset": "coco"}))
    return path, root


def test_read_karpathy_coco_train_includes_restval(coco_karpathy):
    path, root = coco_karpathy
    samples = read_karpathy(path, root, "train", "retrieval")
    assert len(samples) == 10  # train + restval, 5 sentences each
    assert {s.image_id for s in samples} == {"57870", "179765"}
    assert all(s.task == "retrieval" for s in samples)
    first = samples[0]
    assert first.text == "A photo number 0 sentence 0."  # raw, stripped
    assert first.references == [f"A photo number 0 sentence {k}." for k in range(5)]
    assert first.sample_id == "0"
    assert Path(first.image) == root / "train2014" / "COCO_train2014_000000057870.jpg"
    assert all(Path(s.image).is_file() for s in samples)


def test_read_karpathy_caption_val_and_test(coco_karpathy):
    path, root = coco_karpathy
    val = read_karpathy(path, root, "val", "caption")
    test = read_karpathy(path, root, "test", "caption")
    assert {s.image_id for s in val} == {"391895"} and len(val) == 5
    assert {s.image_id for s in test} == {"522418"}
    assert all(len(s.references) == 5 and s.task == "caption" for s in val)


def test_read_karpathy_flickr_and_errors(tmp_path):
    _png(tmp_path / "imgs" / "1000092795.jpg")
    doc = {
        "images": [
            {
                "sentids": [0, 1],
                "imgid": 0,
                "sentences": _sentences(0, 0, ["Two young guys outside .", "Two men in a yard ."]),
                "split": "train",
                "filename": "1000092795.jpg",
            }
        ],
        "dataset": "flickr30k",
    }
    path = tmp_path / "dataset_flickr30k.json"
    path.write_text(json.dumps(doc))
    samples = read_karpathy(path, tmp_path / "imgs", "train", "retrieval")
    assert [s.image_id for s in samples] == ["0", "0"]
    assert Path(samples[1].image) == tmp_path / "imgs" / "1000092795.jpg"
    with pytest.raises(ValueError, match="retrieval.*caption"):
        read_karpathy(path, tmp_path, "train", "vqa")
    with pytest.raises(ValueError, match="unknown task 'ocr'"):
        read_karpathy(path, tmp_path, "train", "ocr")
    with pytest.raises(ValueError, match="unknown Karpathy split 'dev'"):
        read_karpathy(path, tmp_path, "dev", "caption")

    del doc["images"][0]["sentences"]
    bad = tmp_path / "bad_karpathy.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"bad_karpathy\.json.*images\[0\].*sentences"):
        read_karpathy(bad, tmp_path, "train", "caption")
    bad.write_text(json.dumps({"annotations": []}))
    with pytest.raises(ValueError, match=r"bad_karpathy\.json.*'images'"):
        read_karpathy(bad, tmp_path, "train", "caption")


def _write_jsonl(path: Path, rows: list) -> None:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")


def test_read_jsonl(tmp_path):
    _png(tmp_path / "imgs" / "a" / "x.png")
    rows = [
        {"image": "a/x.png", "task": "vqa", "text": "color?", "answers": ["red"] * 10, "id": "q1", "image_id": "x",
         "answer_type": "other"},
        "",
        {"image": "a/x.png", "task": "retrieval", "text": "a red square", "extra": 1},
        {"image": "a/x.png", "task": "caption", "text": "a red square", "references": ["a red square", "red box"]},
        {"image": "a/x.png", "task": "caption", "text": "a red thing"},
    ]
    path = tmp_path / "train.jsonl"
    _write_jsonl(path, rows)
    samples = read_jsonl(path, tmp_path / "imgs")
    assert [s.task for s in samples] == ["vqa", "retrieval", "caption", "caption"]
    assert samples[0].sample_id == "q1" and samples[0].image_id == "x"
    assert samples[0].answer_type == "other" and samples[1].answer_type is None
    assert samples[1].sample_id == "3"  # default id: the line number
    assert samples[1].image_id == "a/x.png"
    assert samples[2].references == ["a red square", "red box"]
    assert samples[3].references == ["a red thing"]  # caption defaults to its own text
    assert load_image(samples[0].image).size == (8, 8)


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("{broken json", "line 2"),
        (json.dumps({"image": "x.png", "task": "vqa", "text": "q?"}), r"line 2.*answers"),
        (json.dumps({"image": "x.png", "text": "no task"}), r"line 2.*missing key.*task"),
        (json.dumps({"image": "x.png", "task": "ocr", "text": "t"}), r"line 2.*unknown task 'ocr'.*vqa"),
        (json.dumps({"image": "x.png", "task": "caption", "text": "  "}), r"line 2.*empty text"),
        (json.dumps(["a", "list"]), r"line 2.*JSON object"),
        (json.dumps({"image": "x.png", "task": "vqa", "text": "q?", "answers": ["a"], "answer_type": 3}),
         r"line 2.*'answer_type' must be a string"),
    ],
)
def test_read_jsonl_bad_line_names_file_and_line(tmp_path, bad_line, message):
    path = tmp_path / "broken.jsonl"
    _write_jsonl(path, [{"image": "x.png", "task": "retrieval", "text": "fine"}, bad_line])
    with pytest.raises(ValueError, match=r"broken\.jsonl.*" + message):
        read_jsonl(path, tmp_path)


def test_sample_validation():
    with pytest.raises(ValueError, match=r"unknown task 'detection'.*\['vqa', 'retrieval', 'caption'\]"):
        Sample(task="detection", image="x.png", image_id="1", text="t", sample_id="s9")
    with pytest.raises(ValueError, match="s7.*empty text"):
        Sample(task="retrieval", image="x.png", image_id="1", text="", sample_id="s7")
    with pytest.raises(ValueError, match="s8.*answers"):
        Sample(task="vqa", image="x.png", image_id="1", text="why?", answers=[], sample_id="s8")
    auto = Sample(task="retrieval", image="x.png", image_id=5, text="a cat")
    assert auto.image_id == "5" and auto.sample_id.startswith("retrieval-5-")
