"""Contrastive image-text retrieval head (CLIP's symmetric InfoNCE)."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class RetrievalHead(nn.Module):
    """Symmetric InfoNCE over a batch of paired image and text embeddings.

    Holds only the learnable temperature: the embeddings come from the two towers.
    As in CLIP, the scale is learnt in log space and clamped at ``max_logit_scale``
    (log 100) so the logits cannot blow up and destabilise training.
    """

    def __init__(
        self,
        init_logit_scale: float = math.log(1 / 0.07),
        max_logit_scale: float = math.log(100),
    ) -> None:
        super().__init__()
        if init_logit_scale > max_logit_scale:
            raise ValueError(f"init_logit_scale {init_logit_scale} exceeds max_logit_scale {max_logit_scale}")
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        self.max_logit_scale = float(max_logit_scale)

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
    ) -> torch.Tensor:
        """Mean of the image→text and text→image cross-entropies; pair i is (image i, text i).

        ``image_ids`` names the image behind each pair. Caption datasets (COCO,
        Flickr30k) give ~5 captions per image, so a batch may hold two pairs of the
        same image: text j is then a correct caption of image i too, and treating it
        as a negative would push apart embeddings that should be close. Such
        off-diagonal pairs are masked out of both softmaxes (logit −inf), so they are
        neither positives nor negatives; the diagonal stays the positive.
        """
        if image_emb.shape != text_emb.shape or image_emb.dim() != 2:
            raise ValueError(f"expected two (B, D) tensors, got {tuple(image_emb.shape)} and {tuple(text_emb.shape)}")
        logits = self.logits(image_emb, text_emb)
        if image_ids is not None:
            logits = logits.masked_fill(same_image_mask(image_ids, device=logits.device), float("-inf"))
        targets = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))


def same_image_mask(image_ids: Sequence[Hashable], device: torch.device | str | None = None) -> torch.Tensor:
    """(B, B) bool, True where pairs i != j share an image: the pairs that are not negatives."""
    index: dict[Hashable, int] = {}
    ids = torch.tensor([index.setdefault(i, len(index)) for i in image_ids], device=device)
    mask = ids[:, None] == ids[None, :]
    mask.fill_diagonal_(False)
    return mask
