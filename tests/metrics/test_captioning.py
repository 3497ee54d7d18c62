"""BLEU-4 and CIDEr-D on tiny corpora computed by hand."""

import math

import pytest

from vlmtl.metrics import bleu4, cider, tokenize_caption


def test_tokenize_caption():
    assert tokenize_caption('A Dog, running!  "fast"; (really):') == ["a", "dog", "running", "fast", "really"]
    assert tokenize_caption("It's 3.5 feet.") == ["its", "3.5", "feet"]
    assert tokenize_caption("a t-shirt - red") == ["a", "t-shirt", "red"]


def test_bleu4_hand_computed_with_brevity_penalty():
    cand = {"x": "The cat sat on the mat."}
    refs = {"x": ["the cat sat on the red mat", "a cat is on a mat here now today"]}
    # candidate: 6 words; closest reference length is 7 -> BP = exp(1 - 7/6)
    # p1: the(2, ref1 has 2) cat sat on mat -> 6/6
    # p2: the-cat cat-sat sat-on on-the match ref1, the-mat matches nothing -> 4/5
    # p3: the-cat-sat cat-sat-on sat-on-the match, on-the-mat does not -> 3/4
    # p4: the-cat-sat-on cat-sat-on-the match, sat-on-the-mat does not -> 2/3
    expected = (1 * 4 / 5 * 3 / 4 * 2 / 3) ** 0.25 * math.exp(1 - 7 / 6)
    assert bleu4(cand, refs) == pytest.approx(expected, rel=1e-6)


def test_bleu4_is_corpus_level():
    cand = {1: "a b c d", 2: "e f g h"}
    refs = {1: ["a b c d"], 2: ["e f x h"]}
    # matches / guesses summed over both images:
    # p1 = (4 + 3)/8, p2 = (3 + 1)/6 (e-f), p3 = (2 + 0)/4, p4 = (1 + 0)/2; equal lengths -> BP = 1
    expected = (7 / 8 * 4 / 6 * 2 / 4 * 1 / 2) ** 0.25
    assert bleu4(cand, refs) == pytest.approx(expected, rel=1e-6)


def test_bleu4_closest_length_tie_takes_shorter_reference():
    # candidate length 5, references 4 and 6: tie -> 4 (as pycocoevalcap), so no brevity penalty;
    # all n-grams of the candidate occur in the second reference -> BLEU = 1 (with 6 it would be exp(-0.2)).
    assert bleu4({0: "a b c d e"}, {0: ["a b c d", "a b c d e f"]}) == pytest.approx(1.0, rel=1e-6)


def test_bleu4_bad_inputs():
    with pytest.raises(ValueError, match="'b'"):
        bleu4({"a": "x y"}, {"a": ["x y"], "b": ["z"]})
    with pytest.raises(ValueError, match="'c'"):
        bleu4({"a": "x y", "c": "q"}, {"a": ["x y"]})
    with pytest.raises(ValueError, match="empty"):
        bleu4({"a": "x y"}, {"a": []})
    with pytest.raises(ValueError):
        bleu4({"a": "x y"}, {"a": "x y"})


def test_cider_identical_candidates_two_images():
    # Disjoint vocabularies: every n-gram has df = 1, so its weight is log(2) - log(1) = log 2 > 0.
    # Candidate == every reference: each n-gram order has similarity 1 and no length penalty,
    # so per image (1+1+1+1)/4 * 10 = 10 (averaged over its identical references).
    cand = {1: "a dog runs fast", 2: "the cat sleeps now"}
    refs = {1: ["a dog runs fast", "A dog runs fast."], 2: ["the cat sleeps now"]}
    assert cider(cand, refs) == pytest.approx(10.0)
    # 3-word captions have no 4-grams (zero norm -> 0): (1+1+1+0)/4 * 10 = 7.5
    assert cider({1: "a b c", 2: "d e f"}, {1: ["a b c"], 2: ["d e f"]}) == pytest.approx(7.5)


def test_cider_hand_computed_length_penalty():
    cand = {1: "a b c", 2: "f g h"}
    refs = {1: ["a b c d e"], 2: ["f g h"]}
    # image 1, all weights equal (df = 1): 1-grams 3/(sqrt3*sqrt5), 2-grams 2/(sqrt2*sqrt4),
    # 3-grams 1/(1*sqrt3), 4-grams 0; length = #bigrams: 2 vs 4 -> penalty exp(-(2^2)/(2*6^2))
    image1 = (3 / math.sqrt(15) + 2 / math.sqrt(8) + 1 / math.sqrt(3)) / 4 * math.exp(-4 / 72) * 10
    image2 = 7.5
    assert cider(cand, refs) == pytest.approx((image1 + image2) / 2)


def test_cider_common_ngrams_get_zero_weight():
    # "red" appears in both images' references: idf = log 2 - log 2 = 0, so only car/bus and the
    # bigrams count: per image (1 + 1 + 0 + 0)/4 * 10 = 5
    assert cider({1: "red car", 2: "red bus"}, {1: ["red car"], 2: ["red bus"]}) == pytest.approx(5.0)
    # Swapped candidates share only the zero-weight "red": score 0
    assert cider({1: "red bus", 2: "red car"}, {1: ["red car"], 2: ["red bus"]}) == pytest.approx(0.0)


def test_cider_d_clips_repeated_words():
    # Image 1: hyp "dog dog" (dog: 2w), ref "dog" (dog: w), w = log 2.
    # Clipped 1-gram similarity = min(2w, w)*w / (2w * w) = 0.5 (unclipped cosine would be 1);
    # the hyp bigram has no reference counterpart -> 0; length 1 vs 0 bigrams -> exp(-1/72).
    # Image 2: "cat" vs "cat": (1 + 0 + 0 + 0)/4 * 10 = 2.5
    image1 = 0.5 / 4 * math.exp(-1 / 72) * 10
    assert cider({1: "dog dog", 2: "cat"}, {1: ["dog"], 2: ["cat"]}) == pytest.approx((image1 + 2.5) / 2)


def test_cider_properties_and_errors():
    refs = {1: ["a man riding a horse", "a person on a horse"], 2: ["two birds on a wire"], 3: ["a bowl of soup"]}
    good = {1: "a man riding a horse", 2: "two birds on a wire", 3: "a bowl of soup"}
    bad = {1: "a bowl of soup", 2: "a man riding a horse", 3: "two birds on a wire"}
    assert cider(good, refs) > cider(bad, refs)
    assert cider({1: "zebra", 2: "zebra", 3: "zebra"}, refs) == 0.0  # disjoint vocabulary
    assert cider({1: "a man"}, {1: ["a man"]}) == 0.0  # one image: idf log(1) - log(1) = 0
    with pytest.raises(ValueError, match="2"):
        cider({1: "x"}, {1: ["x"], 2: ["y"]})
    with pytest.raises(ValueError, match="empty"):
        cider({1: "x"}, {1: []})
