from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vlmtl.heads import RetrievalHead


def _head(logit_scale: float) -> RetrievalHead:
    return RetrievalHead(init_logit_scale=logit_scale, max_logit_scale=max(logit_scale, math.log(100)))


def test_aligned_embeddings_give_near_zero_loss():
    torch.manual_seed(0)
    emb = torch.randn(8, 32)
    loss = _head(math.log(100))(emb, 3.0 * emb)  # same directions, other norm
    assert loss.item() < 1e-3


def test_shuffled_embeddings_give_large_loss():
    emb = torch.eye(8, 32)
    head = _head(math.log(100))
    shuffled = emb[torch.roll(torch.arange(8), 1)]
    assert head(emb, shuffled).item() > 50.0  # each positive is ~100 logits behind a negative


def test_hand_computed_2x2():
    img = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    txt = torch.tensor([[3.0, 4.0], [0.0, -1.0]])  # normalised: (.6, .8), (0, -1)
    scale = 2.0
    head = RetrievalHead(init_logit_scale=math.log(scale))
    # cosine matrix [[.6, 0], [.8, -1]] → logits [[1.2, 0], [1.6, -2]]
    l00, l01, l10, l11 = 1.2, 0.0, 1.6, -2.0
    i2t = (-(l00 - math.log(math.exp(l00) + math.exp(l01))) - (l11 - math.log(math.exp(l10) + math.exp(l11)))) / 2
    t2i = (-(l00 - math.log(math.exp(l00) + math.exp(l10))) - (l11 - math.log(math.exp(l01) + math.exp(l11)))) / 2
    assert head(img, txt).item() == pytest.approx((i2t + t2i) / 2, abs=1e-5)
    torch.testing.assert_close(head.similarity(img, txt), torch.tensor([[0.6, 0.0], [0.8, -1.0]]))


def test_duplicate_image_ids_mask_exactly_the_shared_pairs():
    torch.manual_seed(0)
    img, txt = torch.randn(3, 4), torch.randn(3, 4)
    head = RetrievalHead(init_logit_scale=math.log(5.0))
    logits = (5.0 * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).t()).tolist()
    # pairs 0 and 1 show image "a": (0, 1) and (1, 0) leave both softmaxes.
    allowed = [[0, 2], [1, 2], [0, 1, 2]]

    def ce(row: list[float], target: int, cols: list[int]) -> float:
        return -row[target] + math.log(sum(math.exp(row[c]) for c in cols))

    cols_t = [list(r) for r in zip(*logits)]
    i2t = sum(ce(logits[i], i, allowed[i]) for i in range(3)) / 3
    t2i = sum(ce(cols_t[j], j, allowed[j]) for j in range(3)) / 3
    expected = (i2t + t2i) / 2

    masked = head(img, txt, image_ids=["a", "a", "b"])
    assert masked.item() == pytest.approx(expected, abs=1e-5)
    assert masked.item() != pytest.approx(head(img, txt).item(), abs=1e-3)
    # distinct ids change nothing
    assert head(img, txt, image_ids=["a", "b", "c"]).item() == pytest.approx(head(img, txt).item(), abs=1e-6)


def test_logit_scale_is_clamped_in_forward():
    head = RetrievalHead(init_logit_scale=math.log(1 / 0.07), max_logit_scale=math.log(100))
    assert head.scale().item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        head.logit_scale.fill_(10.0)  # e^10 ≫ 100
    assert head.scale().item() == pytest.approx(100.0, rel=1e-5)
    img, txt = torch.eye(2), torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    expected = -(-100.0 - math.log(math.exp(-100.0) + 1.0))  # ≈ 100: scale capped at 100
    assert head(img, txt).item() == pytest.approx(expected, rel=1e-5)


def test_gradient_reaches_embeddings_and_scale():
    img = torch.randn(4, 8, requires_grad=True)
    txt = torch.randn(4, 8, requires_grad=True)
    head = RetrievalHead()
    head(img, txt).backward()
    assert img.grad.abs().sum() > 0 and txt.grad.abs().sum() > 0 and head.logit_scale.grad is not None
