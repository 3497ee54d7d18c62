"""A run's trained weights, in one layout for every path:

- ``adapters/``: the adapter core's format (``save_adapters``: ``vlmtl_adapter_config.json`` +
  ``vlmtl_adapter_model.safetensors``, every trainable tensor of the adapted module), when the
  method has adapters;
- ``trainable.safetensors``: the adapted module's trainable tensors when it has no
  adapters (``heads_only`` with LLaVA's projector, ``full``);
- ``heads.safetensors``: the task heads (VQA/retrieval/caption heads, dense decoders with
  their BatchNorm statistics), when there are any.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from vlmtl.adapters import load_adapters, save_adapters
from vlmtl.adapters.inject import CONFIG_ATTR
from vlmtl.adapters.io import atomic_write

from .checkpoint import load_trainable_state, trainable_state

ADAPTERS_DIR = "adapters"
TRAINABLE_FILE = "trainable.safetensors"
HEADS_FILE = "heads.safetensors"


def save_run_weights(out: str | Path, adapted: nn.Module, heads: nn.Module | None = None) -> list[Path]:
    """Write the weights of a trained model into the run folder ``out``; returns the paths."""
    out = Path(out)
    written = []
    if hasattr(adapted, CONFIG_ATTR):
        written.append(save_adapters(adapted, out / ADAPTERS_DIR))
    else:
        state = {k: v.contiguous() for k, v in trainable_state(adapted).items()}
        if state:
            atomic_write(out / TRAINABLE_FILE, lambda tmp: save_file(state, tmp))
            written.append(out / TRAINABLE_FILE)
    if heads is not None and len(list(heads.parameters())):
        atomic_write(out / HEADS_FILE, lambda tmp: save_model(heads, tmp))  # handles tied weights
        written.append(out / HEADS_FILE)
    return written


def load_run_weights(out: str | Path, adapted: nn.Module, heads: nn.Module | None = None) -> None:
    """Load what :func:`save_run_weights` wrote into a model built from the same config."""
    out = Path(out)
    if (out / ADAPTERS_DIR).is_dir():
        load_adapters(adapted, out / ADAPTERS_DIR)
    elif (out / TRAINABLE_FILE).is_file():
        load_trainable_state(adapted, load_file(str(out / TRAINABLE_FILE)), out / TRAINABLE_FILE)
    else:
        raise FileNotFoundError(f"no trained weights in {out} (neither {ADAPTERS_DIR}/ nor {TRAINABLE_FILE})")
    if heads is not None and len(list(heads.parameters())):
        if not (out / HEADS_FILE).is_file():
            raise FileNotFoundError(f"missing {out / HEADS_FILE}")
        load_model(heads, str(out / HEADS_FILE))
