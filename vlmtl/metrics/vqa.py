"""VQA accuracy, reproducing the official VQA evaluation (GT-Vision-Lab ``vqaEval.py``).

Answers are compared after the official normalisation, and a question's accuracy is
the official leave-one-annotator-out average of ``min(1, #matches / 3)``, so that
numbers are comparable with published VQAv2 results.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence

# The official contractions table, verbatim (including its quirks: capitalised keys such as
# "Im" never match after lower-casing, and "somebody'd" maps to "somebodyd").
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas",
    "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}

# Official ``manualMap``: number words to digits.
NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}

ARTICLES = frozenset({"a", "an", "the"})

# Official punctuation list (the apostrophe is deliberately absent; periods are handled below).
PUNCTUATION: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)

# Official regexes, kept verbatim. ``(?!<=\d)`` is a (harmless) typo for a look-behind in the
# original: in effect a period is removed unless a digit follows it ("3.5" keeps its period).
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def _process_punctuation(text: str) -> str:
    """Official ``processPunctuation``: a mark touching a space, or any mark in a string with a
    comma between digits, is deleted; otherwise it is replaced by a space."""
    out = text
    delete_all = _COMMA_STRIP.search(text) is not None
    for p in PUNCTUATION:
        if delete_all or (p + " ") in text or (" " + p) in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out)


def _process_digit_article(text: str) -> str:
    """Official ``processDigitArticle``: number words to digits, drop articles, fix contractions."""
    words = []
    for word in text.lower().split():
        word = NUMBER_WORDS.get(word, word)
        if word not in ARTICLES:
            words.append(word)
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def normalize_answer(answer: str) -> str:
    """Normalise an answer as the official VQA evaluation does, so that e.g. "Two" == "2",
    "the dog." == "dog" and "dont" == "don't"."""
    if not isinstance(answer, str):
        raise TypeError(f"answer must be a str, got {type(answer).__name__}")
    text = answer.replace("\n", " ").replace("\t", " ").strip().lower()
    return _process_digit_article(_process_punctuation(text))


def answer_soft_score(count: int) -> float:
    """VQAv2 soft training target for an answer given by ``count`` annotators: min(1, count/3)."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    return min(1.0, count / 3.0)


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQA accuracy of one prediction against the annotators' answers, in [0, 1], exactly as
    the official ``vqaEval.py`` (GT-Vision-Lab/VQA) computes it.

    The prediction is stripped and fully normalised (punctuation, number words, articles,
    contractions: :func:`normalize_answer`). The human answers are compared as given, except
    that their punctuation is processed when they are not all identical (the official code
    applies no digit/article step to them: VQAv2's annotation files already hold normalised
    answers). The score is the mean over the len(answers) leave-one-out subsets of
    min(1, #matches among the others / 3): with 10 answers, 3 matches give 1.0 and 2 give 0.6;
    with fewer than 4 answers the maximum is below 1.
    """
    if isinstance(answers, str):
        raise TypeError("answers must be a list of strings, not a single string")
    if len(answers) == 0:
        raise ValueError("answers must not be empty")
    pred = normalize_answer(prediction)
    truths = list(answers)
    if len(set(truths)) > 1:
        truths = [_process_punctuation(a) for a in truths]
    matches = [a == pred for a in truths]
    total = sum(matches)
    return sum(min(1.0, (total - m) / 3.0) for m in matches) / len(matches)


def vqa_score(predictions: Mapping[Hashable, str], answers: Mapping[Hashable, Sequence[str]]) -> float:
    """Mean official accuracy (in [0, 1]) over the question ids of ``answers``.

    ``predictions`` maps question id -> predicted answer and must cover exactly the ids of
    ``answers`` (question id -> list of annotator answers); a mismatch raises naming an id.
    """
    if len(answers) == 0:
        raise ValueError("answers is empty: nothing to score")
    missing = [qid for qid in answers if qid not in predictions]
    if missing:
        raise ValueError(f"no prediction for question id {missing[0]!r} ({len(missing)} missing)")
    extra = [qid for qid in predictions if qid not in answers]
    if extra:
        raise ValueError(f"prediction for unknown question id {extra[0]!r} ({len(extra)} not in answers)")
    return sum(vqa_accuracy(predictions[qid], answers[qid]) for qid in answers) / len(answers)


def accuracy_by_answer_type(scores: Sequence[float], answer_types: Sequence[str | None]) -> dict[str, float]:
    """Percent accuracy overall (``accuracy``) and per answer type, as the official VQA
    evaluation reports it (``yes/no``, ``number``, ``other`` in VQAv2). ``scores`` are
    per-question accuracies in [0, 1]; questions without a type count only overall."""
    if len(scores) != len(answer_types):
        raise ValueError(f"{len(scores)} scores but {len(answer_types)} answer types")
    if not scores:
        raise ValueError("no scores: nothing to average")
    result = {"accuracy": 100.0 * sum(scores) / len(scores)}
    for kind in sorted({t for t in answer_types if t is not None}):
        own = [s for s, t in zip(scores, answer_types) if t == kind]
        result[kind] = 100.0 * sum(own) / len(own)
    return result
