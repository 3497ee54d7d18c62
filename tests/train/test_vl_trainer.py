"""The multi-task VL model, one training step per head, and train_vl.py end to end."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vlmtl.data import AnswerVocab, MultiTaskCollator, MultiTaskDataset, read_jsonl
from vlmtl.metrics import normalize_answer
from vlmtl.train import VLTrainConfig, build_model

from .. import conftest

ROOT = Path(__file__).resolve().parents[2]
TASKS = ["vqa", "retrieval", "caption"]


def tiny_config(synthetic_vl, **kw) -> VLTrainConfig:
    data, model_dir = synthetic_vl
    values = dict(tasks=TASKS, model=f"local-dir:{model_dir}", data="jsonl", train_file=str(data / "train.jsonl"),
                  val_file=str(data / "val.jsonl"), image_dir=str(data), r=4, workers=0, batch_size=12)
    values.update(kw)
    return VLTrainConfig(**values)


@pytest.mark.parametrize("task", TASKS)
def test_one_step_per_head_changes_only_trainable_parameters(synthetic_vl, task):
    cfg = tiny_config(synthetic_vl)
    samples = read_jsonl(cfg.train_file, cfg.image_dir)
    answers = AnswerVocab.build([s for s in samples if s.task == "vqa"], normalize=normalize_answer)
    torch.manual_seed(0)
    model = build_model(cfg, answers)
    own = [s for s in samples if s.task == task][:6]
    dataset = MultiTaskDataset(own, model.clip.preprocess, tasks=TASKS)
    batch = MultiTaskCollator(model.clip.tokenizer, answers)([dataset[i] for i in range(len(own))])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = model(batch)
    assert set(losses) == {task} and torch.isfinite(losses[task])
    losses[task].backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed, "nothing was trained"
    assert changed <= trainable, f"frozen parameters changed: {sorted(changed - trainable)[:5]}"
    assert any(n.startswith(f"heads.{task}.") for n in changed)
    assert not any(n.startswith("heads.") and not n.startswith(f"heads.{task}.") for n in changed)
    # adapters of the task's tower(s) learn; the B (zero-init) of that task's path moves
    assert any(n.startswith("clip.backbone.") and n.endswith(".B") for n in changed)


def test_mixed_batch_losses_match_per_task_batches(synthetic_vl):
    cfg = tiny_config(synthetic_vl, dropout=0.0)
    samples = read_jsonl(cfg.train_file, cfg.image_dir)
    answers = AnswerVocab.build([s for s in samples if s.task == "vqa"], normalize=normalize_answer)
    model = build_model(cfg, answers).eval()
    collate = MultiTaskCollator(model.clip.tokenizer, answers)
    picked = []
    for task in TASKS:
        picked += [s for s in samples if s.task == task][:4]
    dataset = MultiTaskDataset(picked, model.clip.preprocess, tasks=TASKS)
    with torch.no_grad():
        mixed = model(collate([dataset[i] for i in range(len(picked))]))
        for k, task in enumerate(TASKS):
            alone = model(collate([dataset[i] for i in range(4 * k, 4 * k + 4)]))
            torch.testing.assert_close(mixed[task], alone[task], atol=1e-5, rtol=1e-4)


def run_script(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return conftest.run_script("train_vl.py", *args, timeout=timeout)


def test_train_vl_end_to_end_on_synthetic_data(synthetic_vl, tmp_path):
    data, model_dir = synthetic_vl
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"data: synthetic\ndata_root: {data}\nsynthetic_train_images: 24\nsynthetic_val_images: 8\n"
        f"model: local-dir:{model_dir}\nbatch_size: 12\nworkers: 2\nr: 4\nlog_every: 1\n"
    )
    out = tmp_path / "run"
    result = run_script("--config", str(config), "--tasks", "vqa,retrieval,caption", "--method", "mtl_lora",
                        "--max-steps", "3", "--seed", "1", "--output", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout[result.stdout.index("{"):])
    metrics = json.loads((out / "metrics.json").read_text())
    assert printed["metrics"] == metrics["metrics"]
    assert set(metrics["metrics"]) == {"vqa", "retrieval", "caption"}
    vqa = metrics["metrics"]["vqa"]  # overall accuracy: the questions' mean, so within the answer types' range
    by_type = [v for k, v in vqa.items() if k != "accuracy"]
    assert by_type and min(by_type) - 1e-9 <= vqa["accuracy"] <= max(by_type) + 1e-9
    assert {"i2t_R@1", "t2i_R@10", "rsum"} <= set(metrics["metrics"]["retrieval"])
    assert {"BLEU-4", "CIDEr"} <= set(metrics["metrics"]["caption"])
    assert metrics["steps"] == 3
    adapter_config = json.loads((out / "adapters" / "vlmtl_adapter_config.json").read_text())
    assert adapter_config["method"] == "mtl_lora" and adapter_config["tasks"] == ["vqa", "retrieval", "caption"]
    assert load_file(str(out / "adapters" / "vlmtl_adapter_model.safetensors"))
    assert (out / "heads.safetensors").stat().st_size > 0 and (out / "answer_vocab.json").is_file()
    resolved = (out / "config.yaml").read_text()
    assert "max_steps: 3" in resolved and "seed: 1" in resolved
    assert (out / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 3
    for task in ("vqa", "retrieval", "caption"):  # the adapter monitor's measurements, every logged step
        assert all(row[f"adapter/update/delta/{task}"] > 0 for row in log)
        assert all(0 < row[f"adapter/mixing_entropy/{task}"] <= 1 for row in log)
    assert "train mtl_lora" in result.stderr  # the progress bar


def test_unknown_task_is_rejected_by_the_script():
    result = run_script("--tasks", "vqa,segmentation", timeout=120)
    assert result.returncode == 2
    assert "unknown task(s) ['segmentation']" in result.stderr


def test_empty_data_is_a_clear_error(synthetic_vl, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    cfg = tiny_config(synthetic_vl, train_file=str(empty), output=str(tmp_path / "run"), max_steps=1)
    from vlmtl.train import train_vl

    with pytest.raises(ValueError, match="no training samples for task 'vqa'"):
        train_vl(cfg)


def test_corrupt_image_is_named_or_skipped_and_counted(synthetic_vl, tmp_path):
    data, _ = synthetic_vl
    lines = (data / "train.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    broken = tmp_path / "images" / "broken.png"
    broken.parent.mkdir()
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    records = [dict(json.loads(line), image=str(broken)) if json.loads(line)["image"] == first["image"]
               else dict(json.loads(line), image=str(data / json.loads(line)["image"])) for line in lines]
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    from vlmtl.data import ImageLoadError
    from vlmtl.train import train_vl

    cfg = tiny_config(synthetic_vl, train_file=str(train), max_steps=8, batch_size=16,
                      sampling="proportional", output=str(tmp_path / "raise"))
    with pytest.raises(ImageLoadError, match="broken.png"):
        train_vl(cfg)
    cfg = tiny_config(synthetic_vl, train_file=str(train), max_steps=8, batch_size=16,
                      sampling="proportional", on_bad_image="skip", output=str(tmp_path / "skip"))
    document = train_vl(cfg)
    assert document["bad_images_skipped"] > 0 and document["steps"] == 8


def test_grad_checkpointing_option_reaches_both_towers(synthetic_vl):
    cfg = tiny_config(synthetic_vl, grad_checkpointing=True)
    samples = read_jsonl(cfg.train_file, cfg.image_dir)
    model = build_model(cfg, AnswerVocab.build([s for s in samples if s.task == "vqa"], normalize=normalize_answer))
    backbone = model.clip.backbone
    assert backbone.transformer.grad_checkpointing and backbone.visual.transformer.grad_checkpointing
    plain = build_model(tiny_config(synthetic_vl), AnswerVocab.build([s for s in samples if s.task == "vqa"]))
    assert not plain.clip.backbone.transformer.grad_checkpointing
