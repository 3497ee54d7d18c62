"""Data sets written once into the cache and reused: the synthetic VL and PASCAL_MT sets, and
Hugging Face datasets saved to disk so their image bytes can be read row by row.

A set is written into a staging folder and renamed into place with its spec file last,
so a crash (or SIGKILL) never leaves half a set that a later run would take as whole.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlmtl.paths import cache_dir

logger = logging.getLogger(__name__)

SPEC_FILE = "synthetic.json"


def cached_dataset(name: str, spec: dict[str, Any], write: Callable[[Path], None],
                   root: str | Path | None = None, holds: Callable[[Path], bool] | None = None) -> Path:
    """The folder of the generated set ``spec``: ``root`` (default: ``<cache dir>/<name>``),
    reused when its spec file matches (or ``holds(root)`` recognises the same set written
    by the generator itself), else (re)written by ``write(folder)``. A folder the user
    named that holds something else is refused, never overwritten."""
    owned = root is None
    root = cache_dir() / name if owned else Path(root).expanduser()
    spec_file = root / SPEC_FILE
    if _written_for(root, spec):
        return root
    if holds is not None and root.is_dir() and holds(root):
        return root
    if root.exists() and not spec_file.is_file() and not owned:
        raise FileExistsError(f"data_root {root} exists and is not a synthetic set written by vlmtl: choose another")
    logger.info("writing the synthetic data set %s to %s", spec, root)
    staging = root.with_name(f".{root.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    write(staging)
    (staging / SPEC_FILE).write_text(json.dumps(spec) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    try:
        staging.rename(root)
    except OSError:  # another process put the same set in place first
        shutil.rmtree(staging, ignore_errors=True)
        if not _written_for(root, spec):
            raise
    return root


def _written_for(root: Path, spec: dict[str, Any]) -> bool:
    """Whether ``root`` holds a whole set written for ``spec`` (its spec file comes last)."""
    spec_file = root / SPEC_FILE
    return spec_file.is_file() and json.loads(spec_file.read_text()) == spec
