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


def test_seed_summary_and_welch_test_on_known_cases():
    from vlmtl.cli.report import mark_unsupported, summarize, supported, t95

    s = summarize([1.0, 2.0, 3.0])
    assert (s.mean, s.std) == (2.0, 1.0) and s.ci95 == pytest.approx(4.303 / 3**0.5)
    assert str(s) == "2.0 ± 1.0" and str(summarize([7.0])) == "7.0"
    # scipy.stats.ttest_ind([1,2,3], [4,5,6], equal_var=False): p = 0.021 (dof 4); [1,2,3] vs [2,3,4]: p = 0.288
    assert supported(summarize([1, 2, 3]), summarize([4, 5, 6]))
    assert not supported(summarize([1, 2, 3]), summarize([2, 3, 4]))
    assert not supported(summarize([1.0]), summarize([9.0])), "one seed supports nothing"
    assert t95(4) == 2.776 and t95(4.9) == 2.776 and t95(100) == 1.96
    cells = mark_unsupported([summarize([1, 2, 3]), summarize([4, 5, 6]), summarize([3, 5, 7])])
    assert cells == ["2.0 ± 1.0", "5.0 ± 1.0", "5.0 ± 2.0 ≈"]
    lower = mark_unsupported([summarize([10, 11, 12]), summarize([20, 21, 22])], higher_is_better=False)
    assert lower == ["11.0 ± 1.0 *", "21.0 ± 1.0"]
