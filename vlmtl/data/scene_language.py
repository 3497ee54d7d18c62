"""Captions and question/answer pairs derived from a ``Scene``.

Captions name every object's size, colour, shape and (mostly) position, so retrieval
must bind attributes to objects; questions are only asked when their answer is
unambiguous, and each gets 10 "human" answers with a little seeded noise so VQA
accuracy has the official leave-one-out structure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scenes import COLORS, COLS, ROWS, SHAPES, SIZES, Scene, SceneObject

NUMBER_WORDS = ("zero", "one", "two", "three", "four")
# How many of the 10 answers are wrong: mostly 0-1, never a majority.
NOISE_COUNTS = (0, 1, 2, 3)
NOISE_P = (0.45, 0.3, 0.15, 0.1)
ANSWER_TYPES = {
    "count": "number",
    "count_shape": "number",
    "exist": "yes/no",
    "color": "other",
    "color_at": "other",
    "shape_at": "other",
    "size": "other",
    "where": "other",
}


@dataclass
class QA:
    question: str
    answer: str  # the truth
    answers: list[str]  # 10 noisy human answers, majority == answer
    qtype: str

    @property
    def answer_type(self) -> str:
        return ANSWER_TYPES[self.qtype]


def location_name(row: int, col: int) -> str:
    """``center``, ``left``, ``top``, ``top left``, ... (a "where" answer)."""
    r, c = ROWS[row], COLS[col]
    if r == "middle":
        return c
    if c == "center":
        return r
    return f"{r} {c}"


LOCATIONS = tuple(location_name(r, c) for r in range(3) for c in range(3))


def location_phrase(row: int, col: int) -> str:
    """``in the center``, ``on the left``, ``at the top``, ``at the bottom right``."""
    name = location_name(row, col)
    if name == "center":
        return "in the center"
    if name in ("left", "right"):
        return f"on the {name}"
    return f"at the {name}"


def plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("s") else "s")


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def noun_phrase(o: SceneObject, with_size: bool = True) -> str:
    words = f"{o.size} {o.color} {o.shape}" if with_size else f"{o.color} {o.shape}"
    return f"{article(words)} {words}"


def join_list(parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _caption(template: int, scene: Scene, objs: list[SceneObject]) -> str:
    n = len(objs)
    if template == 0:
        return join_list([f"{noun_phrase(o)} {location_phrase(o.row, o.col)}" for o in objs])
    if template == 1:
        noun = "object" if n == 1 else "objects"
        head = f"{NUMBER_WORDS[n]} {noun} on a {scene.background} background: "
        return head + join_list([noun_phrase(o) for o in objs])
    if template == 2:
        return "there is " + join_list([f"{noun_phrase(o)} {location_phrase(o.row, o.col)}" for o in objs])
    if template == 3:
        return "; ".join(f"{location_phrase(o.row, o.col)} there is {noun_phrase(o)}" for o in objs)
    return f"a {scene.background} background with " + join_list(
        [f"{noun_phrase(o)} {location_phrase(o.row, o.col)}" for o in objs]
    )


N_TEMPLATES = 5


def make_captions(scene: Scene, rng: np.random.Generator) -> list[str]:
    """2-3 captions from distinct templates, objects in a random order in each."""
    k = int(rng.integers(2, 4))
    templates = rng.choice(N_TEMPLATES, size=k, replace=False)
    captions = []
    for t in templates:
        order = rng.permutation(len(scene.objects))
        captions.append(_caption(int(t), scene, [scene.objects[i] for i in order]))
    return captions


def _candidates(scene: Scene, rng: np.random.Generator) -> dict[str, list[tuple[str, str]]]:
    """Every unambiguous (question, answer), grouped by question type."""
    objs = scene.objects
    shapes = [o.shape for o in objs]
    colors = [o.color for o in objs]
    pairs = {(o.color, o.shape) for o in objs}
    cands: dict[str, list[tuple[str, str]]] = {t: [] for t in ANSWER_TYPES}
    cands["count"].append(("how many objects are there?", str(len(objs))))
    for s in SHAPES:
        if s in shapes or rng.random() < 0.25:
            cands["count_shape"].append((f"how many {plural(s)} are there?", str(shapes.count(s))))
    for o in objs:
        loc = location_phrase(o.row, o.col)
        cands["shape_at"].append((f"what shape is {loc}?", o.shape))
        cands["color_at"].append((f"what color is the object {loc}?", o.color))
        if shapes.count(o.shape) == 1:
            cands["color"].append((f"what color is the {o.shape}?", o.color))
        if colors.count(o.color) == 1:
            cands["size"].append((f"what is the size of the {o.color} object?", o.size))
        if sum(1 for p in objs if (p.color, p.shape) == (o.color, o.shape)) == 1:
            cands["where"].append((f"where is the {o.color} {o.shape}?", location_name(o.row, o.col)))
        cands["exist"].append((f"is there {article(o.color)} {o.color} {o.shape}?", "yes"))
    # "no" questions: near misses (right colour or right shape) so the answer needs binding.
    palette = list(COLORS)
    for o in objs:
        other_color = palette[int(rng.integers(len(palette)))]
        other_shape = SHAPES[int(rng.integers(len(SHAPES)))]
        for c, s in ((other_color, o.shape), (o.color, other_shape)):
            if (c, s) not in pairs:
                cands["exist"].append((f"is there {article(c)} {c} {s}?", "no"))
    return cands


def _distractors(qtype: str) -> tuple[str, ...]:
    if qtype in ("count", "count_shape"):
        return tuple(str(i) for i in range(5))
    if qtype == "exist":
        return ("yes", "no")
    if qtype in ("color", "color_at"):
        return tuple(COLORS)
    if qtype == "shape_at":
        return SHAPES
    if qtype == "size":
        return SIZES
    return LOCATIONS


def human_answers(answer: str, qtype: str, rng: np.random.Generator) -> list[str]:
    """10 answers: the truth, with 0-3 of them replaced by a plausible wrong answer."""
    answers = [answer] * 10
    n_wrong = int(rng.choice(NOISE_COUNTS, p=NOISE_P))
    wrong = [a for a in _distractors(qtype) if a != answer]
    for i in rng.choice(10, size=n_wrong, replace=False):
        answers[int(i)] = wrong[int(rng.integers(len(wrong)))]
    return answers


def make_questions(scene: Scene, rng: np.random.Generator) -> list[QA]:
    """3-5 questions of different types (types drawn in random order, balanced yes/no)."""
    cands = _candidates(scene, rng)
    k = int(rng.integers(3, 6))
    types = [t for t in ANSWER_TYPES if cands[t]]
    chosen: list[QA] = []
    for t in rng.permutation(types)[:k]:
        pool = cands[str(t)]
        if t == "exist":  # pick yes or no first, so the yes/no answers are balanced
            want = "yes" if rng.random() < 0.5 else "no"
            pool = [qa for qa in pool if qa[1] == want] or pool
        question, answer = pool[int(rng.integers(len(pool)))]
        chosen.append(QA(question, answer, human_answers(answer, str(t), rng), str(t)))
    return chosen
