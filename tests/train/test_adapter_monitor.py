"""The adapter monitor in training: what it logs, and that mixing_lr moves the mixing logits."""

from __future__ import annotations

import json

from vlmtl.train import train_vl

from .test_vl_trainer import tiny_config


def _log(out) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_mixing_lr_moves_the_mixing_logits_further(synthetic_vl, tmp_path):
    drift = {}
    for rate in (None, 0.05):
        out = tmp_path / f"mixing_{rate}"
        train_vl(tiny_config(synthetic_vl, tasks=["vqa", "caption"], max_steps=3, log_every=1, save_every=0,
                             eval_max_samples=2, warmup_ratio=0.0, mixing_lr=rate, output=str(out)))
        last = _log(out)[-1]
        drift[rate] = last["adapter/w_drift/vqa"]
        assert last["adapter/update/w/caption"] > 0 and 0 < last["adapter/up_projection_cosine"] <= 1 + 1e-6
    # Adam moves each logit by about its rate per step: 25x the rate, well over 5x the distance
    assert drift[0.05] > 5 * drift[None]


def test_lora_logs_one_shared_update_and_no_task_parts(synthetic_vl, tmp_path):
    out = tmp_path / "lora"
    train_vl(tiny_config(synthetic_vl, tasks=["vqa", "caption"], method="lora", max_steps=2, log_every=2,
                         save_every=0, eval_max_samples=2, output=str(out)))
    rows = _log(out)
    assert "adapter/update/delta/vqa" not in rows[0]  # step 1 is not a logged step
    last = rows[-1]
    assert last["adapter/update/delta/vqa"] == last["adapter/update/delta/caption"] > 0
    assert not any("lambda" in k or "w_drift" in k or "entropy" in k for k in last)


def test_monitor_can_be_switched_off(synthetic_vl, tmp_path):
    out = tmp_path / "off"
    train_vl(tiny_config(synthetic_vl, tasks=["vqa"], max_steps=1, log_every=1, save_every=0, eval_max_samples=2,
                         monitor_adapters=False, output=str(out)))
    assert not any(k.startswith("adapter/") for k in _log(out)[0])
