"""A word-level tokenizer for small closed vocabularies (the embedded synthetic data).

Called like open_clip's tokenizers: ``tokenizer(texts) -> LongTensor[B, context_length]``,
with ``<sot>`` first, ``<eot>`` after the last word, zeros after. ``<eot>`` has the
largest id because open_clip pools the text tower at ``argmax(token id)``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import torch

WORD_TOKENIZER_FILE = "vlmtl_tokenizer.json"  # vlmtl's word tokenizer, saved beside a model

PAD, UNK, SOT, EOT = "<pad>", "<unk>", "<sot>", "<eot>"
_WORD = re.compile(r"[a-z0-9]+")


def split_words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class WordTokenizer:
    def __init__(self, words: Iterable[str], context_length: int = 32) -> None:
        words = [w for w in dict.fromkeys(words) if w not in (PAD, UNK, SOT, EOT)]
        self.vocab = [PAD, UNK, *words, SOT, EOT]
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.context_length = int(context_length)
        self.pad_id, self.unk_id = 0, 1
        self.sot_id, self.eot_id = len(self.vocab) - 2, len(self.vocab) - 1

    @classmethod
    def build(cls, texts: Iterable[str], context_length: int = 32) -> WordTokenizer:
        words = sorted({w for text in texts for w in split_words(text)})
        return cls(words, context_length)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        ids = [self.index.get(w, self.unk_id) for w in split_words(text)]
        ids = ids[: self.context_length - 2]
        return [self.sot_id, *ids, self.eot_id]

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        length = context_length or self.context_length
        out = torch.zeros(len(texts), length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = self.encode(text)
            if len(ids) > length:  # a shorter context than the tokenizer's: keep <eot> last
                ids = ids[: length - 1] + [self.eot_id]
            out[row, : len(ids)] = torch.tensor(ids)
        return out

    def decode(self, ids: Iterable[int]) -> str:
        words = []
        for i in (int(v) for v in ids):
            if i == self.eot_id:
                break
            if i in (self.pad_id, self.sot_id):
                continue
            words.append(self.vocab[i] if 0 <= i < len(self.vocab) else "<unk>")
        return " ".join(words)

    def save(self, path: str | Path) -> None:
        data = {"type": "word", "context_length": self.context_length, "vocab": self.vocab}
        Path(path).write_text(json.dumps(data, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> WordTokenizer:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer vocabulary not found: {path}")
        data = json.loads(path.read_text())
        if data.get("type") != "word" or "vocab" not in data:
            raise ValueError(f"{path} is not a vlmtl word-tokenizer file (needs type='word' and a vocab list)")
        vocab = data["vocab"]
        if vocab[:2] != [PAD, UNK] or vocab[-2:] != [SOT, EOT]:
            raise ValueError(f"{path}: vocab must start with {PAD}, {UNK} and end with {SOT}, {EOT}")
        return cls(vocab[2:-2], data.get("context_length", 32))
