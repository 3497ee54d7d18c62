"""Plots: a PNG is written, and vlmtl (every module of it) leaves its host's global state alone."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

from vlmtl.train.plots import plot_training_curves

HISTORY = [{"step": s, "vqa": 2.0 / s, "retrieval": 1.0 / s, "lr": 1e-3 * s / 10} for s in range(1, 11)]

# Runs in a clean interpreter: import what vlmtl imports from other packages (accelerate and
# scipy.sparse add warning filters when imported: not vlmtl's doing), snapshot global state,
# import every vlmtl module (pkgutil walk), draw a plot, snapshot again; prints the differences
# and the modules imported as JSON.
PROBE = textwrap.dedent(
    """
    import ast, importlib, importlib.util, json, logging, pkgutil, sys, tempfile, warnings
    from pathlib import Path

    import matplotlib
    import torch

    def dependency_imports():
        root = Path(importlib.util.find_spec("vlmtl").origin).parent  # found, not imported
        names = set()
        for path in root.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module)
                    names.update(f"{node.module}.{alias.name}" for alias in node.names)  # submodules, if any
        return sorted(n for n in names if n.split(".")[0] != "vlmtl")

    for name in dependency_imports():
        try:
            importlib.import_module(name)
        except ImportError:  # a name, not a module; or an optional dependency that is not installed
            pass

    def snapshot():
        return {
            "matplotlib.get_backend()": matplotlib.get_backend(),
            "torch.get_num_threads()": torch.get_num_threads(),
            "torch.get_default_dtype()": str(torch.get_default_dtype()),
            "logging.root.handlers": [repr(h) for h in logging.root.handlers],
            "logging.root.level": logging.root.level,
            "warnings.filters": [repr(f) for f in warnings.filters],
        }

    before, rc_before = snapshot(), matplotlib.rcParams.copy()
    import vlmtl
    modules = [m.name for m in pkgutil.walk_packages(vlmtl.__path__, "vlmtl.")]
    for name in modules:
        importlib.import_module(name)
    from vlmtl.train.plots import plot_training_curves
    with tempfile.TemporaryDirectory() as tmp:
        history = [{"step": 1, "vqa": 1.0, "lr": 0.1}, {"step": 2, "vqa": 0.5, "lr": 0.1}]
        plot_training_curves(history, Path(tmp) / "c.png")
    after, rc_after = snapshot(), matplotlib.rcParams.copy()
    changed = {k: [before[k], after[k]] for k in before if before[k] != after[k]}
    rc_keys = sorted(k for k in set(dict.keys(rc_before)) | set(dict.keys(rc_after))
                     if dict.get(rc_before, k) != dict.get(rc_after, k))
    changed.update({f"rcParams[{k!r}]": [repr(dict.get(rc_before, k)), repr(dict.get(rc_after, k))] for k in rc_keys})
    print(json.dumps({"modules": modules, "changed": changed, "pyplot": "matplotlib.pyplot" in sys.modules}))
    """
)


def test_plot_training_curves_writes_png(tmp_path: Path) -> None:
    path = plot_training_curves(HISTORY, tmp_path / "curves.png", title="t")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # IHDR: 8 x 6 inches at 110 dpi
    assert (width, height) == (880, 660)


def test_importing_vlmtl_changes_no_global_state(tmp_path: Path) -> None:
    # A backend other than Agg, so a stray matplotlib.use("Agg") shows; no display needed for svg.
    env = {**os.environ, "MPLBACKEND": "svg", "MPLCONFIGDIR": str(tmp_path / "mpl")}
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "vlmtl.train.plots" in result["modules"] and "vlmtl.models.clip" in result["modules"]
    assert result["changed"] == {}, f"importing vlmtl (or drawing a plot) changed global state: {result['changed']}"
    assert not result["pyplot"], "vlmtl imported matplotlib.pyplot, which registers figures and picks a backend"
