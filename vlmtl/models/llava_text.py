"""The text side of LLaVA training without a processor: tokenizers, prompt templates, inputs.

- ``LlavaWordTokenizer`` / ``HFLlavaTokenizer``: one small interface over vlmtl's word
  tokenizer (plus an ``<image>`` token) and over a transformers tokenizer.
- ``PROMPTS`` + ``build_inputs``: ``[bos] <image>×N prompt target [eos]`` with the
  prompt, image and padding positions masked out of the labels; the image token is
  repeated once per image feature the model scatters in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import torch

from vlmtl.registry import LM_IGNORE_INDEX

from .tokenizer import UNK, WORD_TOKENIZER_FILE, WordTokenizer, split_words

PROMPTS: dict[str, str] = {
    "vqa": "question: {text} answer:",
    "caption": "describe the image:",
}


# --------------------------------------------------------------------------- tokenizers


class LlavaTokenizer(Protocol):
    """What ``build_inputs`` and ``MultiTaskLlava`` need from a tokenizer."""

    pad_id: int
    bos_id: int | None
    eos_id: int
    image_token_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...  # words only, no special tokens
    def decode(self, ids: Iterable[int]) -> str: ...
    def save(self, path: str | Path) -> None: ...


class LlavaWordTokenizer:
    """vlmtl's ``WordTokenizer`` plus one ``<image>`` id after its vocabulary.

    ``<sot>``/``<eot>`` serve as bos/eos. The image id is never produced from text (the
    word splitter drops ``<``/``>``): ``build_inputs`` places it by id, once per patch."""

    def __init__(self, words: WordTokenizer) -> None:
        self.words = words
        self.pad_id, self.unk_id = words.pad_id, words.unk_id
        self.bos_id, self.eos_id = words.sot_id, words.eot_id
        self.image_token_id = words.vocab_size
        self.vocab_size = words.vocab_size + 1

    @classmethod
    def build(cls, texts: Iterable[str], prompts: Mapping[str, str] = PROMPTS) -> LlavaWordTokenizer:
        """A vocabulary of the words in ``texts`` and in the prompt templates."""
        templates = [p.replace("{text}", " ") for p in prompts.values()]
        return cls(WordTokenizer.build([*texts, *templates]))

    def encode(self, text: str) -> list[int]:
        index = self.words.index
        return [index.get(w, self.unk_id) for w in split_words(text)]

    def decode(self, ids: Iterable[int]) -> str:
        words = []
        for i in (int(v) for v in ids):
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id, self.image_token_id):
                continue
            words.append(self.words.vocab[i] if 0 <= i < len(self.words.vocab) else UNK)
        return " ".join(words)

    def save(self, path: str | Path) -> None:
        """Write ``vlmtl_tokenizer.json`` into the folder ``path`` (the image id is implied)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.words.save(path / WORD_TOKENIZER_FILE)

    @classmethod
    def load(cls, path: str | Path) -> LlavaWordTokenizer:
        path = Path(path)
        return cls(WordTokenizer.load(path / WORD_TOKENIZER_FILE if path.is_dir() else path))


class HFLlavaTokenizer:
    """A transformers tokenizer behind the same small interface (for real checkpoints)."""

    def __init__(self, tokenizer, image_token_id: int) -> None:
        self.tokenizer = tokenizer
        self.image_token_id = int(image_token_id)
        self.bos_id = tokenizer.bos_token_id
        self.eos_id = tokenizer.eos_token_id
        if self.eos_id is None:
            raise ValueError("the tokenizer has no eos token: generation could not stop")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.vocab_size = len(tokenizer)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return self.tokenizer.decode([i for i in ids if i != self.image_token_id], skip_special_tokens=True).strip()

    def save(self, path: str | Path) -> None:
        self.tokenizer.save_pretrained(path)


# --------------------------------------------------------------------------- prompts and inputs


def format_prompt(task: str, text: str = "", prompts: Mapping[str, str] = PROMPTS) -> str:
    """The task's prompt template filled with the sample's text (the question for vqa)."""
    if task not in prompts:
        raise ValueError(f"no prompt template for task {task!r}; templates exist for {sorted(prompts)}")
    return prompts[task].format(text=text)


def build_inputs(
    prompts: Sequence[str],
    targets: Sequence[str] | None,
    tokenizer: LlavaTokenizer,
    num_image_tokens: int,
    padding_side: str | None = None,
    max_length: int | None = None,
) -> dict[str, torch.Tensor]:
    """Token ids ``[bos] <image>×num_image_tokens prompt [target eos]`` per sample.

    With ``targets`` (training) ``labels`` keep the target and eos and are -100 elsewhere
    (bos, image, prompt, padding); without (generation) there are no labels. Padding goes
    right for training and left for generation (new tokens must follow every prompt
    directly) unless ``padding_side`` says otherwise. ``max_length`` cuts text from the
    end, never an image token."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, one per sample")
    if targets is not None and len(targets) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    if not prompts:
        raise ValueError("no prompts given")
    if num_image_tokens <= 0:
        raise ValueError(f"num_image_tokens must be positive, got {num_image_tokens}")
    padding_side = padding_side or ("right" if targets is not None else "left")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")

    head = ([tokenizer.bos_id] if tokenizer.bos_id is not None else []) + [tokenizer.image_token_id] * num_image_tokens
    rows: list[tuple[list[int], list[int]]] = []
    for i, prompt in enumerate(prompts):
        ids = head + tokenizer.encode(prompt)
        labels = [LM_IGNORE_INDEX] * len(ids)
        if targets is not None:
            answer = tokenizer.encode(targets[i]) + [tokenizer.eos_id]
            ids, labels = ids + answer, labels + answer
        if max_length is not None and len(ids) > max_length:
            if max_length < len(head):
                raise ValueError(f"max_length {max_length} cannot hold the {len(head)} bos and image tokens")
            ids, labels = ids[:max_length], labels[:max_length]
        rows.append((ids, labels))

    length = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), length), tokenizer.pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    labels = torch.full((len(rows), length), LM_IGNORE_INDEX, dtype=torch.long)
    for row, (ids, labs) in enumerate(rows):
        span = slice(0, len(ids)) if padding_side == "right" else slice(length - len(ids), length)
        input_ids[row, span] = torch.tensor(ids)
        attention_mask[row, span] = 1
        labels[row, span] = torch.tensor(labs)
    out = {"input_ids": input_ids, "attention_mask": attention_mask}
    if targets is not None:
        out["labels"] = labels
    return out


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids counting only real tokens, as ``generate`` makes them, so a
    left-padded sample sees the positions it would see alone."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


__all__ = [
    "PROMPTS",
    "HFLlavaTokenizer",
    "LlavaTokenizer",
    "LlavaWordTokenizer",
    "build_inputs",
    "format_prompt",
    "positions_from_mask",
]
