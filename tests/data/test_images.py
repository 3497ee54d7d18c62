"""Image loading errors and skip-and-count in the dataset."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from vlmtl.data import ImageLoadError, ImageTransform, MultiTaskCollator, MultiTaskDataset, Sample, load_image


class LengthTokenizer:
    """Tiny picklable tokenizer: one token per word (its length)."""

    def __call__(self, texts: list[str]) -> torch.Tensor:
        rows = [[len(w) for w in t.split()] for t in texts]
        width = max(len(r) for r in rows)
        return torch.tensor([r + [0] * (width - len(r)) for r in rows], dtype=torch.long)


def _png_bytes(mode: str = "RGB", size=(16, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 120).save(buf, format="PNG")
    return buf.getvalue()


def test_load_image_converts_to_rgb(tmp_path):
    for mode in ("L", "RGBA", "P"):
        path = tmp_path / f"{mode}.png"
        path.write_bytes(_png_bytes(mode))
        image = load_image(path)
        assert image.mode == "RGB" and image.size == (16, 16)


def test_corrupt_truncated_and_missing(tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"definitely not a png body" * 10)
    with pytest.raises(ImageLoadError, match=r"corrupt\.png"):
        load_image(corrupt)

    noise = Image.frombytes("RGB", (64, 64), bytes(range(256)) * 48)
    buf = io.BytesIO()
    noise.save(buf, format="PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match=r"truncated\.png"):
        load_image(truncated)

    with pytest.raises(ImageLoadError, match=r"missing\.png"):
        load_image(tmp_path / "missing.png")
    assert issubclass(ImageLoadError, ValueError)


def test_image_transform_shape_and_normalisation(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (40, 20), (255, 0, 0)).save(path)
    t = ImageTransform(16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x = t(load_image(path))
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.ones(16, 16)) and torch.allclose(x[1], -torch.ones(16, 16))


@pytest.fixture
def samples_with_bad_image(tmp_path: Path) -> list[Sample]:
    good = tmp_path / "good.png"
    good.write_bytes(_png_bytes())
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    return [
        Sample("retrieval", str(good), "good", "a gray square", sample_id="r0"),
        Sample("vqa", str(bad), "bad", "what is it?", answers=["x"] * 10, sample_id="q1"),
        Sample("caption", str(good), "good", "gray", sample_id="c2"),
        Sample("retrieval", str(tmp_path / "gone.png"), "gone", "nothing", sample_id="r3"),
    ]


def test_raise_mode_raises(samples_with_bad_image):
    ds = MultiTaskDataset(samples_with_bad_image, ImageTransform(8))
    assert ds[0]["image"].shape == (3, 8, 8)
    with pytest.raises(ImageLoadError, match=r"bad\.png"):
        ds[1]


def test_skip_mode_drops_and_counts(samples_with_bad_image, caplog):
    ds = MultiTaskDataset(samples_with_bad_image, ImageTransform(8), on_bad_image="skip")
    items = [ds[i] for i in range(len(ds))]
    assert ds.bad_images == 2
    assert [Path(p).name for p in ds.bad_image_paths] == ["bad.png", "gone.png"]
    assert "q1" in caplog.text and "r3" in caplog.text  # skips are logged, not silent
    batch = MultiTaskCollator(LengthTokenizer())(items)
    assert batch["size"] == 2 and batch["bad_images"] == 2
    assert batch["bad_sample_ids"] == ["q1", "r3"]
    assert batch["sample_ids"] == ["r0", "c2"]
    assert batch["images"].shape == (2, 3, 8, 8)
    assert batch["vqa_index"].numel() == 0 and batch["vqa_answers"] == []


def test_skip_mode_counts_through_dataloader_workers(samples_with_bad_image):
    ds = MultiTaskDataset(samples_with_bad_image, ImageTransform(8), on_bad_image="skip")
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=MultiTaskCollator(LengthTokenizer()))
    batches = list(loader)
    assert sum(b["bad_images"] for b in batches) == 2
    assert sum(b["size"] for b in batches) == 2


def test_all_bad_batch_is_empty(samples_with_bad_image):
    ds = MultiTaskDataset(samples_with_bad_image, ImageTransform(8), on_bad_image="skip")
    batch = MultiTaskCollator(LengthTokenizer())([ds[1], ds[3]])
    assert batch["size"] == 0 and batch["bad_images"] == 2
    assert batch["images"].shape[0] == 0 and batch["task_ids"].shape == (0,)


def test_bad_on_bad_image_value(samples_with_bad_image):
    with pytest.raises(ValueError, match="on_bad_image"):
        MultiTaskDataset(samples_with_bad_image, ImageTransform(8), on_bad_image="ignore")
