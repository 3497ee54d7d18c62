"""Caption metrics BLEU-4 and CIDEr-D as in the COCO caption toolkit (pycocoevalcap).

pycocoevalcap's ``COCOEvalCap`` tokenizes candidates and references with the Stanford PTB
tokenizer (Java, lower-cased, punctuation tokens dropped) and scores the tokens with ``Bleu(4)`` and
``Cider()``. Here ``tokenize_captions`` runs that same tokenizer (the CoreNLP jar shipped with
pycocoevalcap, same options, same punctuation list) when pycocoevalcap is installed (extra ``coco``)
and ``java`` is on the PATH; otherwise it falls back to ``tokenize_caption``, a pure-Python
approximation. ``caption_tokenizer()`` says which one is used ("ptb" or "python"); the environment
variable ``VLMTL_CAPTION_TOKENIZER=python`` forces the fallback, ``=ptb`` makes its absence an error.
The scorers follow ``bleu_scorer.py`` and ``cider_scorer.py`` line for line, so with the PTB
tokenizer the scores equal pycocoevalcap's; with the fallback they are close but not identical
(e.g. "it's" -> "its" instead of "it 's", "(x)" -> "x" instead of "-lrb- x -rrb-").
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)

TOKENIZERS = ("ptb", "python")
TOKENIZER_ENV = "VLMTL_CAPTION_TOKENIZER"

# Quotes/apostrophes are deleted ("dog's" -> "dogs"); other punctuation becomes a space,
# except "." and "," between digits ("3.5", "1,000") and hyphens inside words ("t-shirt").
_DELETE = re.compile(r"['`\u2018\u2019]")
_NON_NUMERIC_DOT_COMMA = re.compile(r"(?<!\d)[.,]|[.,](?!\d)")
_OTHER_PUNCT = re.compile(r"[!\"#$%&()*+/:;<=>?@\[\\\]^_{|}~\u201c\u201d\u2026]")
_EDGE_HYPHENS = re.compile(r"^-+|-+$")
# Everything str.splitlines() breaks at. pycocoevalcap replaces only "\n" by a space before writing one
# caption per line, so a "\r", "\x0c", "\u2028", ... in a caption shifts every later caption onto the
# wrong image; replaced by a space here (the tokenizer treats a space and these as the same separator).
_LINE_BREAKS = re.compile(r"[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")


def tokenize_caption(text: str) -> list[str]:
    """Lower-case and split a caption into words without punctuation, roughly as the COCO
    PTB tokenizer (which drops punctuation tokens such as . , ! ? ; : quotes and brackets).
    The pure-Python fallback of ``tokenize_captions``; it does not split contractions ("it's" -> "its")
    and drops more symbols than PTB (brackets, $ % # & / @ < >)."""
    if not isinstance(text, str):
        raise TypeError(f"caption must be a str, got {type(text).__name__}")
    text = _DELETE.sub("", text.lower())
    text = _NON_NUMERIC_DOT_COMMA.sub(" ", text)
    text = _OTHER_PUNCT.sub(" ", text)
    tokens = (_EDGE_HYPHENS.sub("", t) for t in text.split())
    return [t for t in tokens if t]


def _ptb() -> tuple[str, frozenset[str]] | None:
    """(path of pycocoevalcap's Stanford CoreNLP jar, its punctuation tokens), or None when not installed."""
    try:
        from pycocoevalcap.tokenizer import ptbtokenizer
    except ImportError:
        return None
    jar = os.path.join(os.path.dirname(os.path.abspath(ptbtokenizer.__file__)), ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR)
    return (jar, frozenset(ptbtokenizer.PUNCTUATIONS)) if os.path.isfile(jar) else None


def caption_tokenizer() -> str:
    """The tokenizer the caption metrics use: "ptb" (pycocoevalcap's PTB tokenizer, needs pycocoevalcap and
    ``java`` on the PATH) or "python" (the ``tokenize_caption`` approximation)."""
    forced = os.environ.get(TOKENIZER_ENV, "").strip().lower()
    if forced not in ("", *TOKENIZERS):
        raise ValueError(f"{TOKENIZER_ENV}={forced!r}: expected one of {TOKENIZERS}")
    if forced == "python":
        return "python"
    available = _ptb() is not None and shutil.which("java") is not None
    if forced == "ptb" and not available:
        raise RuntimeError(f"{TOKENIZER_ENV}=ptb but the PTB tokenizer needs pycocoevalcap "
                           "(pip install 'vlmtl[coco]') and java on the PATH")
    return "ptb" if available else "python"


def _run_ptb(sentences: Sequence[str]) -> list[str]:
    """pycocoevalcap ``PTBTokenizer.tokenize`` for a flat list of captions, in ONE java call: the same jar,
    options (-preserveLines -lowerCase) and punctuation filter; the temporary file goes to the system temp
    directory instead of pycocoevalcap's package folder (which may be read-only), java's exit status and
    line count are checked, and its progress message on stderr is kept out of the logs."""
    ptb, java = _ptb(), shutil.which("java")
    if ptb is None or java is None:
        raise RuntimeError("the PTB tokenizer needs pycocoevalcap (pip install 'vlmtl[coco]') and java on the PATH")
    jar, punctuations = ptb
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as handle:
        handle.write("\n".join(_LINE_BREAKS.sub(" ", s) for s in sentences).encode())
        path = handle.name
    try:
        result = subprocess.run([java, "-cp", jar, "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines",
                                 "-lowerCase", path], stdin=subprocess.DEVNULL, capture_output=True, check=False)
    finally:
        os.remove(path)
    lines = result.stdout.decode().split("\n")
    if result.returncode != 0 or len(lines) < len(sentences) or any(lines[len(sentences):]):
        raise RuntimeError(f"PTB tokenizer failed (exit status {result.returncode}, {len(lines)} lines for "
                           f"{len(sentences)} captions): {result.stderr.decode(errors='replace')[-2000:]}")
    return [" ".join(w for w in line.rstrip().split(" ") if w not in punctuations) for line in lines[:len(sentences)]]


_warned_fallback = False


@functools.lru_cache(maxsize=4)  # bleu4 and cider of one evaluation tokenize the same captions: java runs once
def _tokenize_all(sentences: tuple[str, ...], tokenizer: str) -> tuple[str, ...]:
    """Each caption as one string of space-separated tokens (pycocoevalcap's scorers split it on white space)."""
    for s in sentences:
        if not isinstance(s, str):
            raise TypeError(f"caption must be a str, got {type(s).__name__}")
    if tokenizer == "ptb":
        return tuple(_run_ptb(sentences))
    return tuple(" ".join(tokenize_caption(s)) for s in sentences)


def _resolve(tokenizer: str | None) -> str:
    global _warned_fallback
    if tokenizer is None:
        tokenizer = caption_tokenizer()
        if tokenizer == "python" and not _warned_fallback:
            _warned_fallback = True
            logger.warning("caption metrics use the pure-Python approximation of the PTB tokenizer (no pycocoevalcap "
                           "or no java): BLEU/CIDEr are close to, not equal to, the COCO caption toolkit's")
    elif tokenizer not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {TOKENIZERS} or None, got {tokenizer!r}")
    return tokenizer


def tokenize_captions(captions: Mapping[Hashable, str | Sequence[str]], tokenizer: str | None = None
                      ) -> dict[Hashable, list[str]]:
    """Tokenize a whole corpus at once, as pycocoevalcap's ``PTBTokenizer().tokenize`` (which takes
    ``{id: [{"caption": c}, ...]}``): id -> list of lower-cased, space-joined token strings without punctuation.

    A value may be one caption (str) or a list of them. ``tokenizer``: "ptb", "python" or None for
    ``caption_tokenizer()``. With "ptb" java is started once for all captions.
    """
    tokenizer = _resolve(tokenizer)
    lists = {key: [value] if isinstance(value, str) else list(value) for key, value in captions.items()}
    flat = _tokenize_all(tuple(c for value in lists.values() for c in value), tokenizer)
    out, i = {}, 0
    for key, value in lists.items():
        out[key] = list(flat[i:i + len(value)])
        i += len(value)
    return out


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


def _tokenized(candidates: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]],
               tokenizer: str | None) -> tuple[list[list[str]], list[list[list[str]]]]:
    """Checked inputs tokenized in one call (candidates and references together), in the order of
    ``references``: candidate tokens per image and reference tokens per image."""
    _check_inputs(candidates, references)
    for key, hyp in candidates.items():
        if not isinstance(hyp, str):
            raise TypeError(f"candidates[{key!r}] must be a str, got {type(hyp).__name__}")
    keys = list(references)
    sentences = [candidates[key] for key in keys] + [r for key in keys for r in references[key]]
    flat = [line.split() for line in _tokenize_all(tuple(sentences), _resolve(tokenizer))]
    hyps, refs, i = flat[:len(keys)], [], len(keys)
    for key in keys:
        refs.append(flat[i:i + len(references[key])])
        i += len(references[key])
    return hyps, refs


def bleu4(candidates: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]], *,
          tokenizer: str | None = None) -> float:
    """Corpus BLEU-4 in [0, 1], as pycocoevalcap ``Bleu(4)`` (its fourth value) after ``tokenize_captions``
    (``tokenizer``: "ptb", "python" or None for ``caption_tokenizer()``).

    Clipped n-gram matches and candidate n-gram counts are summed over the corpus, the
    geometric mean of the 1..4-gram precisions is taken, and the brevity penalty compares the
    total candidate length with the sum of each image's closest reference length (ties: shorter).
    """
    hyps, ref_tokens = _tokenized(candidates, references, tokenizer)
    n = 4
    small, tiny = 1e-9, 1e-15  # pycocoevalcap's smoothing constants
    guess, correct = [0] * n, [0] * n
    test_len = ref_len = 0
    for hyp, refs in zip(hyps, ref_tokens):
        max_ref_counts: dict[tuple[str, ...], int] = {}
        ref_lens = []
        for words in refs:
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


def cider(candidates: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]], *,
          tokenizer: str | None = None) -> float:
    """Corpus CIDEr-D, as pycocoevalcap's ``Cider`` (``cider_scorer.py``): mean over images, after
    ``tokenize_captions`` (``tokenizer``: "ptb", "python" or None for ``caption_tokenizer()``).

    TF-IDF vectors of 1..4-grams with document frequency counted over the references of THIS
    corpus (so a one-image corpus scores 0), ``idf = log(num_images) - log(max(1, df))``; per n,
    the cosine-like similarity uses min(hyp, ref) clipping, a Gaussian length penalty
    (sigma = 6, length = number of bigrams, as in the original code), averaged over the four
    n and over the references, times 10.
    """
    hyps, ref_tokens = _tokenized(candidates, references, tokenizer)
    n, sigma = 4, 6.0
    hyp_counts = [_ngrams(hyp, n) for hyp in hyps]
    ref_counts = [[_ngrams(r, n) for r in refs] for refs in ref_tokens]

    document_frequency: Counter = Counter()
    for refs in ref_counts:
        for gram in {g for counts in refs for g in counts}:
            document_frequency[gram] += 1
    log_num_images = np.log(float(len(hyps)))

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
