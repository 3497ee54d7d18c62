"""Image-text retrieval Recall@K (COCO / Flickr30k protocol), with several captions per image.

Image->text counts a hit when ANY of the image's captions is within the top K texts;
text->image counts a hit when the caption's own image is within the top K images.
Ties are broken against the correct item, so a constant similarity cannot score 100%.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

_ROW_BLOCK = 1024  # rows compared at a time, to bound memory on 5k x 25k similarity matrices


def _to_numpy(x: Any) -> np.ndarray:
    """Accept numpy arrays, lists or torch tensors (on any device) without importing torch."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.double()  # also makes bfloat16 convertible
        x = x.numpy()
    return np.asarray(x)


def recall_at_k(
    similarity: Any,
    image_ids_of_texts: Sequence[int] | Any,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@K in percent for both directions, plus ``rsum`` (their sum).

    ``similarity`` is (num_images, num_texts); ``image_ids_of_texts[j]`` is the row of the
    image described by text j. Keys: ``i2t_R@K`` for each K, then ``t2i_R@K``, then ``rsum``.
    """
    sim = _to_numpy(similarity).astype(np.float64, copy=False)
    if sim.ndim != 2:
        raise ValueError(f"similarity must be 2-D (num_images, num_texts), got shape {sim.shape}")
    num_images, num_texts = sim.shape
    if num_images == 0 or num_texts == 0:
        raise ValueError(f"similarity must be non-empty, got shape {sim.shape}")
    if np.isnan(sim).any():
        raise ValueError("similarity contains NaN")
    ids = _to_numpy(image_ids_of_texts)
    if ids.ndim != 1 or len(ids) != num_texts:
        raise ValueError(
            f"image_ids_of_texts has {len(ids) if ids.ndim == 1 else ids.shape} entries "
            f"but similarity has {num_texts} texts (columns)"
        )
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"image_ids_of_texts must be integers, got dtype {ids.dtype}")
    ids = ids.astype(np.int64)
    bad = np.flatnonzero((ids < 0) | (ids >= num_images))
    if bad.size:
        j = int(bad[0])
        raise ValueError(f"text {j} points at image {int(ids[j])}, outside [0, {num_images})")
    texts_per_image = np.bincount(ids, minlength=num_images)
    lonely = np.flatnonzero(texts_per_image == 0)
    if lonely.size:
        raise ValueError(f"image {int(lonely[0])} has no text ({lonely.size} images without any)")
    ks = [int(k) for k in ks]
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {ks}")

    cols = np.arange(num_texts)
    correct = sim[ids, cols]  # score of each text with its own image
    best = np.full(num_images, -np.inf)
    np.maximum.at(best, ids, correct)  # best-scoring correct text per image
    ties_at_best = np.zeros(num_images, dtype=np.int64)
    np.add.at(ties_at_best, ids, correct == best[ids])

    # i2t rank = number of WRONG texts scoring >= the image's best correct text.
    i2t_rank = np.empty(num_images, dtype=np.int64)
    for start in range(0, num_images, _ROW_BLOCK):
        block = sim[start:start + _ROW_BLOCK]
        i2t_rank[start:start + _ROW_BLOCK] = (block >= best[start:start + _ROW_BLOCK, None]).sum(axis=1)
    i2t_rank -= ties_at_best
    # t2i rank = number of OTHER images scoring >= the text's own image.
    t2i_rank = np.zeros(num_texts, dtype=np.int64)
    for start in range(0, num_images, _ROW_BLOCK):
        t2i_rank += (sim[start:start + _ROW_BLOCK] >= correct[None, :]).sum(axis=0)
    t2i_rank -= 1

    result: dict[str, float] = {}
    for k in ks:
        result[f"i2t_R@{k}"] = 100.0 * float(np.mean(i2t_rank < k))
    for k in ks:
        result[f"t2i_R@{k}"] = 100.0 * float(np.mean(t2i_rank < k))
    result["rsum"] = float(sum(result.values()))
    return result
