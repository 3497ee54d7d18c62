"""BLEU-4 and CIDEr-D on tiny corpora computed by hand, and against pycocoevalcap (PTB tokenizer + Bleu(4) + Cider)
when java is on the PATH (then pycocoevalcap, part of the ``test`` extra, must be installed too)."""

import math
import os
import shutil

import pytest

from vlmtl.metrics import bleu4, caption_tokenizer, captioning, cider, tokenize_caption, tokenize_captions

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="the PTB tokenizer needs java")

# Punctuation, contractions, possessives, hyphens, quotes (ASCII and typographic), brackets, numbers, symbols,
# line breaks inside a caption, an empty caption and one of punctuation only.
TRICKY = [
    'A Dog, running!  "fast"; (really):',
    "It's 3.5 feet.",
    "a t-shirt - red",
    "don't can't won't I'm we're they've",
    "the dog's ball and the dogs' bowls",
    "1,000 people at 10:30 p.m. on 12/25/2019",
    "U.S.A. flag",
    "a 'quoted' word and ``another''",
    "a \u201cfancy\u201d quote \u2019s",
    "caf\u00e9 na\u00efve \u4e2d\u6587",
    "well-known 5-year-old x--y -dash- e-mail",
    "wait... what?!",
    "cost $5 & 50% off",
    "a/b test #1 @home <angle> [bracket] {brace}",
    "Mr. Smith's  car",
    "cannot gonna wanna",
    "multi\nline",
    "tab\there",
    "trailing   ",
    "3.14, 2.5. and 1,5",
    "'tis o'clock rock'n'roll",
    "",
    "...",
]


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


@pytest.fixture
def python_only(monkeypatch):
    """No java on the PATH: the caption metrics must fall back to the pure-Python tokenizer."""
    monkeypatch.delenv(captioning.TOKENIZER_ENV, raising=False)
    monkeypatch.setattr(captioning.shutil, "which", lambda *args, **kwargs: None)


@needs_java
def test_ptb_tokenizer_is_used_and_equals_pycocoevalcap(tmp_path, monkeypatch):
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    monkeypatch.delenv(captioning.TOKENIZER_ENV, raising=False)
    assert caption_tokenizer() == "ptb"
    captions = {i: [c] for i, c in enumerate(TRICKY)} | {"many": TRICKY[:5]}
    official = PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})
    # Ours writes its temporary file to the temp directory, not into pycocoevalcap's folder, from any cwd.
    package_dir = os.path.dirname(captioning._ptb()[0])
    before = sorted(os.listdir(package_dir))
    monkeypatch.setattr(captioning.tempfile, "tempdir", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    captioning._tokenize_all.cache_clear()
    assert tokenize_captions(captions) == official
    assert sorted(os.listdir(package_dir)) == before and os.listdir(tmp_path) == []
    assert official[1] == ["it 's 3.5 feet"] and official[3] == ["do n't ca n't wo n't i 'm we 're they 've"]


@needs_java
def test_ptb_line_breaks_inside_captions_keep_alignment():
    # pycocoevalcap writes one caption per line and only replaces "\n": "\r", "\u2028", ... would shift the
    # following captions onto other images. Here they are spaces.
    captions = {0: ["a\rb"], 1: ["c\u2028d", "e\x0cf\x85g"], 2: ["h\r\ni"], 3: ["j"]}
    assert tokenize_captions(captions, tokenizer="ptb") == {0: ["a b"], 1: ["c d", "e f g"], 2: ["h i"], 3: ["j"]}


@needs_java
def test_bleu4_and_cider_equal_pycocoevalcap(monkeypatch):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    monkeypatch.delenv(captioning.TOKENIZER_ENV, raising=False)
    references = {
        1: ["A man riding a horse on the beach.", "A person rides a brown horse near the ocean!",
            "Man on horseback, by the sea"],
        2: ["Two dogs playing with a frisbee in the park.", "two dogs' frisbee game (outdoors)"],
        3: ["It's a 5-year-old boy eating a hot-dog.", "a young boy eats a hot dog", "A kid's lunch: a hot dog."],
        4: ["A kitchen with a stove, a sink and a refrigerator.", "A small kitchen; white cabinets."],
        5: ["A red double-decker bus on a city street", "A bus that's red drives down the road ..."],
    }
    candidates = {1: "a man riding a horse on a beach", 2: "Two dogs play frisbee in a park!",
                  3: "a boy eating a hot dog.", 4: "a kitchen with a stove and a sink", 5: "a red bus , on the road"}
    # COCOEvalCap.evaluate: tokenize references and candidates, then score the token strings.
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in references.items()})
    res = tokenizer.tokenize({k: [{"caption": c}] for k, c in candidates.items()})
    official_bleu = Bleu(4).compute_score(gts, res, verbose=0)[0][3]
    official_cider = Cider().compute_score(gts, res)[0]
    assert 0 < official_bleu < 1 and 0 < official_cider
    assert bleu4(candidates, references) == pytest.approx(official_bleu, abs=1e-6)
    assert cider(candidates, references) == pytest.approx(official_cider, abs=1e-6)
    # The fallback tokenizer gives other tokens ("it 's" vs "its", "that 's" vs "thats") and so other scores.
    assert bleu4(candidates, references, tokenizer="python") != pytest.approx(official_bleu, abs=1e-6)


@needs_java
def test_ptb_failure_is_an_error(monkeypatch):
    monkeypatch.setattr(captioning.shutil, "which", lambda *args, **kwargs: "/bin/false")
    captioning._tokenize_all.cache_clear()
    with pytest.raises(RuntimeError, match="PTB tokenizer failed"):
        tokenize_captions({0: "a dog"}, tokenizer="ptb")


def test_python_fallback_without_java(python_only):
    assert caption_tokenizer() == "python"
    assert tokenize_captions({0: "It's a Dog!", 1: ["(a) t-shirt", "3.5 ft."]}) == {0: ["its a dog"],
                                                                                  1: ["a t-shirt", "3.5 ft"]}
    refs = {1: ["a man riding a horse", "a person on a horse"], 2: ["two birds on a wire"], 3: ["a bowl of soup"]}
    cands = {1: "A man, riding a horse!", 2: "two birds on a wire.", 3: "a bowl of soup"}
    assert bleu4(cands, refs) == pytest.approx(1.0, rel=1e-6)
    assert cider(cands, refs) == pytest.approx(cider(cands, refs, tokenizer="python"))
    with pytest.raises(RuntimeError, match="java"):
        tokenize_captions({0: "a"}, tokenizer="ptb")


def test_tokenizer_environment_variable(monkeypatch):
    monkeypatch.setenv(captioning.TOKENIZER_ENV, "python")
    assert caption_tokenizer() == "python"
    monkeypatch.setenv(captioning.TOKENIZER_ENV, "spacy")
    with pytest.raises(ValueError, match="spacy"):
        caption_tokenizer()
    monkeypatch.setenv(captioning.TOKENIZER_ENV, "ptb")
    monkeypatch.setattr(captioning.shutil, "which", lambda *args, **kwargs: None)
    with pytest.raises(RuntimeError, match="java"):
        caption_tokenizer()
    with pytest.raises(ValueError, match="tokenizer"):
        bleu4({0: "a"}, {0: ["a"]}, tokenizer="nltk")
