"""Task heads: over a CLIP model's towers, retrieval (InfoNCE), VQA (answer classifier) and
captioning (transformer decoder over patch tokens); over a Swin's multi-scale features, the
dense decoders and losses. Plain modules over tensors: they know nothing of models or data."""

from .captioning import CaptionDecoder
from .dense import LOSS_WEIGHTS, DenseDecoder, MultiTaskDenseLoss
from .retrieval import RetrievalHead, same_image_mask
from .vqa import VQAHead

__all__ = [
    "RetrievalHead",
    "VQAHead",
    "CaptionDecoder",
    "same_image_mask",
    "LOSS_WEIGHTS",
    "DenseDecoder",
    "MultiTaskDenseLoss",
]
