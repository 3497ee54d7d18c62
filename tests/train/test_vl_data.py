"""Which files a VL run reads, per data mode: the public VQAv2 + Karpathy files through the
config's ``vqav2``/``karpathy`` mappings, and a clear refusal of options another mode reads."""

from __future__ import annotations

import pytest

from vlmtl.train import VLTrainConfig
from vlmtl.train.vl_data import load_samples

from ..conftest import run_script
from ..data.test_readers import coco_karpathy, vqa_files  # noqa: F401  (fixtures: the public layouts)


def public_config(vqa_files, coco_karpathy, **overrides) -> VLTrainConfig:  # noqa: F811
    questions, annotations, images = vqa_files
    karpathy_json, coco_root = coco_karpathy
    vqav2 = {f"{split}_{key}": str(path) for split in ("train", "val")
             for key, path in (("questions", questions), ("annotations", annotations), ("images", images))}
    values = dict(data="vqav2_karpathy", tasks=["vqa", "retrieval"], vqav2=vqav2,
                  karpathy={"json": str(karpathy_json), "image_dir": str(coco_root)})
    return VLTrainConfig(**{**values, **overrides})


def test_vqav2_karpathy_reads_the_public_files(vqa_files, coco_karpathy):  # noqa: F811
    train, val = load_samples(public_config(vqa_files, coco_karpathy))
    assert {s.task for s in train} == {"vqa", "retrieval"} and {s.task for s in val} == {"vqa", "retrieval"}
    assert sum(s.task == "vqa" for s in train) == 3  # the three VQAv2 questions
    assert sum(s.task == "retrieval" for s in train) == 10  # Karpathy train + restval, 5 captions each


@pytest.mark.parametrize("overrides, message", [
    ({"train_file": "t.jsonl"}, r"\['train_file'\] are read by data 'jsonl' only.*reads vqav2 \{train_questions"),
    ({"vqav2": {"train_questions": "q.json"}}, r"needs vqav2 keys \['train_annotations'"),
    ({"karpathy": {"json": "k.json", "images": "x"}}, r"karpathy has unknown key\(s\) \['images'\]"),
])
def test_options_of_another_mode_or_missing_keys_are_refused(vqa_files, coco_karpathy, overrides, message):  # noqa: F811
    with pytest.raises(ValueError, match=message):
        public_config(vqa_files, coco_karpathy, **overrides)


def test_public_mappings_are_refused_in_other_modes():
    with pytest.raises(ValueError, match=r"\['vqav2'\] are read by data 'vqav2_karpathy' only"):
        VLTrainConfig(data="synthetic", vqav2={"train_questions": "q.json"})


def test_the_script_says_what_to_pass_instead_of_a_traceback(tmp_path):
    result = run_script("train_vl.py", "--data", "vqav2_karpathy", "--train-file", "t.jsonl", "--val-file",
                        "v.jsonl", "--image-dir", str(tmp_path), "--output", str(tmp_path / "run"), timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "read by data 'jsonl' only" in result.stderr and "--vqav2" in result.stderr
