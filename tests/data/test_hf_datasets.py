"""Hugging Face ``datasets`` as a source: saved datasets (image bytes inside), in-memory ones,
the imagefolder and JSON layouts, through the real DataLoader with workers, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vlmtl.data import (
    ImageLoadError,
    ImageTransform,
    MultiTaskBatchSampler,
    MultiTaskCollator,
    MultiTaskDataset,
    load_image,
    open_hf_source,
    read_jsonl,
    samples_from_hf,
    to_hf_dataset,
    write_synthetic_dataset,
)
from vlmtl.data.hf_datasets import IMAGE_REFERENCE

from ..conftest import run_script


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("vl")
    write_synthetic_dataset(root, n_train=6, n_val=3, seed=0)
    return root, read_jsonl(root / "train.jsonl", root)


def pixels(path_or_reference: str) -> np.ndarray:
    return np.asarray(load_image(path_or_reference))


def test_saved_dataset_gives_the_same_samples_and_pixels(synthetic, tmp_path):
    root, samples = synthetic
    to_hf_dataset(samples).save_to_disk(str(tmp_path / "saved"))
    back = samples_from_hf(datasets.load_from_disk(str(tmp_path / "saved")), name="train")
    assert len(back) == len(samples)
    for original, read in zip(samples, back):
        assert read.image.startswith(IMAGE_REFERENCE)  # read from the dataset's own Arrow files
        for field in ("task", "text", "image_id", "sample_id", "answers", "answer_type"):
            assert getattr(read, field) == getattr(original, field), field
        assert read.references == original.references
        assert np.array_equal(pixels(read.image), pixels(original.image))


def test_in_memory_dataset_is_saved_once_into_the_cache(synthetic, tmp_path):
    _, samples = synthetic
    dataset = to_hf_dataset(samples[:5])
    first = samples_from_hf(dataset, cache_dir=tmp_path / "cache")
    copies = list((tmp_path / "cache").iterdir())
    assert len(copies) == 1 and (copies[0] / "state.json").is_file()
    mtime = (copies[0] / "state.json").stat().st_mtime_ns
    second = samples_from_hf(dataset, cache_dir=tmp_path / "cache")
    assert [s.image for s in second] == [s.image for s in first]
    assert (copies[0] / "state.json").stat().st_mtime_ns == mtime, "the cached copy was rewritten"
    with pytest.raises(ValueError, match="holds its images as bytes: pass cache_dir"):
        samples_from_hf(dataset)


def test_mixed_task_loader_with_workers_reads_dataset_images(synthetic, tmp_path):
    _, samples = synthetic
    to_hf_dataset(samples).save_to_disk(str(tmp_path / "saved"))
    read = samples_from_hf(datasets.load_from_disk(str(tmp_path / "saved")))
    dataset = MultiTaskDataset(read, ImageTransform(32))
    sampler = MultiTaskBatchSampler(dataset.task_of_each_index, batch_size=8, seed=0)
    tokenizer = lambda texts: torch.zeros(len(texts), 8, dtype=torch.long)  # noqa: E731 (text is not under test)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=2, collate_fn=MultiTaskCollator(tokenizer))
    batches = list(loader)
    assert sum(len(b["task_ids"]) for b in batches) == len(read)
    assert {int(t) for b in batches for t in b["task_ids"]} == set(range(len(dataset.tasks)))
    assert all(b["images"].shape[1:] == (3, 32, 32) and torch.isfinite(b["images"]).all() for b in batches)


def test_imagefolder_layout_reads_the_files_themselves(synthetic, tmp_path):
    _, samples = synthetic
    folder = tmp_path / "imagefolder" / "train"
    folder.mkdir(parents=True)
    rows = []
    for i, s in enumerate(samples[:4]):
        name = f"{i}.png"
        load_image(s.image).save(folder / name)
        rows.append({"file_name": name, "task": s.task, "text": s.text, "answers": s.answers})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    splits = open_hf_source(tmp_path / "imagefolder")
    read = samples_from_hf(splits["train"])
    assert sorted(Path(s.image).name for s in read) == sorted(r["file_name"] for r in rows)
    assert all(Path(s.image).is_file() for s in read)
    assert {s.text for s in read} == {r["text"] for r in rows}


def test_json_files_with_relative_paths_and_image_dir(synthetic, tmp_path):
    root, samples = synthetic
    lines = [{"image": str(Path(s.image).relative_to(root)), "task": s.task, "text": s.text, "answers": s.answers,
              "references": s.references} for s in samples[:4]]
    for split in ("train", "validation"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    splits = open_hf_source({"train": tmp_path / "train.jsonl", "validation": tmp_path / "validation.jsonl"})
    read = samples_from_hf(splits["validation"], image_dir=root)
    assert [s.image for s in read] == [s.image for s in samples[:4]]


def test_bad_sources_and_rows_name_the_problem(synthetic, tmp_path):
    _, samples = synthetic
    no_task = datasets.Dataset.from_dict({"image": ["a.png"], "text": ["a cat"]})
    with pytest.raises(ValueError, match=r"no column\(s\) \['task'\]"):
        samples_from_hf(no_task)
    bad_task = datasets.Dataset.from_dict({"image": ["a.png"], "task": ["segment"], "text": ["a cat"]})
    with pytest.raises(ValueError, match="row 0: .*unknown task 'segment'"):
        samples_from_hf(bad_task)
    with pytest.raises(FileNotFoundError, match="hf_dataset not found"):
        open_hf_source(tmp_path / "nowhere")
    with pytest.raises(ImageLoadError, match="cannot read image hf-dataset://"):
        load_image(f"{IMAGE_REFERENCE}{tmp_path / 'missing'}#0")


def test_train_vl_reads_an_exported_synthetic_set(tmp_path):
    export = run_script("export_hf_dataset.py", "--output", str(tmp_path / "hf"), "--synthetic-train-images", "24",
                        "--synthetic-val-images", "8", "--data-root", str(tmp_path / "generated"))
    assert export.returncode == 0, export.stderr[-2000:]
    assert set(datasets.load_from_disk(str(tmp_path / "hf"))) == {"train", "validation"}
    done = run_script("train_vl.py", "--data", "hf", "--hf-dataset", str(tmp_path / "hf"), "--max-steps", "2",
                      "--batch-size", "8", "--workers", "1", "--eval-max-samples", "8", "--save-every", "0",
                      "--output", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 2 and set(metrics["metrics"]) == {"vqa", "retrieval"}
    refused = run_script("train_vl.py", "--data", "synthetic", "--hf-dataset", str(tmp_path / "hf"))
    assert refused.returncode != 0 and "hf_dataset is read by data 'hf' only" in refused.stderr
    missing = run_script("train_vl.py", "--data", "hf", "--hf-dataset", str(tmp_path / "hf"),
                         "--hf-val-split", "test", "--output", str(tmp_path / "run2"))
    assert missing.returncode != 0 and "has no split(s) ['test']" in missing.stderr


def test_images_of_a_saved_dataset_are_not_loaded_into_memory_to_list_samples(synthetic, tmp_path):
    """Listing the samples reads the Arrow columns, not the image bytes: a dataset whose
    bytes are garbage still lists (the error comes when an image is loaded, naming it)."""
    junk = datasets.Dataset.from_dict(
        {"image": [{"bytes": b"not an image", "path": None}], "task": ["retrieval"], "text": ["a red cube"]},
        features=datasets.Features({"image": datasets.Image(), "task": datasets.Value("string"),
                                    "text": datasets.Value("string")}))
    junk.save_to_disk(str(tmp_path / "junk"))
    (sample,) = samples_from_hf(datasets.load_from_disk(str(tmp_path / "junk")))
    with pytest.raises(ImageLoadError, match="cannot read image"):
        load_image(sample.image)
