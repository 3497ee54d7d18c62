"""AnswerVocab: building, soft scores, decoding and serialisation."""

from __future__ import annotations

import pickle

import pytest
import torch

from vlmtl.data import AnswerVocab, Sample


def _vqa(answers: list[str], i: int) -> Sample:
    return Sample("vqa", "x.png", "img", "question?", answers=answers, sample_id=f"q{i}")


SAMPLES = [
    _vqa(["Yes"] * 7 + ["no"] * 3, 0),
    _vqa(["yes"] * 6 + ["no"] * 4, 1),
    _vqa(["2"] * 4 + ["two", "3", "3", "3", "3", "3"], 2),  # majority: 3
    _vqa([" Red "] * 10, 3),
    Sample("retrieval", "x.png", "img", "a caption", sample_id="r0"),
]


def test_build_majority_counts_each_question_once():
    vocab = AnswerVocab.build(SAMPLES)
    # yes: 2 questions; "3" and "red": 1 each (alphabetical tie order)
    assert vocab.answers == ["yes", "3", "red"]
    assert "no" not in vocab and "2" not in vocab
    assert len(vocab) == 3


def test_build_all_answers_and_top_k():
    vocab = AnswerVocab.build(SAMPLES, count="all")
    assert vocab.answers[:2] == ["yes", "red"]  # 13 and 10 occurrences
    assert set(vocab.answers) == {"yes", "no", "red", "3", "2", "two"}
    assert AnswerVocab.build(SAMPLES, count="all", top_k=2).answers == ["yes", "red"]
    assert AnswerVocab.build(SAMPLES, count="all", min_count=5).answers == ["yes", "red", "no", "3"]
    with pytest.raises(ValueError, match="count"):
        AnswerVocab.build(SAMPLES, count="some")
    with pytest.raises(ValueError, match="no vqa answers"):
        AnswerVocab.build(SAMPLES[-1:])


def test_encode_soft_scores():
    vocab = AnswerVocab(["yes", "no", "2", "3", "blue"])
    target = vocab.encode_soft(["2"] * 2 + ["3"] + ["no"] * 7)
    assert target.dtype == torch.float32 and target.shape == (5,)
    assert torch.allclose(target, torch.tensor([0.0, 1.0, 2 / 3, 1 / 3, 0.0]))
    assert torch.equal(vocab.encode_soft(["purple"] * 10), torch.zeros(5))  # out of vocabulary
    assert torch.allclose(vocab.encode_soft(["YES ", "yes", "Yes"]), torch.tensor([1.0, 0, 0, 0, 0]))


def test_encode_decode_roundtrip():
    vocab = AnswerVocab.build(SAMPLES)
    for i in range(len(vocab)):
        assert vocab.encode(vocab.decode(i)) == i
    assert vocab.encode("  YES") == 0
    assert vocab.encode("banana") is None


def test_custom_normalize_is_used():
    vocab = AnswerVocab.build(SAMPLES, normalize=_numbers_to_digits, count="all")
    assert "two" not in vocab.answers and vocab.encode("two") == vocab.encode("2")
    assert vocab.encode_soft(["two", "2", "2"])[vocab.encode("2")] == 1.0


def _numbers_to_digits(answer: str) -> str:
    a = answer.strip().lower()
    return {"two": "2", "three": "3"}.get(a, a)


def test_json_roundtrip_and_pickle(tmp_path):
    vocab = AnswerVocab.build(SAMPLES, count="all")
    restored = AnswerVocab.from_json(vocab.to_json())
    assert restored.answers == vocab.answers
    vocab.save(tmp_path / "vocab.json")
    assert AnswerVocab.load(tmp_path / "vocab.json").answers == vocab.answers
    assert pickle.loads(pickle.dumps(vocab)).answers == vocab.answers
    with pytest.raises(FileNotFoundError, match="nope.json"):
        AnswerVocab.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text('{"words": []}')
    with pytest.raises(ValueError, match=r"bad\.json.*answers"):
        AnswerVocab.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="duplicate"):
        AnswerVocab(["yes", "yes"])
