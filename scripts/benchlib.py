"""The measurement and summary helpers shared by the scripts/bench_*.py benchmarks: this process's
memory (RSS, peak RSS, VmHWM, freeing what malloc holds), the CPU's name, the bytes autograd saves
for backward, the median (min–max) summaries, ratios and their formatting for the reports, and
writing a run's JSON document.

The memory helpers read /proc (Linux). torch is imported only by ``saved_bytes``, so the scripts'
parent processes that merely start children and summarise do not import it through this module.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


# --------------------------------------------------------------------------- memory
def rss_bytes() -> int:
    """Resident set size of this process now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def maxrss_bytes() -> int:
    """Peak RSS of this process (``ru_maxrss``, KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def hwm_bytes() -> int | None:
    """VmHWM: the peak RSS since the last reset through /proc/self/clear_refs; None where it cannot be read."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def release_freed_memory() -> bool:
    """Give memory that malloc holds in its free lists back to the OS, so the RSS counts only
    what is alive (glibc keeps freed activations mapped otherwise). Runs the garbage collector
    first; False where ``malloc_trim`` is not available (no glibc)."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def saved_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of the output of ``fn()`` plus the distinct storages autograd saves for backward (what
    training keeps alive between forward and backward), each storage counted once, keyed by its
    device type and data pointer."""
    import torch

    storages: dict[tuple, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        storages[(t.device.type, storage.data_ptr())] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    storages[(out.device.type, out.untyped_storage().data_ptr())] = out.untyped_storage().nbytes()
    return sum(storages.values())


# --------------------------------------------------------------------------- machine
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else ``platform.processor()``, else "unknown"."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# --------------------------------------------------------------------------- summaries
def summary(values: list[float]) -> dict:
    """``median``, ``min`` and ``max`` of the values, and the ``values`` themselves."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def ratio(values: list[float], baseline: list[float]) -> dict:
    """``values`` over the ``baseline`` of the same rounds: ``median`` the ratio of the medians, ``min``
    and ``max`` those of the per-round ratios (``per_round``)."""
    per_round = [v / b for v, b in zip(values, baseline, strict=True)]
    return {"median": statistics.median(values) / statistics.median(baseline), "min": min(per_round),
            "max": max(per_round), "per_round": per_round}


def spread(s: dict, scale: float = 1.0, fmt: str = "{:.1f}") -> str:
    """``median (min–max)`` of a summary or ratio dict, each divided by ``scale`` and formatted with ``fmt``."""
    med, lo, hi = (fmt.format(s[k] / scale) for k in ("median", "min", "max"))
    return f"{med} ({lo}–{hi})"


# --------------------------------------------------------------------------- results


def write_json(path: Path, doc: dict) -> None:
    """A run's document as indented JSON at ``path``, its folder created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")


def publish(path: Path, doc: dict, table: str) -> None:
    """Write the document (``write_json``), print its table and where it went, with the run's
    wall time (``doc["wall_s"]``)."""
    write_json(path, doc)
    print(table)
    print(f"\nwrote {path} ({doc['wall_s']:.0f} s)")
