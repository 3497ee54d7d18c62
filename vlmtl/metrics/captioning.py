"""Caption metrics BLEU-4 and CIDEr-D in pure Python, matching pycocoevalcap's formulas.

pycocoevalcap needs Java for its PTB tokenizer; here ``tokenize_caption`` approximates it
(lower-case, punctuation removed) and the scorers then follow ``bleu_scorer.py`` and
``cider_scorer.py`` line for line, so scores are comparable with the COCO caption toolkit.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

# Quotes/apostrophes are deleted ("dog's" -> "dogs"); other punctuation becomes a space,
# except "." and "," between digits ("3.5", "1,000") and hyphens inside words ("t-shirt").
_DELETE = re.compile(r"['`\u2018\u2019]")
_NON_NUMERIC_DOT_COMMA = re.compile(r"(?<!\d)[.,]|[.,](?!\d)")
_OTHER_PUNCT = re.compile(r"[!\"#$%&()*+/:;<=>?@\[\\\]^_{|}~\u201c\u201d\u2026]")
_EDGE_HYPHENS = re.compile(r"^-+|-+$")


def tokenize_caption(text: str) -> list[str]:
    """Lower-case and split a caption into words without punctuation, roughly as the COCO
    PTB tokenizer (which drops punctuation tokens such as . , ! ? ; : quotes and brackets)."""
    if not isinstance(text, str):
        raise TypeError(f"caption must be a str, got {type(text).__name__}")
    text = _DELETE.sub("", text.lower())
    text = _NON_NUMERIC_DOT_COMMA.sub(" ", text)
    text = _OTHER_PUNCT.sub(" ", text)
    tokens = (_EDGE_HYPHENS.sub("", t) for t in text.split())
    return [t for t in tokens if t]


def _check_inputs(candidates: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]) -> None:
    """Same ids on both sides, non-empty reference lists, strings everywhere."""
    if len(references) == 0:
        raise ValueError("references is empty: nothing to score")
    for key in candidates:
        if key not in references:
            raise ValueError(f"candidate id {key!r} has no references")
    for key, refs in references.items():
        if key not in candidates:
            raise ValueError(f"reference id {key!r} has no candidate")
        if isinstance(refs, str):
            raise ValueError(f"references[{key!r}] must be a list of strings, not a single string")
        if len(refs) == 0:
            raise ValueError(f"references[{key!r}] is empty")


def _ngrams(words: Sequence[str], n: int = 4) -> Counter:
    """Counts of all 1..n-grams (pycocoevalcap ``precook``)."""
    counts: Counter = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i:i + k])] += 1
    return counts


def bleu4(candidates: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]) -> float:
    """Corpus BLEU-4 in [0, 1], as pycocoevalcap ``Bleu(4)`` (its fourth value).

    Clipped n-gram matches and candidate n-gram counts are summed over the corpus, the
    geometric mean of the 1..4-gram precisions is taken, and the brevity penalty compares the
    total candidate length with the sum of each image's closest reference length (ties: shorter).
    """
    _check_inputs(candidates, references)
    n = 4
    small, tiny = 1e-9, 1e-15  # pycocoevalcap's smoothing constants
    guess, correct = [0] * n, [0] * n
    test_len = ref_len = 0
    for key, refs in references.items():
        hyp = tokenize_caption(candidates[key])
        max_ref_counts: dict[tuple[str, ...], int] = {}
        ref_lens = []
        for ref in refs:
            words = tokenize_caption(ref)
            ref_lens.append(len(words))
            for gram, count in _ngrams(words, n).items():
                max_ref_counts[gram] = max(max_ref_counts.get(gram, 0), count)
        test_len += len(hyp)
        ref_len += min((abs(length - len(hyp)), length) for length in ref_lens)[1]
        for k in range(n):
            guess[k] += max(0, len(hyp) - k)
        for gram, count in _ngrams(hyp, n).items():
            correct[len(gram) - 1] += min(max_ref_counts.get(gram, 0), count)
    product = 1.0
    for k in range(n):
        product *= (correct[k] + tiny) / (guess[k] + small)
    score = product ** (1.0 / n)
    ratio = (test_len + tiny) / (ref_len + small)
    if ratio < 1:
        score *= math.exp(1 - 1 / ratio)
    return float(score)


def cider(candidates: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]) -> float:
    """Corpus CIDEr-D, as pycocoevalcap's ``Cider`` (``cider_scorer.py``): mean over images.

    TF-IDF vectors of 1..4-grams with document frequency counted over the references of THIS
    corpus (so a one-image corpus scores 0), ``idf = log(num_images) - log(max(1, df))``; per n,
    the cosine-like similarity uses min(hyp, ref) clipping, a Gaussian length penalty
    (sigma = 6, length = number of bigrams, as in the original code), averaged over the four
    n and over the references, times 10.
    """
    _check_inputs(candidates, references)
    n, sigma = 4, 6.0
    keys = list(references)
    hyp_counts = [_ngrams(tokenize_caption(candidates[key]), n) for key in keys]
    ref_counts = [[_ngrams(tokenize_caption(r), n) for r in references[key]] for key in keys]

    document_frequency: Counter = Counter()
    for refs in ref_counts:
        for gram in {g for counts in refs for g in counts}:
            document_frequency[gram] += 1
    log_num_images = np.log(float(len(keys)))

    def to_vector(counts: Counter) -> tuple[list[dict], list[float], int]:
        vec: list[dict] = [defaultdict(float) for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for gram, term_freq in counts.items():
            df = np.log(max(1.0, document_frequency[gram]))
            k = len(gram) - 1
            vec[k][gram] = float(term_freq) * (log_num_images - df)
            norm[k] += vec[k][gram] ** 2
            if k == 1:  # the original counts bigrams as the "length"
                length += term_freq
        return vec, [float(np.sqrt(x)) for x in norm], length

    def similarity(hyp: tuple, ref: tuple) -> np.ndarray:
        vec_hyp, norm_hyp, len_hyp = hyp
        vec_ref, norm_ref, len_ref = ref
        delta = float(len_hyp - len_ref)
        val = np.zeros(n)
        for k in range(n):
            for gram in vec_hyp[k]:
                ref_value = vec_ref[k].get(gram, 0.0)
                val[k] += min(vec_hyp[k][gram], ref_value) * ref_value
            if norm_hyp[k] != 0 and norm_ref[k] != 0:
                val[k] /= norm_hyp[k] * norm_ref[k]
            val[k] *= np.e ** (-(delta**2) / (2 * sigma**2))
        return val

    scores = []
    for hyp, refs in zip(hyp_counts, ref_counts):
        hyp_vec = to_vector(hyp)
        total = np.zeros(n)
        for ref in refs:
            total += similarity(hyp_vec, to_vector(ref))
        scores.append(float(np.mean(total)) / len(refs) * 10.0)
    return float(np.mean(scores))
