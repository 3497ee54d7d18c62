"""Contrastive image-text retrieval head (CLIP's symmetric InfoNCE)."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vlmtl import distributed


class RetrievalHead(nn.Module):
    """Symmetric InfoNCE over a batch of paired image and text embeddings.

    Holds only the learnable temperature: the embeddings come from the two towers.
    As in CLIP, the scale is learnt in log space and clamped at ``max_logit_scale``
    (log 100) so the logits cannot blow up and destabilise training.

    Under data parallelism the pairs of every rank are gathered, so the negatives are those of
    the global batch, as in open_clip's ``ClipLoss``: with ``local_loss`` each rank scores its
    own pairs against all (the loss is the mean over its pairs), otherwise every rank computes
    the loss of the whole global batch; ``gather_with_grad`` lets the gradient of the other
    ranks' use of a rank's embeddings flow back to it. With ``gather_with_grad`` (the default
    here) the gradient equals one process's on the global batch, in either mode; open_clip's
    default (``gather_with_grad=False``) gives the towers that gradient divided by the number
    of ranks. :meth:`loss_units` tells the trainer how to weight each rank's loss.
    """

    def __init__(
        self,
        init_logit_scale: float = math.log(1 / 0.07),
        max_logit_scale: float = math.log(100),
        local_loss: bool = False,
        gather_with_grad: bool = True,
    ) -> None:
        super().__init__()
        if init_logit_scale > max_logit_scale:
            raise ValueError(f"init_logit_scale {init_logit_scale} exceeds max_logit_scale {max_logit_scale}")
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        self.max_logit_scale = float(max_logit_scale)
        self.local_loss = bool(local_loss)
        self.gather_with_grad = bool(gather_with_grad)

    def loss_units(self, pairs: int) -> int:
        """What the loss averages over on this rank: its ``pairs`` with ``local_loss``; else
        the whole global batch, which every rank computes alike (one unit each)."""
        return pairs if self.local_loss else 1

    def scale(self) -> torch.Tensor:
        """The multiplicative temperature exp(logit_scale), clamped at exp(max_logit_scale)."""
        return self.logit_scale.clamp(max=self.max_logit_scale).exp()

    @staticmethod
    def similarity(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Cosine similarity matrix (num_images, num_texts), unscaled: what evaluation ranks by."""
        return F.normalize(image_emb.float(), dim=-1) @ F.normalize(text_emb.float(), dim=-1).t()

    def logits(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Scaled image-to-text logits (B, B); row i is image i against every text."""
        return self.scale() * self.similarity(image_emb, text_emb)

    def forward(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor,
        image_ids: Sequence[Hashable] | None = None,
    ) -> torch.Tensor | None:
        """Mean of the image→text and text→image cross-entropies; pair i is (image i, text i).
        None when the (global) batch holds fewer than two pairs: a contrastive loss needs a
        negative. Under data parallelism every rank must call it, with or without pairs.

        ``image_ids`` names the image behind each pair. Caption datasets (COCO,
        Flickr30k) give ~5 captions per image, so a batch may hold two pairs of the
        same image: text j is then a correct caption of image i too, and treating it
        as a negative would push apart embeddings that should be close. Such
        off-diagonal pairs are masked out of both softmaxes (logit −inf), so they are
        neither positives nor negatives; the diagonal stays the positive.
        """
        if image_emb.shape != text_emb.shape or image_emb.dim() != 2:
            raise ValueError(f"expected two (B, D) tensors, got {tuple(image_emb.shape)} and {tuple(text_emb.shape)}")
        pairs = image_emb.shape[0]
        all_images, start = distributed.all_gather_rows(image_emb, self.gather_with_grad)
        all_texts, _ = distributed.all_gather_rows(text_emb, self.gather_with_grad)
        if image_ids is not None:
            image_ids = [i for part in distributed.gather_objects(list(image_ids)) for i in part]
        if all_images.shape[0] < 2:
            return None
        rows = slice(start, start + pairs) if self.local_loss else slice(None)
        if self.local_loss and pairs == 0:
            return self.logit_scale * 0.0  # takes part in the gradient all-reduce with nothing
        mask = same_image_mask(image_ids, device=image_emb.device)[rows] if image_ids is not None else None
        targets = torch.arange(all_images.shape[0], device=image_emb.device)[rows]
        per_image = self.logits(all_images[rows], all_texts)
        per_text = self.logits(all_texts[rows], all_images)
        if mask is not None:
            per_image = per_image.masked_fill(mask, float("-inf"))
            per_text = per_text.masked_fill(mask, float("-inf"))
        return 0.5 * (F.cross_entropy(per_image, targets) + F.cross_entropy(per_text, targets))


def same_image_mask(image_ids: Sequence[Hashable], device: torch.device | str | None = None) -> torch.Tensor:
    """(B, B) bool, True where pairs i != j share an image: the pairs that are not negatives."""
    index: dict[Hashable, int] = {}
    ids = torch.tensor([index.setdefault(i, len(index)) for i in image_ids], device=device)
    mask = ids[:, None] == ids[None, :]
    mask.fill_diagonal_(False)
    return mask
