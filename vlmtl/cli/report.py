"""The results files of a comparison script: a Markdown table for people, a CSV for programs,
and the statistics of a metric over several seeds (mean ± std, 95 % interval, whether the
seeds support a difference)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# each vision-language task's headline metric (higher is better), for figures and rankings
HEADLINE = {"vqa": "accuracy", "retrieval": "rsum", "caption": "CIDEr"}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def write_results(out: Path, header: Sequence[str], shown: Sequence[Sequence[str]], csv_header: Sequence[str],
                  values: Sequence[Sequence[Any]], note: str) -> str:
    """Write ``results.md`` (formatted ``shown`` cells, then ``note``) and ``results.csv``
    (unrounded ``values``) into ``out``; returns the Markdown."""
    if len(shown) != len(values):
        raise ValueError(f"{len(shown)} formatted rows but {len(values)} value rows")
    text = markdown_table(header, shown) + f"\n\n{note}\n"
    (out / "results.md").write_text(text)
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(csv_header)
        writer.writerows(values)
    return text


# ----------------------------------------------------------------------------- several seeds

# two-sided 95 % quantiles of Student's t by degrees of freedom (1..30); beyond: the normal's
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t95(dof: float) -> float:
    """The two-sided 95 % quantile of Student's t; fractional dof rounds down (conservative)."""
    whole = int(dof)
    if whole < 1:
        return float("inf")
    return _T95[whole - 1] if whole <= len(_T95) else 1.960


@dataclass(frozen=True)
class SeedSummary:
    """A metric over seeds: mean, sample standard deviation, half-width of the 95 % interval
    of the mean (Student's t), and the values themselves."""

    mean: float
    std: float
    ci95: float
    values: tuple[float, ...]

    def __str__(self) -> str:
        return f"{self.mean:.1f}" if len(self.values) < 2 else f"{self.mean:.1f} ± {self.std:.1f}"


def summarize(values: Sequence[float]) -> SeedSummary:
    values = tuple(float(v) for v in values)
    if not values:
        raise ValueError("no values to summarize")
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return SeedSummary(mean, std, t95(n - 1) * std / math.sqrt(n) if n > 1 else float("inf"), values)


def supported(a: SeedSummary, b: SeedSummary) -> bool:
    """Whether the seeds support a difference between ``a`` and ``b``: Welch's t-test, two-sided,
    at 5 %. One seed on either side supports nothing."""
    na, nb = len(a.values), len(b.values)
    if na < 2 or nb < 2:
        return False
    va, vb = a.std**2 / na, b.std**2 / nb
    if va + vb == 0:
        return a.mean != b.mean
    dof = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1)) if va and vb else (na - 1 if va else nb - 1)
    return abs(a.mean - b.mean) / math.sqrt(va + vb) > t95(dof)


def mark_unsupported(column: Sequence[SeedSummary], higher_is_better: bool = True) -> list[str]:
    """Each cell as ``mean ± std``; cells whose difference from the column's best the seeds do
    not support get ``≈`` (the best itself is marked ``*`` when it differs from all others)."""
    pick = max if higher_is_better else min
    best = pick(range(len(column)), key=lambda i: column[i].mean)
    cells = []
    for i, summary in enumerate(column):
        if i == best:
            rest = [s for j, s in enumerate(column) if j != i]
            cells.append(f"{summary} *" if rest and all(supported(summary, s) for s in rest) else str(summary))
        else:
            cells.append(f"{summary} ≈" if not supported(summary, column[best]) else str(summary))
    return cells
