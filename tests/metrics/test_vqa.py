"""VQA normalisation and official leave-one-out accuracy, against hand-computed values."""

import pytest

from vlmtl.metrics import answer_soft_score, normalize_answer, vqa_accuracy, vqa_score


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Two", "2"),  # number word -> digit, lower-cased
        ("none", "0"),  # official manualMap maps "none" to "0"
        ("ten", "10"),
        ("the dog.", "dog"),  # article dropped, trailing period removed
        ("An apple", "apple"),
        ("a man's hat", "man's hat"),  # apostrophe is not in the punctuation list
        ("dont", "don't"),  # contractions table
        ("Isnt", "isn't"),
        ("whats", "what's"),
        ("3,000", "3000"),  # comma between digits: all punctuation deleted, not spaced
        ("3.5", "3.5"),  # period followed by a digit is kept
        ("yes!", "yes"),  # "!" not touching a space -> replaced by a space, then stripped
        ("black-and-white", "black and white"),  # hyphen not touching a space -> space
        ("t - shirt", "t shirt"),  # hyphen touching a space -> deleted
        ("  Red\tand\nblue  ", "red and blue"),  # tab/newline to space, whitespace collapsed
        ("yes/no", "yes no"),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize(
    "n_match, expected",
    [
        (0, 0.0),
        (1, 0.3),  # 9 subsets see 1 match (1/3), 1 sees 0: 9*(1/3)/10 = 0.3
        (2, 0.6),  # 8 subsets see 2 (2/3), 2 see 1 (1/3): (8*2/3 + 2*1/3)/10 = 0.6
        (3, 0.9),  # 7 subsets see 3 (1), 3 see 2 (2/3): (7 + 3*2/3)/10 = 0.9
        (4, 1.0),  # every subset sees >= 3
        (10, 1.0),
    ],
)
def test_vqa_accuracy_leave_one_out(n_match, expected):
    answers = ["cat"] * n_match + ["dog"] * (10 - n_match)
    assert vqa_accuracy("cat", answers) == pytest.approx(expected)


def test_vqa_accuracy_follows_the_official_normalisation_rule():
    """Cases worked through the official vqaEval.py algorithm by hand: the prediction is fully
    normalised; the human answers only lose punctuation, and only when they differ."""
    # prediction "Two" -> "2"; differing answers: "2" and "2." (-> "2") match, "two" stays "two"
    assert vqa_accuracy("Two", ["2", "2.", "two"] + ["3"] * 7) == pytest.approx(0.6)
    # all ten answers identical: compared exactly as given, so "2." never equals the prediction "2"
    assert vqa_accuracy("2", ["2."] * 10) == 0.0
    # ... and the same answers among others lose their period: 10 - 1 = 9 matches in every subset
    assert vqa_accuracy("2", ["2."] * 9 + ["3"]) == pytest.approx(1.0)
    # articles are dropped from the prediction only: "the dog" -> "dog" matches "dog", not "the dog"
    assert vqa_accuracy("the dog", ["dog", "dog", "the dog"] + ["cat"] * 7) == pytest.approx(0.6)
    # surrounding white space and newlines in the prediction are ignored
    assert vqa_accuracy(" yes\n", ["yes"] * 10) == pytest.approx(1.0)


def test_vqa_accuracy_non_ten_answers():
    # 5 answers, 2 match: the 2 matching subsets see 1 (1/3), the 3 others see 2 (2/3):
    # (2*(1/3) + 3*(2/3)) / 5 = (2/3 + 2) / 5 = 8/15
    assert vqa_accuracy("yes", ["yes", "yes", "no", "no", "no"]) == pytest.approx(8 / 15)


def test_vqa_accuracy_bad_inputs():
    with pytest.raises(ValueError):
        vqa_accuracy("yes", [])
    with pytest.raises(TypeError):
        vqa_accuracy("yes", "yes")


def test_vqa_score_mean_and_errors():
    answers = {1: ["yes"] * 10, 2: ["yes"] * 10, 3: ["2"] * 2 + ["3"] * 8}
    preds = {1: "Yes", 2: "no", 3: "two"}
    # (1 + 0 + 0.6) / 3
    assert vqa_score(preds, answers) == pytest.approx(1.6 / 3)
    with pytest.raises(ValueError, match="question id 3"):
        vqa_score({1: "yes", 2: "no"}, answers)
    with pytest.raises(ValueError, match="99"):
        vqa_score({**preds, 99: "x"}, answers)
    with pytest.raises(ValueError):
        vqa_score({}, {})


def test_answer_soft_score():
    assert answer_soft_score(0) == 0.0
    assert answer_soft_score(1) == pytest.approx(1 / 3)
    assert answer_soft_score(2) == pytest.approx(2 / 3)
    assert answer_soft_score(3) == 1.0
    assert answer_soft_score(7) == 1.0
    with pytest.raises(ValueError):
        answer_soft_score(-1)


def test_accuracy_by_answer_type_reports_overall_and_each_type():
    from vlmtl.metrics import accuracy_by_answer_type

    result = accuracy_by_answer_type([1.0, 0.0, 0.6, 1.0], ["yes/no", "yes/no", "number", None])
    assert result == pytest.approx({"accuracy": 65.0, "yes/no": 50.0, "number": 60.0})
    assert list(result)[0] == "accuracy"
    with pytest.raises(ValueError, match="2 scores but 1 answer types"):
        accuracy_by_answer_type([1.0, 0.0], ["other"])
