"""MultiTaskDataset + MultiTaskCollator: fields, indices and DataLoader workers."""

from __future__ import annotations

import pickle
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from vlmtl.data import (
    AnswerVocab,
    ImageTransform,
    MultiTaskBatchSampler,
    MultiTaskCollator,
    MultiTaskDataset,
    Sample,
)


class HashTokenizer:
    """Picklable word tokenizer: crc32 ids (stable across processes), 0-padded."""

    def __call__(self, texts: list[str]) -> torch.Tensor:
        rows = [[zlib.crc32(w.encode()) % 997 + 1 for w in t.split()] for t in texts]
        width = max(len(r) for r in rows)
        return torch.tensor([r + [0] * (width - len(r)) for r in rows], dtype=torch.long)


COLORS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


@pytest.fixture
def samples(tmp_path: Path) -> list[Sample]:
    out = []
    for k, (name, rgb) in enumerate(COLORS.items()):
        path = tmp_path / f"{name}.png"
        Image.new("RGB", (12, 12), rgb).save(path)
        p, iid = str(path), f"img_{name}"
        out += [
            Sample("retrieval", p, iid, f"a {name} image", sample_id=f"r{k}a"),
            Sample("retrieval", p, iid, f"something {name}", sample_id=f"r{k}b"),
            Sample("caption", p, iid, f"a {name} picture", references=[f"a {name} picture", name], sample_id=f"c{k}"),
            Sample("vqa", p, iid, "what color?", answers=[name] * 8 + ["gray"] * 2, sample_id=f"q{k}"),
        ]
    return out


def test_dataset_items_and_task_ids(samples):
    ds = MultiTaskDataset(samples, ImageTransform(8), tasks=["caption", "vqa", "retrieval"])
    assert ds.tasks == ["caption", "vqa", "retrieval"]
    assert ds.task_of_each_index[:4] == [2, 2, 0, 1]
    assert ds.task_counts() == {"caption": 3, "vqa": 3, "retrieval": 6}
    item = ds[3]
    assert item["task"] == "vqa" and item["task_id"] == 1 and item["index"] == 3
    assert item["image"].shape == (3, 8, 8)
    assert item["answers"][0] == "red" and item["sample_id"] == "q0" and item["image_id"] == "img_red"
    default = MultiTaskDataset(samples, ImageTransform(8))
    assert default.tasks == ["vqa", "retrieval", "caption"]  # TASKS order


def test_dataset_rejects_task_not_listed(samples):
    with pytest.raises(ValueError, match=r"q0.*'vqa'.*not in tasks"):
        MultiTaskDataset(samples, ImageTransform(8), tasks=["retrieval", "caption"])
    with pytest.raises(ValueError, match="unknown task 'ocr'"):
        MultiTaskDataset(samples, ImageTransform(8), tasks=["vqa", "retrieval", "caption", "ocr"])


def test_collate_fields(samples):
    ds = MultiTaskDataset(samples, ImageTransform(8), tasks=["vqa", "retrieval", "caption"])
    vocab = AnswerVocab(["red", "green", "blue", "gray"])
    collate = MultiTaskCollator(HashTokenizer(), answer_vocab=vocab)
    order = [3, 0, 6, 1, 7, 4]  # vqa red, retr red, caption green, retr red, vqa green, retr green
    batch = collate([ds[i] for i in order])
    assert batch["size"] == 6 and batch["bad_images"] == 0
    assert batch["tasks"] == ["vqa", "retrieval", "caption", "retrieval", "vqa", "retrieval"]
    assert batch["task_ids"].tolist() == [0, 1, 2, 1, 0, 1]
    assert batch["indices"].tolist() == order
    assert batch["sample_ids"] == ["q0", "r0a", "c1", "r0b", "q1", "r1a"]
    assert batch["images"].shape == (6, 3, 8, 8)
    # Red images have a high red channel, green ones a high green channel.
    assert batch["images"][0, 0].mean() > batch["images"][2, 0].mean()
    assert batch["text_tokens"].dtype == torch.long and batch["text_tokens"].shape[0] == 6
    assert torch.equal(batch["text_tokens"], HashTokenizer()(batch["texts"]))

    assert batch["vqa_index"].tolist() == [0, 4]
    assert batch["vqa_answers"] == [["red"] * 8 + ["gray"] * 2, ["green"] * 8 + ["gray"] * 2]
    assert torch.allclose(batch["vqa_targets"], torch.tensor([[1.0, 0, 0, 2 / 3], [0, 1.0, 0, 2 / 3]]))
    assert batch["caption_index"].tolist() == [2]
    assert batch["caption_references"] == [["a green picture", "green"]]
    assert batch["retrieval_index"].tolist() == [1, 3, 5]
    assert batch["retrieval_image_ids"] == ["img_red", "img_red", "img_green"]
    groups = batch["image_groups"]
    assert batch["image_ids"][0] == batch["image_ids"][1] and groups[0] == groups[1] == groups[3]
    assert groups[1] != groups[5] and groups[5] == groups[2]


def test_collate_without_vocab_and_single_task(samples):
    ds = MultiTaskDataset(samples, ImageTransform(8))
    batch = MultiTaskCollator(HashTokenizer())([ds[0], ds[1]])
    assert "vqa_targets" not in batch
    assert batch["vqa_index"].tolist() == [] and batch["caption_references"] == []
    assert batch["retrieval_index"].tolist() == [0, 1]


def test_bad_tokenizer_output_is_reported(samples):
    ds = MultiTaskDataset(samples, ImageTransform(8))
    with pytest.raises(ValueError, match="tokenizer"):
        MultiTaskCollator(_one_row_tokenizer)([ds[0], ds[1]])


def _one_row_tokenizer(texts: list[str]) -> torch.Tensor:
    return torch.zeros(1, 4, dtype=torch.long)


def test_everything_pickles(samples):
    ds = MultiTaskDataset(samples, ImageTransform(8))
    collate = MultiTaskCollator(HashTokenizer(), AnswerVocab(["red", "green"]))
    sampler = MultiTaskBatchSampler(ds.task_of_each_index, batch_size=4, strategy="uniform", seed=0)
    ds2, collate2, sampler2 = pickle.loads(pickle.dumps((ds, collate, sampler)))
    assert torch.equal(ds2[5]["image"], ds[5]["image"])
    assert list(sampler2) == list(sampler)
    batch, batch2 = collate([ds[i] for i in range(4)]), collate2([ds2[i] for i in range(4)])
    assert torch.equal(batch["vqa_targets"], batch2["vqa_targets"])


def _batches(ds: MultiTaskDataset, workers: int, context: str | None = None) -> list[dict]:
    vocab = AnswerVocab(["red", "green", "blue", "gray"])
    sampler = MultiTaskBatchSampler(ds.task_of_each_index, batch_size=5, strategy="temperature", seed=4)
    sampler.set_epoch(1)
    loader = DataLoader(
        ds,
        batch_sampler=sampler,
        collate_fn=MultiTaskCollator(HashTokenizer(), vocab),
        num_workers=workers,
        multiprocessing_context=context if workers else None,
    )
    return list(loader)


def _assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], torch.Tensor):
                assert torch.equal(x[k], y[k]), k
            else:
                assert x[k] == y[k], k


def test_dataloader_workers_match_single_process(samples):
    ds = MultiTaskDataset(samples, ImageTransform(8))
    single = _batches(ds, 0)
    assert sum(len(set(b["tasks"])) > 1 for b in single) >= 1  # batches mix tasks
    _assert_same(single, _batches(ds, 2))


def test_dataloader_spawn_workers(samples):
    """Spawned workers receive dataset and collator by pickling (fork would hide lambdas)."""
    ds = MultiTaskDataset(samples, ImageTransform(8))
    _assert_same(_batches(ds, 0), _batches(ds, 2, context="spawn"))
