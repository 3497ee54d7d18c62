"""Command-line flags made from the config dataclasses: one ``--flag-name`` per field, the
choices from the registry, so both training scripts name the same option the same way."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import yaml

from vlmtl.adapters.config import LAMBDA_TYPES
from vlmtl.data import STRATEGIES
from vlmtl.data.mixed import ON_BAD_IMAGE
from vlmtl.registry import VL_BACKBONES
from vlmtl.train.config import MIXED_PRECISION, TrainConfig

CHOICES: dict[str, tuple[str, ...]] = {
    "backbone": VL_BACKBONES,
    "sampling": STRATEGIES,
    "mixed_precision": MIXED_PRECISION,
    "lambda_type": LAMBDA_TYPES,
    "on_bad_image": ON_BAD_IMAGE,
}
HELP: dict[str, str] = {
    "model": "the backbone's model: 'default' (the embedded base), a name, local-dir:PATH or a folder",
    "pretrained": "open_clip pretrained tag or local checkpoint path; dense: a local Swin checkpoint",
    "data": "where the data comes from ('synthetic': generated once into --data-root or the cache dir)",
    "resume": "auto (newest checkpoint in <output>/checkpoints) | never | a checkpoint path",
    "save_every": "steps between checkpoints (0: none)",
    "max_steps": "optimizer steps (null: run `epochs` epochs)",
    "eval_max_samples": "per task (quick checks)",
    "threads": "torch CPU threads (default: torch's setting)",
    "add_task": "a task to add to the trained MTL-LoRA CLIP run --from RUN_DIR (its tasks + this one in --tasks)",
    "from_run": "the run folder that --add-task extends",
}


ALIASES: dict[str, tuple[str, ...]] = {"from_run": ("--from",)}


def _parse_value(annotation: str):
    """argparse type for a field: strings stay text; anything else is read as YAML, so
    ``3``, ``0.5``, ``true``, ``null``, ``[a, b]`` and ``{vqa: 2.0}`` all work."""
    if annotation.startswith("str"):
        return str

    def parse(text: str):
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise argparse.ArgumentTypeError(f"cannot read {text!r}: {err}") from err
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 as text
            try:
                return float(value)
            except ValueError:
                return value
        return value

    return parse


def config_parser(cls: type[TrainConfig], methods: tuple[str, ...], tasks: tuple[str, ...],
                  description: str | None = None) -> argparse.ArgumentParser:
    """One ``--flag-name`` per field of ``cls`` (choices from the registry), plus ``--config``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_file = cls.DEFAULT_YAML or "none"
    parser.add_argument("--config", help=f"YAML file of options (flags override it); default: configs/{default_file}")
    choices = {**CHOICES, "method": methods}
    for f in dataclasses.fields(cls):
        flags = ("--" + f.name.replace("_", "-"), *ALIASES.get(f.name, ()))
        help_text = HELP.get(f.name, "")
        if f.name == "tasks":
            help_text = f"comma-separated, of: {','.join(tasks)}"
        if f.name in choices:
            parser.add_argument(*flags, dest=f.name, choices=list(choices[f.name]), help=help_text or None)
        else:
            parser.add_argument(*flags, dest=f.name, type=_parse_value(str(f.type)), help=help_text or None,
                                metavar=f.name.upper())
    return parser


def parse_config(cls: type[TrainConfig], parser: argparse.ArgumentParser, argv: list[str] | None = None,
                 extra: tuple[str, ...] = ()) -> tuple[TrainConfig, dict[str, Any]]:
    """The resolved config (YAML chosen by the config layer when --config is not given)
    and the values of the parser's ``extra`` options that are not config fields."""
    args = vars(parser.parse_args(argv))
    others = {k: args.pop(k) for k in extra}
    config_path = args.pop("config")
    try:
        if config_path is None:
            return cls.from_defaults(**args), others
        return cls.from_sources(config_path, **args), others
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
