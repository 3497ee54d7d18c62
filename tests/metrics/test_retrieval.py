"""Recall@K with several captions per image, against hand-computed ranks."""

import numpy as np
import pytest
import torch

from vlmtl.metrics import recall_at_k

# 3 images x 5 texts; texts 0,1 describe image 0, texts 2,3 image 1, text 4 image 2.
SIM = np.array(
    [
        [0.9, 0.1, 0.5, 0.2, 0.3],
        [0.8, 0.7, 0.1, 0.6, 0.2],
        [0.1, 0.2, 0.3, 0.4, 0.05],
    ]
)
IDS = [0, 0, 1, 1, 2]
# i2t ranks (wrong texts scoring >= the best correct one):
#   image 0: best correct 0.9 -> rank 0; image 1: best correct 0.6 (text 3), wrong 0.8, 0.7 -> rank 2;
#   image 2: correct 0.05, all 4 wrong texts higher -> rank 4.
#   R@1 = R@2 = 1/3, R@3 = 2/3.
# t2i ranks (other images scoring >= the own image, per column):
#   text 0: 0; text 1: own 0.1 < 0.7, 0.2 -> 2; text 2: own 0.1 < 0.5, 0.3 -> 2; text 3: 0; text 4: own 0.05 -> 2.
#   R@1 = R@2 = 2/5, R@3 = 5/5.
EXPECTED = {
    "i2t_R@1": 100 / 3, "i2t_R@2": 100 / 3, "i2t_R@3": 200 / 3,
    "t2i_R@1": 40.0, "t2i_R@2": 40.0, "t2i_R@3": 100.0,
}


def test_recall_multi_caption_hand_computed():
    out = recall_at_k(SIM, IDS, ks=(1, 2, 3))
    assert list(out) == [*EXPECTED, "rsum"]
    for key, value in EXPECTED.items():
        assert out[key] == pytest.approx(value), key
    # rsum = 100/3 + 100/3 + 200/3 + 40 + 40 + 100 = 313.33...
    assert out["rsum"] == pytest.approx(400 / 3 + 180)


def test_recall_any_correct_caption_counts():
    # Image 0's first caption scores lowest, but its second caption is top-1: still a hit.
    sim = np.array([[0.0, 0.9, 0.5], [0.1, 0.2, 0.8]])
    out = recall_at_k(sim, [0, 0, 1], ks=(1,))
    assert out["i2t_R@1"] == 100.0
    # t2i: text 0 -> own image 0.0 < 0.1: miss; texts 1, 2 hit -> 2/3
    assert out["t2i_R@1"] == pytest.approx(200 / 3)


def test_recall_accepts_torch_and_default_ks():
    out_np = recall_at_k(SIM, IDS)
    out_t = recall_at_k(torch.tensor(SIM, dtype=torch.float32), torch.tensor(IDS))
    assert set(out_np) == {"i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "rsum"}
    assert out_np == pytest.approx(out_t)
    # with 5 texts and 3 images every item is inside top-5 / top-10
    assert out_np["i2t_R@5"] == 100.0 and out_np["t2i_R@10"] == 100.0


def test_recall_ties_count_against_the_model():
    # Constant similarity must not give perfect recall: the correct item loses every tie.
    out = recall_at_k(np.zeros((2, 2)), [0, 1], ks=(1, 2))
    assert out["i2t_R@1"] == 0.0 and out["t2i_R@1"] == 0.0
    assert out["i2t_R@2"] == 100.0 and out["t2i_R@2"] == 100.0


def test_recall_bad_inputs():
    with pytest.raises(ValueError, match="5 texts"):
        recall_at_k(SIM, [0, 0, 1, 1])
    with pytest.raises(ValueError, match="image 2 has no text"):
        recall_at_k(SIM, [0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match="outside"):
        recall_at_k(SIM, [0, 0, 1, 1, 3])
    with pytest.raises(ValueError, match="2-D"):
        recall_at_k(SIM[0], [0, 0, 0, 0, 0])
    with pytest.raises(ValueError):
        recall_at_k(SIM, IDS, ks=(0,))
