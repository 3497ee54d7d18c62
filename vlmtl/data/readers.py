"""Readers for the public annotation formats, each returning ``list[Sample]``.

Images are never opened here (that happens lazily in the dataset); readers only check
that the annotation files have the documented layout, so a wrong file fails at once
with its name and the missing key rather than as a KeyError during training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .samples import Sample, check_task

VQA_IMAGE_PATTERN = "COCO_{split}_{image_id:012d}.jpg"
KARPATHY_SPLITS = ("train", "val", "test", "restval")


def load_json(path: str | Path) -> Any:
    """Parse a JSON file; FileNotFoundError / ValueError that name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        with path.open("r", encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a valid JSON file ({e})") from e


def require_keys(obj: Any, keys: tuple[str, ...], path: str | Path, where: str) -> dict[str, Any]:
    """Check ``obj`` is a dict holding ``keys``; the error names file, place and keys."""
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: {where} should be a JSON object, got {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise ValueError(f"{path}: {where} is missing key(s) {missing}")
    return obj


def require_list(obj: dict[str, Any], key: str, path: str | Path, where: str) -> list[Any]:
    value = obj[key]
    if not isinstance(value, list):
        raise ValueError(f"{path}: {where} key {key!r} should be a list, got {type(value).__name__}")
    return value


def require_id(obj: dict[str, Any], key: str, path: str | Path, where: str) -> int | str:
    """An id used as a dict key must be an int or a string (a list or null is unhashable or ambiguous)."""
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{path}: {where} key {key!r} should be an integer or a string, got {value!r}")
    return value


def require_int(obj: dict[str, Any], key: str, path: str | Path, where: str) -> int:
    """An integer, also written as a string ("42") or a whole float (42.0)."""
    value = obj[key]
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise TypeError
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: {where} key {key!r} should be an integer, got {value!r}") from None


def read_vqav2(
    questions_json: str | Path,
    annotations_json: str | Path,
    image_dir: str | Path,
    image_pattern: str = VQA_IMAGE_PATTERN,
) -> list[Sample]:
    """Official VQAv2 question + annotation files → one vqa Sample per question.

    ``{split}`` in ``image_pattern`` is the questions file's ``data_subtype`` (e.g.
    ``train2014``); ``sample_id`` is the ``question_id`` (as the official results file
    needs) and ``answers`` the 10 human answers.
    """
    questions_doc = require_keys(load_json(questions_json), ("questions", "data_subtype"), questions_json, "top level")
    annotations_doc = require_keys(load_json(annotations_json), ("annotations",), annotations_json, "top level")
    split = questions_doc["data_subtype"]
    by_qid: dict[int, list[str]] = {}
    answer_type: dict[int, str | None] = {}
    for i, ann in enumerate(require_list(annotations_doc, "annotations", annotations_json, "top level")):
        where = f"annotations[{i}]"
        require_keys(ann, ("question_id", "image_id", "answers"), annotations_json, where)
        answers = require_list(ann, "answers", annotations_json, where)
        if not answers:
            raise ValueError(f"{annotations_json}: {where} has an empty 'answers' list")
        qid = require_id(ann, "question_id", annotations_json, where)
        by_qid[qid] = [_answer_text(a, annotations_json, f"{where}.answers[{j}]") for j, a in enumerate(answers)]
        answer_type[qid] = _optional_str(ann, "answer_type", annotations_json, where)

    image_dir = Path(image_dir)
    samples = []
    for i, q in enumerate(require_list(questions_doc, "questions", questions_json, "top level")):
        where = f"questions[{i}]"
        require_keys(q, ("image_id", "question", "question_id"), questions_json, where)
        qid = require_id(q, "question_id", questions_json, where)
        if qid not in by_qid:
            raise ValueError(f"{annotations_json}: no annotation for question_id {qid} of {questions_json}")
        image_id = require_int(q, "image_id", questions_json, where)
        image = image_dir / image_pattern.format(split=split, image_id=image_id)
        try:
            sample = Sample(task="vqa", image=str(image), image_id=str(image_id), text=q["question"],
                            answers=by_qid[qid], sample_id=str(qid), answer_type=answer_type[qid])
        except ValueError as e:
            raise ValueError(f"{questions_json}: {where}: {e}") from e
        samples.append(sample)
    return samples


def _optional_str(obj: dict, key: str, path: str | Path, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{path}: {where}: '{key}' must be a string, got {type(value).__name__}")
    return value


def _answer_text(answer: Any, path: str | Path, where: str) -> str:
    """One human answer; a number is read as its text ("2"), null or a list is an error."""
    value = require_keys(answer, ("answer",), path, where)["answer"]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{path}: {where} 'answer' should be a string, got {type(value).__name__}")
    return str(value)


def read_karpathy(json_path: str | Path, image_dir: str | Path, split: str, task: str) -> list[Sample]:
    """Karpathy ``dataset_coco.json`` / ``dataset_flickr30k.json`` → one Sample per sentence.

    ``split`` is ``train``/``val``/``test`` (``train`` also takes COCO's ``restval``);
    ``task`` is ``retrieval`` or ``caption``; ``references`` holds every raw sentence of
    the image. The image path is ``image_dir/filepath/filename`` (COCO) or
    ``image_dir/filename``; ``image_id`` is ``cocoid`` when present, else ``imgid``.
    """
    check_task(task, where=str(json_path))
    if task not in ("retrieval", "caption"):
        raise ValueError(
            f"{json_path}: Karpathy files hold captions; task must be 'retrieval' or 'caption', not {task!r}"
        )
    if split not in KARPATHY_SPLITS:
        raise ValueError(f"{json_path}: unknown Karpathy split {split!r}; known splits are {list(KARPATHY_SPLITS)}")
    wanted = {"train", "restval"} if split == "train" else {split}
    doc = require_keys(load_json(json_path), ("images",), json_path, "top level")
    image_dir = Path(image_dir)
    samples = []
    for i, entry in enumerate(require_list(doc, "images", json_path, "top level")):
        where = f"images[{i}]"
        require_keys(entry, ("filename", "imgid", "split", "sentences"), json_path, where)
        if not isinstance(entry["split"], str):
            raise ValueError(f"{json_path}: {where} key 'split' should be a string, got {entry['split']!r}")
        if entry["split"] not in wanted:
            continue
        sentences = require_list(entry, "sentences", json_path, where)
        raws = [_sentence_text(s, json_path, f"{where}.sentences[{j}]") for j, s in enumerate(sentences)]
        filepath, filename = entry.get("filepath", ""), entry["filename"]
        if not isinstance(filepath, str) or not isinstance(filename, str) or not filename:
            raise ValueError(f"{json_path}: {where} 'filepath' and 'filename' should be strings, "
                             f"got {filepath!r} and {filename!r}")
        image = image_dir / filepath / filename
        image_id = str(entry.get("cocoid", entry["imgid"]))
        for j, (s, raw) in enumerate(zip(sentences, raws)):
            sent_id = s.get("sentid", f"{entry['imgid']}_{j}")
            samples.append(
                Sample(
                    task=task,
                    image=str(image),
                    image_id=image_id,
                    text=raw,
                    references=list(raws),
                    sample_id=str(sent_id),
                )
            )
    return samples


def _sentence_text(sentence: Any, path: str | Path, where: str) -> str:
    """The stripped ``raw`` text, or the joined ``tokens`` when ``raw`` is blank."""
    raw = require_keys(sentence, ("raw",), path, where)["raw"]
    if not isinstance(raw, str):
        raise ValueError(f"{path}: {where} key 'raw' should be a string, got {type(raw).__name__}")
    tokens = sentence.get("tokens", [])
    if not raw.strip() and isinstance(tokens, list) and all(isinstance(t, str) for t in tokens):
        raw = " ".join(tokens)
    if not raw.strip():
        raise ValueError(f"{path}: {where} has empty text (blank 'raw' and no 'tokens')")
    return raw.strip()


def read_jsonl(path: str | Path, image_dir: str | Path) -> list[Sample]:
    """One JSON object per line: ``{"image", "task", "text", "answers"?, "references"?,
    "image_id"?, "id"?}``; ``image`` is relative to ``image_dir``. Blank lines are
    skipped, unknown keys ignored; ``image_id`` defaults to the image path and ``id``
    to the line number. A bad line raises ValueError naming the file and line number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"JSONL file not found: {path}")
    image_dir = Path(image_dir)
    samples = []
    with path.open("rb") as f:  # bytes, so a bad byte is reported with its line number
        for lineno, data in enumerate(f, start=1):
            try:
                line = data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}: line {lineno}: not valid UTF-8 ({e})") from e
            if not line.strip():
                continue
            try:
                samples.append(_jsonl_sample(json.loads(line), image_dir, lineno))
            except (json.JSONDecodeError, ValueError, TypeError) as e:
                raise ValueError(f"{path}: line {lineno}: {e}") from e
    return samples


def _jsonl_sample(obj: Any, image_dir: Path, lineno: int) -> Sample:
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in ("image", "task", "text") if k not in obj]
    if missing:
        raise ValueError(f"missing key(s) {missing}")
    if not isinstance(obj["image"], str):
        raise ValueError(f"'image' must be a path string, got {type(obj['image']).__name__}")
    return Sample(
        task=obj["task"],
        image=str(image_dir / obj["image"]),
        image_id=str(obj.get("image_id", obj["image"])),
        text=obj["text"],
        answers=obj.get("answers"),
        references=obj.get("references"),
        sample_id=str(obj.get("id", lineno)),
        answer_type=obj.get("answer_type"),
    )
