"""The comparison scripts' results files."""

from __future__ import annotations

import csv

import pytest

from vlmtl.cli.report import write_results


def test_markdown_shows_formatted_cells_and_csv_keeps_raw_values(tmp_path):
    text = write_results(tmp_path, ["method", "acc"], [["MTL-LoRA", "52.6"]], ["method", "accuracy"],
                         [["MTL-LoRA", 52.6123]], "made by `x`")
    assert text == (tmp_path / "results.md").read_text()
    assert text.splitlines()[:3] == ["| method | acc |", "|---|---|", "| MTL-LoRA | 52.6 |"]
    assert text.rstrip().endswith("made by `x`")
    with (tmp_path / "results.csv").open() as f:
        assert list(csv.reader(f)) == [["method", "accuracy"], ["MTL-LoRA", "52.6123"]]


def test_rows_must_match(tmp_path):
    with pytest.raises(ValueError, match="1 formatted rows but 2 value rows"):
        write_results(tmp_path, ["m"], [["a"]], ["m"], [["a"], ["b"]], "")
