"""VQA answer classifier over pooled image and question embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class VQAHead(nn.Module):
    """Classify over a fixed answer vocabulary from the two towers' embeddings.

    The fusion is ``[img, txt, img * txt]``: the element-wise product gives the MLP
    the image-question interactions that a concatenation alone would have to learn.
    Then Linear → GELU → LayerNorm → Dropout → Linear(num_answers).
    """

    def __init__(self, embed_dim: int, num_answers: int, hidden_dim: int | None = None, dropout: float = 0.1) -> None:
        super().__init__()
        hidden_dim = hidden_dim or 2 * embed_dim
        self.embed_dim = embed_dim
        self.num_answers = num_answers
        self.mlp = nn.Sequential(
            nn.Linear(3 * embed_dim, hidden_dim),
            nn.GELU(),
            nn.LayerNorm(hidden_dim),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, num_answers),
        )

    def forward(self, img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
        """(B, D), (B, D) → answer logits (B, num_answers)."""
        if img.shape != txt.shape or img.shape[-1] != self.embed_dim:
            raise ValueError(f"expected two (B, {self.embed_dim}) tensors, got {tuple(img.shape)}, {tuple(txt.shape)}")
        return self.mlp(torch.cat([img, txt, img * txt], dim=-1))

    def loss(self, logits: torch.Tensor, soft_targets: torch.Tensor, reduction: str = "vqa") -> torch.Tensor:
        """Binary cross-entropy against VQAv2 soft scores (min(#humans/3, 1) per answer).

        ``reduction="vqa"`` (default): element-wise mean multiplied by num_answers,
        i.e. summed over answers and averaged over the batch. This is the
        bottom-up-attention VQAv2 convention; it keeps the gradient per answer
        independent of the vocabulary size (a plain mean would shrink it ~3000x).
        ``reduction="mean"``: the plain element-wise mean.
        """
        loss = F.binary_cross_entropy_with_logits(logits.float(), soft_targets.float(), reduction="mean")
        if reduction == "vqa":
            return loss * logits.shape[-1]
        if reduction == "mean":
            return loss
        raise ValueError(f"reduction must be 'vqa' or 'mean', got {reduction!r}")

    @staticmethod
    def predict(logits: torch.Tensor) -> torch.Tensor:
        """Index of the highest-scoring answer, (B,) long."""
        return logits.argmax(dim=-1)
