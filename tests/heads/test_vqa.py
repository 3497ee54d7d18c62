from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlmtl.heads import VQAHead


def test_shapes_and_predict():
    head = VQAHead(embed_dim=16, num_answers=10)
    logits = head(torch.randn(5, 16), torch.randn(5, 16))
    assert logits.shape == (5, 10)
    pred = head.predict(logits)
    assert pred.shape == (5,) and pred.dtype == torch.long
    torch.testing.assert_close(pred, logits.argmax(-1))


def test_rejects_wrong_width():
    head = VQAHead(embed_dim=16, num_answers=10)
    with pytest.raises(ValueError):
        head(torch.randn(5, 8), torch.randn(5, 8))


def test_loss_conventions():
    head = VQAHead(embed_dim=4, num_answers=6)
    logits, targets = torch.randn(3, 6), torch.rand(3, 6)
    mean = F.binary_cross_entropy_with_logits(logits, targets)
    summed_per_sample = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / 3
    assert head.loss(logits, targets).item() == pytest.approx(summed_per_sample.item(), rel=1e-5)
    assert head.loss(logits, targets, reduction="mean").item() == pytest.approx(mean.item(), rel=1e-5)
    with pytest.raises(ValueError):
        head.loss(logits, targets, reduction="sum")


def test_loss_decreases_on_tiny_problem():
    # Answer = which of 4 prototype images is shown, asked with a fixed question.
    torch.manual_seed(0)
    protos, question = torch.randn(4, 8), torch.randn(1, 8)
    idx = torch.arange(4).repeat(4)
    img = protos[idx] + 0.05 * torch.randn(16, 8)
    txt = question.expand(16, 8)
    targets = F.one_hot(idx, 4).float()
    head = VQAHead(embed_dim=8, num_answers=4, dropout=0.0)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    first = head.loss(head(img, txt), targets).item()
    for _ in range(50):
        opt.zero_grad()
        loss = head.loss(head(img, txt), targets)
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first
    assert (head.predict(head(img, txt)) == idx).all()
