"""The results files of a comparison script: a Markdown table for people, a CSV for programs."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any


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
