"""The pre-training scripts run on the one engine: a few steps each write a base model that
the adaptation paths load, plus the engine's run folder (so a killed pre-training resumes)."""

from __future__ import annotations

import json

from ..conftest import run_script as run


def test_pretrain_base_writes_an_open_clip_folder_and_a_run(tmp_path):
    from vlmtl.models import create_multitask_clip

    out, run_dir = tmp_path / "clip", tmp_path / "run"
    result = run("pretrain_base.py", "--steps", "4", "--images", "300", "--batch-size", "16", "--width", "64",
                 "--layers", "1", "--workers", "0", "--output", str(out), "--run-dir", str(run_dir),
                 "--data", str(tmp_path / "data"))
    assert result.returncode == 0, result.stderr[-3000:]
    card = json.loads((out / "pretrain_card.json").read_text())
    assert set(card["held_out_zero_shot_retrieval"]) >= {"i2t_R@1", "t2i_R@1"}
    history = (run_dir / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(row)["step"] for row in history] == [1, 2, 3, 4]
    assert "retrieval" in json.loads(history[0])
    assert (run_dir / "checkpoints").is_dir() and (run_dir / "config.yaml").is_file()
    clip = create_multitask_clip(f"local-dir:{out}", tasks=["retrieval"], r=2)  # what train_vl.py loads
    assert clip.embed_dim == 64


def test_pretrain_llava_writes_a_llava_folder_and_a_run(tmp_path):
    from vlmtl.models import create_multitask_llava

    out, run_dir = tmp_path / "llava", tmp_path / "run"
    result = run("pretrain_llava.py", "--steps", "3", "--images", "60", "--held-out", "6", "--batch-size", "8",
                 "--hidden", "32", "--layers", "1", "--vision-layers", "1", "--workers", "0", "--output", str(out),
                 "--run-dir", str(run_dir), "--data", str(tmp_path / "data"))
    assert result.returncode == 0, result.stderr[-3000:]
    card = json.loads((out / "pretrain_card.json").read_text())
    assert set(card["held_out_captions_greedy"]) == {"BLEU-4", "CIDEr"}
    rows = [json.loads(row) for row in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3] and all(row["caption"] > 0 for row in rows)
    llava = create_multitask_llava(out, tasks=["vqa", "caption"], r=2)  # what train_vl.py --model loads
    assert llava.num_image_tokens == 64
