"""A task-routed CLIP plus one head per task, and the per-task losses of a mixed batch.

One image-tower pass serves every sample of the batch with its own task's adapters; the
text tower runs only for the samples that have an input text (vqa questions, retrieval
captions); each head sees only its task's rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vlmtl import distributed
from vlmtl.data import AnswerVocab, MultiTaskCollator
from vlmtl.heads import CaptionDecoder, RetrievalHead, VQAHead
from vlmtl.models import MultiTaskCLIP


def special_token_ids(tokenizer) -> dict[str, int]:
    """pad/bos/eos ids and vocabulary size of a vlmtl, open_clip or Hugging Face tokenizer."""
    if hasattr(tokenizer, "sot_id"):  # WordTokenizer, HFTokenizer
        return {"pad_id": tokenizer.pad_id, "bos_id": tokenizer.sot_id, "eos_id": tokenizer.eot_id,
                "vocab_size": tokenizer.vocab_size}
    if hasattr(tokenizer, "sot_token_id"):  # open_clip SimpleTokenizer
        return {"pad_id": 0, "bos_id": tokenizer.sot_token_id, "eos_id": tokenizer.eot_token_id,
                "vocab_size": tokenizer.vocab_size}
    raise TypeError(f"cannot find special token ids of tokenizer {type(tokenizer).__name__}")


def decode_tokens(tokenizer, ids: Sequence[int]) -> str:
    """Text of generated ids, without special tokens."""
    special = special_token_ids(tokenizer)
    kept = []
    for i in (int(v) for v in ids):
        if i == special["eos_id"]:
            break
        if i not in (special["pad_id"], special["bos_id"]):
            kept.append(i)
    text = tokenizer.decode(kept)
    return text.replace("<start_of_text>", "").replace("<end_of_text>", "").strip()


HEAD_TASKS = ("retrieval", "vqa", "caption")  # the tasks a CLIP head exists for


class VLMultiTaskModel(nn.Module):
    def __init__(self, clip: MultiTaskCLIP, tasks: Sequence[str], num_answers: int = 0,
                 caption_layers: int = 2, caption_heads: int = 4, max_caption_len: int = 32,
                 head_dropout: float = 0.1, local_loss: bool = False, gather_with_grad: bool = True) -> None:
        super().__init__()
        self.clip = clip
        self.tasks = list(tasks)  # the adapters' tasks; a task without a head type (e.g. a probe) gets none
        self.heads = nn.ModuleDict()
        self.head_options = dict(caption_layers=caption_layers, caption_heads=caption_heads,
                                 max_caption_len=max_caption_len, head_dropout=head_dropout, local_loss=local_loss,
                                 gather_with_grad=gather_with_grad)
        for task in self.tasks:
            if task in HEAD_TASKS:
                self.add_head(task, num_answers)

    def add_head(self, task: str, num_answers: int = 0) -> nn.Module:
        """A new head for ``task`` (appended to ``tasks`` if new), built with this model's head options."""
        o = self.head_options
        if task == "retrieval":
            head = RetrievalHead(local_loss=o["local_loss"], gather_with_grad=o["gather_with_grad"])
        elif task == "vqa":
            if num_answers <= 0:
                raise ValueError("the vqa head needs an answer vocabulary (num_answers > 0)")
            head = VQAHead(self.clip.embed_dim, num_answers, dropout=o["head_dropout"])
        elif task == "caption":
            ids = special_token_ids(self.clip.tokenizer)
            head = CaptionDecoder(
                ids["vocab_size"], embed_dim=self.clip.image_token_dim, context_dim=self.clip.image_token_dim,
                num_layers=o["caption_layers"], num_heads=o["caption_heads"], max_len=o["max_caption_len"],
                pad_id=ids["pad_id"], bos_id=ids["bos_id"], eos_id=ids["eos_id"], dropout=o["head_dropout"],
            )
        else:
            raise ValueError(f"no head for task {task!r}; CLIP heads exist for {list(HEAD_TASKS)}")
        if task not in self.tasks:
            self.tasks.append(task)
        self.heads[task] = head
        return head

    @property
    def adapted(self) -> nn.Module:
        """The module holding the adapters (what ``save_adapters`` writes)."""
        return self.clip.backbone

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.clip.set_grad_checkpointing(enable)

    @property
    def preprocess(self):
        return self.clip.preprocess

    def collator(self, answers: AnswerVocab | None = None) -> MultiTaskCollator:
        return MultiTaskCollator(self.clip.tokenizer, answers)

    def loss_counts(self, batch: dict) -> dict[str, float]:
        """What each task's loss averages over in ``batch``: vqa samples, caption target
        tokens, retrieval pairs (see ``RetrievalHead.loss_units``)."""
        counts: dict[str, float] = {}
        if "vqa" in self.heads:
            counts["vqa"] = len(batch["vqa_index"])
        if "retrieval" in self.heads:
            counts["retrieval"] = self.heads["retrieval"].loss_units(len(batch["retrieval_index"]))
        if "caption" in self.heads:
            targets = batch["text_tokens"][batch["caption_index"]][:, 1:]
            counts["caption"] = int(self.heads["caption"].target_mask(targets).sum())
        return counts

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Per-task losses of one (possibly mixed) batch; tasks absent from it are left out."""
        ids = batch["task_ids"]
        need_tokens = "caption" in self.heads and len(batch["caption_index"]) > 0
        image_emb, patch_tokens = self.clip.encode_image(batch["images"], task_ids=ids, return_tokens=True)
        text_parts = [batch[f"{t}_index"] for t in ("vqa", "retrieval") if t in self.heads]
        text_rows = torch.cat(text_parts) if text_parts else ids.new_zeros(0)
        text_emb = None
        if len(text_rows):
            text_emb = self.clip.encode_text(batch["text_tokens"][text_rows], task_ids=ids[text_rows])
        position = {int(r): i for i, r in enumerate(text_rows.tolist())}

        losses: dict[str, torch.Tensor] = {}
        rows = batch.get("retrieval_index")
        # A contrastive loss needs negatives; under data parallelism they may come from other
        # ranks, and every rank takes part in gathering them, with or without pairs of its own.
        if "retrieval" in self.heads and (len(rows) > 1 or distributed.is_distributed()):
            text_pos = torch.tensor([position[int(r)] for r in rows], dtype=torch.long, device=image_emb.device)
            texts = text_emb[text_pos] if text_emb is not None else image_emb[rows]  # no text: both empty
            image_ids = [batch["image_ids"][int(r)] for r in rows]
            loss = self.heads["retrieval"](image_emb[rows], texts, image_ids)
            if loss is not None:
                losses["retrieval"] = loss
        rows = batch.get("vqa_index")
        if "vqa" in self.heads and len(rows):
            text_pos = torch.tensor([position[int(r)] for r in rows], device=image_emb.device)
            logits = self.heads["vqa"](image_emb[rows], text_emb[text_pos])
            losses["vqa"] = self.heads["vqa"].loss(logits, batch["vqa_targets"])
        if need_tokens:
            rows = batch["caption_index"]
            losses["caption"] = self.heads["caption"].loss(batch["text_tokens"][rows], patch_tokens[rows])
        return losses
