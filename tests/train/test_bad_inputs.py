"""Bad training inputs: each either trains correctly or stops at once with an error naming the
file, line or task, before any model is built. (Mismatched task-id lengths are covered by
tests/adapters/test_routing.py.)"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from vlmtl.data import AnswerVocab, MultiTaskCollator, MultiTaskDataset, Sample, read_jsonl
from vlmtl.metrics import normalize_answer
from vlmtl.train import VLTrainConfig, build_model, train_vl
from vlmtl.train.vl_data import load_samples


def jsonl_config(synthetic_vl, tmp_path: Path, train_file: Path | None = None, **kw) -> VLTrainConfig:
    data, model_dir = synthetic_vl
    values = dict(tasks=["vqa", "retrieval"], data="jsonl", train_file=str(train_file or data / "train.jsonl"),
                  val_file=str(data / "val.jsonl"), image_dir=str(data), model=f"local-dir:{model_dir}",
                  r=4, batch_size=8, workers=0, max_steps=2, save_every=0, output=str(tmp_path / "run"))
    values.update(kw)
    return VLTrainConfig(**values)


def edited_copy(synthetic_vl, tmp_path: Path, task: str, edit) -> tuple[Path, int]:
    """train.jsonl with ``edit`` applied to the first line of ``task``; returns (file, 1-based line)."""
    data, _ = synthetic_vl
    lines = (data / "train.jsonl").read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if json.loads(line)["task"] == task)
    obj = json.loads(lines[index])
    edit(obj)
    lines[index] = json.dumps(obj)
    path = tmp_path / "edited.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, index + 1


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_caption_stops_training_naming_file_and_line(synthetic_vl, tmp_path, text):
    path, line = edited_copy(synthetic_vl, tmp_path, "caption", lambda o: o.update(text=text))
    cfg = jsonl_config(synthetic_vl, tmp_path, path, tasks=["vqa", "retrieval", "caption"])
    with pytest.raises(ValueError, match=rf"{path}: line {line}: sample .* \(caption\): empty text"):
        train_vl(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_wrong_file_format_as_train_file_names_file_and_line(synthetic_vl, tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_text("image,task,text\nimages/train_000000.png,retrieval,a red circle\n")
    with pytest.raises(ValueError, match=rf"{csv}: line 1: .*Expecting value"):
        train_vl(jsonl_config(synthetic_vl, tmp_path, csv))

    data, _ = synthetic_vl
    objects = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()[:3]]
    one_line_array = tmp_path / "train_array.json"  # a JSON document, not JSON lines
    one_line_array.write_text(json.dumps(objects) + "\n")
    with pytest.raises(ValueError, match=rf"{one_line_array}: line 1: expected a JSON object, got list"):
        train_vl(jsonl_config(synthetic_vl, tmp_path, one_line_array))
    pretty = tmp_path / "train_pretty.json"
    pretty.write_text(json.dumps(objects, indent=2) + "\n")
    with pytest.raises(ValueError, match=rf"{pretty}: line 1: "):
        train_vl(jsonl_config(synthetic_vl, tmp_path, pretty))


def test_out_of_vocabulary_answers_give_zero_targets():
    vocab = AnswerVocab(["red", "blue", "2"], normalize=normalize_answer)
    assert torch.equal(vocab.encode_soft(["purple"] * 10), torch.zeros(3))
    assert vocab.encode_soft([]).shape == (3,)
    mixed = vocab.encode_soft(["Red"] * 2 + ["purple"] * 7 + ["two"])  # "two" normalises to "2"
    assert mixed.tolist() == pytest.approx([2 / 3, 0.0, 1 / 3])
    assert vocab.encode("purple") is None and "purple" not in vocab


def test_batch_of_only_out_of_vocabulary_answers_trains_with_finite_loss(synthetic_vl, tmp_path):
    cfg = jsonl_config(synthetic_vl, tmp_path, dropout=0.0)
    samples = read_jsonl(cfg.train_file, cfg.image_dir)
    vocab = AnswerVocab.build([s for s in samples if s.task == "vqa"], normalize=normalize_answer)
    unseen = [Sample(task="vqa", image=s.image, image_id=s.image_id, text=s.text, answers=["zebra crossing"] * 10,
                     sample_id=f"oov-{i}") for i, s in enumerate(s for s in samples if s.task == "vqa")][:6]
    assert not any(a in vocab for s in unseen for a in s.answers)
    torch.manual_seed(0)
    model = build_model(cfg, vocab).train()
    dataset = MultiTaskDataset(unseen, model.clip.preprocess, tasks=cfg.tasks)
    batch = MultiTaskCollator(model.clip.tokenizer, vocab)([dataset[i] for i in range(len(unseen))])
    assert batch["vqa_targets"].shape == (6, len(vocab)) and not batch["vqa_targets"].any()

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    losses = []
    for _ in range(4):
        loss = model(batch)["vqa"]
        assert torch.isfinite(loss), f"non-finite vqa loss {loss.item()} for all-zero targets"
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in trainable if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads), "all-zero targets must still train (push the logits down)"
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


def test_unknown_task_name_is_an_error_naming_it(synthetic_vl, tmp_path):
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['captioning'\]"):
        jsonl_config(synthetic_vl, tmp_path, tasks=["vqa", "captioning"])
    path, line = edited_copy(synthetic_vl, tmp_path, "retrieval", lambda o: o.update(task="captioning"))
    with pytest.raises(ValueError, match=rf"{path}: line {line}: .*unknown task 'captioning'"):
        load_samples(jsonl_config(synthetic_vl, tmp_path, path))


def test_configured_task_without_samples_is_an_error_naming_it(synthetic_vl, tmp_path):
    data, _ = synthetic_vl
    no_caption = tmp_path / "no_caption.jsonl"
    no_caption.write_text("".join(line + "\n" for line in (data / "train.jsonl").read_text().splitlines()
                                  if json.loads(line)["task"] != "caption"))
    cfg = jsonl_config(synthetic_vl, tmp_path, no_caption, tasks=["vqa", "retrieval", "caption"])
    with pytest.raises(ValueError, match=rf"no training samples for task 'caption' in {no_caption}"):
        load_samples(cfg)


def test_samples_of_tasks_not_in_the_config_are_left_out(synthetic_vl, tmp_path):
    cfg = jsonl_config(synthetic_vl, tmp_path)  # tasks vqa, retrieval; the file also holds caption samples
    in_file = read_jsonl(cfg.train_file, cfg.image_dir)
    assert any(s.task == "caption" for s in in_file)
    train, val = load_samples(cfg)
    assert {s.task for s in train} == {s.task for s in val} == {"vqa", "retrieval"}
    assert len(train) == sum(s.task in cfg.tasks for s in in_file)


def test_leaving_out_samples_of_other_tasks_is_logged(synthetic_vl, tmp_path, caplog):
    cfg = jsonl_config(synthetic_vl, tmp_path)
    with caplog.at_level(logging.INFO, logger="vlmtl"):
        load_samples(cfg)
    assert any("caption" in r.getMessage() for r in caplog.records), "no log line says caption samples were left out"
