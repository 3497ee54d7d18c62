"""The runs behind the comparison scripts (``compare_vl.py``, ``sweep_vl.py``,
``interference_vl.py``): one training run per row and seed, from one config, and the
rows of a method comparison. A finished run whose resolved config is the one asked for is
read back rather than trained again, so a stopped comparison continues where it stopped and
scripts can share runs."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import yaml

from vlmtl.train import VLTrainConfig, train_vl

ROWS = ("frozen", "single", "shared", "mtl_lora")
# options that say where and how often a run writes, not what it learns
BOOKKEEPING = ("output", "save_every", "keep_last", "resume", "log_every")
# options only MTL-LoRA reads: a LoRA run is the same run whatever they say
MTL_LORA_ONLY = ("n_up", "temperature", "lambda_type", "lambda_lr", "mixing_lr")

logger = logging.getLogger(__name__)


def yaml_options(text: str) -> dict:
    """A YAML mapping of options, with ``1e-3``-style numbers as floats (YAML 1.1 reads them as text)."""
    def numbers(value):
        if isinstance(value, dict):
            return {k: numbers(v) for k, v in value.items()}
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                return value
        return value

    value = yaml.safe_load(text) or {}
    if not isinstance(value, dict):
        raise ValueError(f"expected a YAML mapping, got {text!r}")
    return numbers(value)


def field_defaults(cls) -> dict:
    """Each config field's default value."""
    return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING
            or f.default_factory is not dataclasses.MISSING}


def finished_run(cfg: VLTrainConfig) -> dict | None:
    """The ``metrics.json`` of a finished run in ``cfg.output`` trained with ``cfg``'s options
    (bookkeeping aside); None if there is none. A finished run with other options is an
    error naming the first difference: its folder is not silently reused or overwritten."""
    out = Path(cfg.output)
    metrics, saved = out / "metrics.json", out / "config.yaml"
    if not metrics.is_file() or not saved.is_file():
        return None
    wanted = cfg.to_dict()
    # an option added after the run was made has its default there (new options keep the old behaviour)
    had = {**field_defaults(type(cfg)), **yaml.safe_load(saved.read_text())}
    ignored = BOOKKEEPING + (MTL_LORA_ONLY if wanted.get("method") != "mtl_lora" else ())
    differ = sorted(k for k in set(had) | set(wanted) if k not in ignored and had.get(k) != wanted.get(k))
    if differ:
        key = differ[0]
        raise ValueError(f"{out} holds a finished run with other options ({key}: {had.get(key)!r}, asked for "
                         f"{wanted.get(key)!r}): choose another --output or remove it")
    return json.loads(metrics.read_text())


def run(base: dict, name: str, out: Path, **changes) -> dict:
    """Train ``base`` + ``changes`` into ``out/name`` (or read the finished run there)."""
    cfg = VLTrainConfig.from_sources(None, **{**base, **changes, "output": str(out / name)})
    done = finished_run(cfg)
    if done is not None:
        logger.info("=== %s: finished before, read from %s", name, cfg.output)
        return done
    logger.info("=== %s: method %s, tasks %s, seed %d", name, cfg.method, cfg.tasks, cfg.seed)
    return train_vl(cfg)


def run_rows(base: dict, tasks: list[str], wanted: list[str], out: Path,
             row_options: dict[str, dict] | None = None) -> list[tuple[str, int, dict]]:
    """Every wanted row of a method comparison for ``base`` (a resolved config as a dict):
    (label, trainable parameters, metrics). ``row_options`` gives a row its own options on top
    of ``base`` (e.g. each method at the learning rate a sweep found best for it)."""
    row_options = row_options or {}
    unknown = sorted(set(row_options) - set(ROWS))
    if unknown:
        raise ValueError(f"row options for unknown row(s) {unknown}; rows are {list(ROWS)}")
    llava = base["backbone"] == "llava"
    rows: list[tuple[str, int, dict]] = []
    if "frozen" in wanted:
        frozen = run(base, "frozen_heads", out, **{**row_options.get("frozen", {}), "method": "heads_only"})
        label = "frozen decoder, projector trained" if llava else "frozen backbone + heads"
        rows.append((label, frozen["trainable_parameters"], frozen["metrics"]))
    if "single" in wanted:
        single_metrics, single_params = {}, 0
        for task in tasks:
            result = run(base, f"lora_{task}", out, **{**row_options.get("single", {}), "method": "lora",
                                                       "tasks": [task]})
            single_metrics.update(result["metrics"])
            single_params += result["trainable_parameters"]
        rows.append((f"single-task LoRA ({len(tasks)} models)", single_params, single_metrics))
    if "shared" in wanted:
        shared = run(base, "lora_shared", out, **{**row_options.get("shared", {}), "method": "lora"})
        rows.append(("one shared LoRA", shared["trainable_parameters"], shared["metrics"]))
    if "mtl_lora" in wanted:
        mtl = run(base, "mtl_lora", out, **{**row_options.get("mtl_lora", {}), "method": "mtl_lora"})
        rows.append(("MTL-LoRA", mtl["trainable_parameters"], mtl["metrics"]))
    return rows
