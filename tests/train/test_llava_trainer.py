"""LLaVA in the VL trainer: collated prompts and labels, per-task losses of a mixed batch,
a training step, generated-answer evaluation, and train_vl.py --model llava end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vlmtl.data import MultiTaskDataset, read_jsonl
from vlmtl.data.answers import majority_answer
from vlmtl.metrics import vqa_accuracy
from vlmtl.registry import LM_IGNORE_INDEX as IGNORE_INDEX
from vlmtl.train import VLTrainConfig, build_model
from vlmtl.train.llava_model import VLLlavaModel, per_task_lm_losses
from vlmtl.train.vl_eval import evaluate_llava

from .. import conftest

ROOT = Path(__file__).resolve().parents[2]
TASKS = ["vqa", "caption"]


def llava_config(synthetic_llava, **kw) -> VLTrainConfig:
    data, model_dir = synthetic_llava
    values = dict(tasks=TASKS, backbone="llava", model=str(model_dir), data="jsonl",
                  train_file=str(data / "train.jsonl"), val_file=str(data / "val.jsonl"), image_dir=str(data),
                  r=4, workers=0, batch_size=8)
    values.update(kw)
    return VLTrainConfig(**values)


def picked_items(model: VLLlavaModel, cfg: VLTrainConfig, per_task: int = 3) -> list[dict]:
    samples = read_jsonl(cfg.train_file, cfg.image_dir)
    picked = [s for task in TASKS for s in [s for s in samples if s.task == task][:per_task]]
    dataset = MultiTaskDataset(picked, model.preprocess, tasks=TASKS)
    return [dataset[i] for i in range(len(picked))]


@pytest.fixture(scope="module")
def llava_model(synthetic_llava) -> tuple[VLLlavaModel, VLTrainConfig]:
    cfg = llava_config(synthetic_llava, dropout=0.0)
    torch.manual_seed(0)
    model = build_model(cfg, None)
    with torch.no_grad():  # distinct non-zero updates per task, else every task would look alike
        generator = torch.Generator().manual_seed(1)
        for name, param in model.named_parameters():
            if name.endswith((".B", ".Lambda", ".w")):
                param.copy_(0.3 * torch.randn(param.shape, generator=generator))
    return model.eval(), cfg


def test_collator_masks_all_but_the_target_and_eos(llava_model):
    model, cfg = llava_model
    items = picked_items(model, cfg)
    batch = model.collator()(items)
    tokenizer = model.llava.tokenizer
    assert batch["task_ids"].tolist() == [0, 0, 0, 1, 1, 1]
    assert batch["pixel_values"].shape[0] == len(items)
    for row, item in enumerate(items):
        kept = [i for i in batch["labels"][row].tolist() if i != IGNORE_INDEX]
        target = majority_answer(item["answers"]) if item["task"] == "vqa" else item["text"]
        assert kept == tokenizer.encode(target) + [tokenizer.eos_id]
        prompt = tokenizer.decode(batch["input_ids"][row].tolist())  # words only: punctuation is dropped
        template = f"question: {item['text']} answer:" if item["task"] == "vqa" else "describe the image:"
        assert prompt.startswith(tokenizer.decode(tokenizer.encode(template)))
        image_positions = batch["input_ids"][row] == tokenizer.image_token_id
        assert int(image_positions.sum()) == model.llava.num_image_tokens
        assert bool((batch["labels"][row][image_positions] == IGNORE_INDEX).all())


def test_generation_collator_is_left_padded_without_labels(llava_model):
    model, cfg = llava_model
    batch = model.collator(with_targets=False)(picked_items(model, cfg))
    assert "labels" not in batch
    assert bool((batch["attention_mask"][:, -1] == 1).all())
    assert bool((batch["attention_mask"][:, 0] == 0).any())  # questions differ in length from the caption prompt


def test_per_task_losses_of_a_mixed_batch_equal_each_task_alone(llava_model):
    model, cfg = llava_model
    items = picked_items(model, cfg)
    collate = model.collator()
    with torch.no_grad():
        mixed = model(collate(items))
        for k, task in enumerate(TASKS):
            alone = model(collate(items[3 * k: 3 * k + 3]))
            assert set(alone) == {task}
            torch.testing.assert_close(mixed[task], alone[task], atol=1e-5, rtol=1e-4)


def test_single_task_loss_is_the_hf_causal_lm_loss(llava_model):
    model, cfg = llava_model
    batch = model.collator()(picked_items(model, cfg)[:3])
    with torch.no_grad():
        ours = model(batch)["vqa"]
        hf = model.llava(batch["pixel_values"], batch["input_ids"], attention_mask=batch["attention_mask"],
                         labels=batch["labels"], task_ids="vqa").loss
    torch.testing.assert_close(ours, hf, atol=1e-5, rtol=1e-5)


def test_per_task_losses_leave_out_absent_tasks():
    logits = torch.randn(2, 5, 7)
    labels = torch.full((2, 5), IGNORE_INDEX)
    labels[0, 3:] = torch.tensor([1, 2])
    losses = per_task_lm_losses(logits, labels, torch.tensor([1, 0]), ["vqa", "caption"])
    assert set(losses) == {"caption"}  # the vqa row has no labelled token


def test_one_training_step_trains_adapters_and_projector_only(synthetic_llava):
    cfg = llava_config(synthetic_llava)
    torch.manual_seed(0)
    model = build_model(cfg, None)
    batch = model.collator()(picked_items(model, cfg))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = model(batch)
    assert set(losses) == set(TASKS) and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed <= trainable, f"frozen parameters changed: {sorted(changed - trainable)[:5]}"
    assert any("language_model" in n and n.endswith(".B") for n in changed)
    assert any("multi_modal_projector" in n for n in changed)
    assert not any("vision_tower" in n for n in trainable)  # frozen unless vision_targets are given


def test_vision_targets_adapt_the_vision_tower(synthetic_llava):
    model = build_model(llava_config(synthetic_llava, vision_targets=["q_proj", "fc1"]), None)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("vision_tower" in n and ".q_proj." in n for n in trainable)


def test_generated_vqa_answers_are_scored_with_the_official_accuracy(llava_model):
    model, cfg = llava_model
    samples = [s for s in read_jsonl(cfg.val_file, cfg.image_dir) if s.task == "vqa"][:6]
    predictions: dict[str, str] = {}
    result = evaluate_llava(model, samples, "vqa", max_new_tokens=4, batch_size=4,
                            on_prediction=predictions.__setitem__)
    assert set(predictions) == {s.sample_id for s in samples}
    expected = 100 * sum(vqa_accuracy(predictions[s.sample_id], s.answers) for s in samples) / len(samples)
    assert result["accuracy"] == pytest.approx(expected)


def test_captions_are_generated_once_per_image(llava_model):
    model, cfg = llava_model
    samples = [s for s in read_jsonl(cfg.val_file, cfg.image_dir) if s.task == "caption"]
    predictions: dict[str, str] = {}
    result = evaluate_llava(model, samples, "caption", max_new_tokens=6, on_prediction=predictions.__setitem__)
    assert len(predictions) == len({s.image_id for s in samples})
    assert set(result) == {"BLEU-4", "CIDEr"} and all(v >= 0 for v in result.values())


def test_llava_rejects_retrieval_clearly():
    with pytest.raises(ValueError, match=r"LLaVA decoder answers \['vqa', 'caption'\].*\['retrieval'\]"):
        VLTrainConfig(tasks=["vqa", "retrieval"], model="llava")


def test_model_llava_is_shorthand_for_the_embedded_llava():
    cfg = VLTrainConfig(tasks=TASKS, model="llava")
    assert (cfg.backbone, cfg.model) == ("llava", "default")
    with pytest.raises(ValueError, match="unknown backbone 'gpt'"):
        VLTrainConfig(backbone="gpt")


def test_script_picks_the_llava_defaults_for_model_llava():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from vlmtl.cli.train_vl import parse_args
    finally:
        sys.path.pop(0)
    cfg = parse_args(["--model", "llava"])
    assert cfg.backbone == "llava" and cfg.tasks == TASKS and cfg.output == "runs/vl_llava"
    assert parse_args([]).backbone == "open_clip"


def run_script(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return conftest.run_script("train_vl.py", *args, timeout=timeout)


def test_train_vl_model_llava_end_to_end(synthetic_llava, tmp_path):
    data, model_dir = synthetic_llava
    out = tmp_path / "run"
    result = run_script("--backbone", "llava", "--model", str(model_dir), "--data", "synthetic", "--data-root",
                        str(data), "--synthetic-train-images", "24", "--synthetic-val-images", "8",
                        "--tasks", "vqa,caption", "--max-steps", "4", "--batch-size", "8",
                        "--workers", "2", "--r", "4", "--output", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["metrics"]) == set(TASKS)
    vqa = metrics["metrics"]["vqa"]  # overall accuracy: the questions' mean, so within the answer types' range
    by_type = [v for k, v in vqa.items() if k != "accuracy"]
    assert by_type and min(by_type) - 1e-9 <= vqa["accuracy"] <= max(by_type) + 1e-9
    per_type = set(metrics["metrics"]["vqa"]) - {"accuracy"}  # the official evaluation's answer types
    assert per_type and per_type <= {"yes/no", "number", "other"}
    assert {"BLEU-4", "CIDEr"} == set(metrics["metrics"]["caption"])
    assert metrics["steps"] == 4
    adapter_config = json.loads((out / "adapters" / "vlmtl_adapter_config.json").read_text())
    assert adapter_config["method"] == "mtl_lora" and adapter_config["tasks"] == TASKS
    saved = load_file(str(out / "adapters" / "vlmtl_adapter_model.safetensors"))
    assert any("multi_modal_projector" in k for k in saved) and any(k.endswith(".B") for k in saved)
    assert not (out / "heads.safetensors").exists() and not (out / "answer_vocab.json").exists()
    assert "train mtl_lora" in result.stderr  # the progress bar
    assert "backbone: llava" in (out / "config.yaml").read_text()


def test_llava_run_resumed_from_a_checkpoint_ends_with_the_same_adapters(synthetic_llava, tmp_path):
    from vlmtl.train import train_vl

    out = tmp_path / "run"
    cfg = llava_config(synthetic_llava, max_steps=4, save_every=2, keep_last=3, output=str(out), eval_max_samples=2)
    assert train_vl(cfg)["resumed_from"] is None
    straight = load_file(str(out / "adapters" / "vlmtl_adapter_model.safetensors"))
    middle = out / "checkpoints" / "checkpoint-00000002.pt"
    cfg.resume = str(middle)
    resumed = train_vl(cfg)
    assert resumed["resumed_from"] == str(middle) and resumed["steps"] == 4
    again = load_file(str(out / "adapters" / "vlmtl_adapter_model.safetensors"))
    assert again.keys() == straight.keys()
    assert all(torch.equal(again[k], straight[k]) for k in straight)


def test_nothing_to_train_is_a_clear_error(synthetic_llava, tmp_path):
    from vlmtl.train import train_vl

    cfg = llava_config(synthetic_llava, method="heads_only", train_projector=False, output=str(tmp_path / "run"))
    with pytest.raises(ValueError, match="nothing to train"):
        train_vl(cfg)


def test_train_vl_reads_a_llava_hf_style_folder(synthetic_llava, tmp_path):
    """The real-checkpoint path: AutoTokenizer, preprocessor_config.json, from_pretrained."""
    from vlmtl.models.llava_text import HFLlavaTokenizer
    from vlmtl.train import train_vl

    from ..conftest import write_hf_llava_dir

    data, _ = synthetic_llava
    samples = [s for split in ("train", "val") for s in read_jsonl(data / f"{split}.jsonl", data)]
    texts = [s.text for s in samples] + [a for s in samples for a in (s.answers or [])]
    texts += ["question: answer: describe the image:"]
    folder = write_hf_llava_dir(tmp_path / "llava-hf", texts)
    cfg = llava_config((data, folder), max_steps=2, output=str(tmp_path / "run"), eval_max_samples=4)
    model = build_model(cfg, None)
    tokenizer = model.llava.tokenizer
    assert isinstance(tokenizer, HFLlavaTokenizer)
    batch = model.collator()(picked_items(model, cfg))
    assert not bool((batch["input_ids"] == tokenizer.tokenizer.unk_token_id).any())  # prompts and targets known
    assert int((batch["input_ids"] == tokenizer.image_token_id).sum(1)[0]) == model.llava.num_image_tokens
    document = train_vl(cfg)
    assert document["steps"] == 2 and set(document["metrics"]) == set(TASKS)
    assert (tmp_path / "run" / "adapters" / "vlmtl_adapter_model.safetensors").is_file()


def test_projector_only_run_saves_the_projector(synthetic_llava, tmp_path):
    from vlmtl.train import train_vl

    out = tmp_path / "run"
    train_vl(llava_config(synthetic_llava, method="heads_only", max_steps=1, output=str(out), eval_max_samples=2))
    saved = load_file(str(out / "trainable.safetensors"))
    assert saved and all(k.startswith("model.multi_modal_projector.") for k in saved)
    assert not (out / "adapters").exists()
