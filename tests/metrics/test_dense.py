"""Dense metrics (mIoU, saliency, normals, Delta_m) on tiny hand-computed examples."""

import ast
import math
from pathlib import Path

import pytest
import torch

import vlmtl.metrics as metrics_pkg
from vlmtl.metrics import (
    LOWER_IS_BETTER,
    PAPER_SINGLE_TASK,
    ConfusionMatrix,
    NormalsMeter,
    SaliencyMeter,
    delta_m,
)


def test_confusion_matrix_miou_with_ignore():
    cm = ConfusionMatrix(num_classes=4, ignore_index=255)
    target = torch.tensor([[[0, 0, 1], [1, 255, 2]]])
    pred = torch.tensor([[[0, 1, 1], [1, 2, 2]]])
    # valid (target, pred) pairs: (0,0) (0,1) (1,1) (1,1) (2,2); the ignored pixel predicted 2 is skipped.
    # class 0: tp 1, fn 1 -> 1/2; class 1: tp 2, fp 1 -> 2/3; class 2: tp 1 -> 1; class 3 absent -> NaN
    cm.update(pred[:, :1], target[:, :1])  # accumulate over two batches
    cm.update(pred[:, 1:], target[:, 1:])
    ious = cm.per_class_iou()
    assert ious[:3] == pytest.approx([50.0, 200 / 3, 100.0])
    assert math.isnan(ious[3])
    # official mean (MTLoRA/ASTMT meters: tp / max(tp + fp + fn, 1e-8) for every class): class 3 counts 0
    assert cm.miou() == pytest.approx((50 + 200 / 3 + 100 + 0) / 4)  # 54.17
    assert cm.miou_present() == pytest.approx((50 + 200 / 3 + 100) / 3)  # 72.22; 2 -> 50 if the ignored pixel counted


def test_confusion_matrix_errors():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError):
        cm.miou()  # nothing accumulated
    with pytest.raises(ValueError):
        cm.update(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError):
        cm.update(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 3))
    with pytest.raises(ValueError):
        cm.update(torch.full((2, 2), 5), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(TypeError):
        cm.update(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long))


def test_saliency_max_f_beta_max_f_and_iou():
    pred = torch.tensor([[[0.93, 0.57, 0.33], [0.12, 0.99, 0.02]],  # image 1
                         [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])      # image 2: all background
    target = torch.tensor([[[1, 0, 1], [0, 255, 0]],
                           [[0, 0, 0], [0, 0, 0]]])
    meter = SaliencyMeter()
    meter.update(pred, target)
    # Beta maxF (prob >= t, dataset counts, 2 salient pixels; the 0.99 pixel is ignored):
    #   t <= 0.10: P=2/4, R=1 -> 1.3*0.5/(0.15+1)=0.565; 0.15..0.30: P=2/3, R=1 -> 0.722;
    #   0.35..0.55: P=1/2, R=1/2 -> 0.5; 0.60..0.90: P=1, R=1/2 -> 1.3*0.5/(0.3+0.5) = 0.8125; 0.95: 0
    assert meter.beta_max_f() == pytest.approx(81.25)
    # maxF (official SaliencyMeterWithNoBeta: prob > t, per-image P and R with 1e-12, then averaged):
    #   image 1: t 0.2..0.3 -> P 2/3, R 1; 0.35..0.55 -> P 1/2, R 1/2; 0.6..0.9 -> P 1, R 1/2.
    #   image 2 (nothing salient, nothing predicted) -> P 0, R 0 at every t.
    #   mean P, R: (1/3, 1/2) -> F1 0.4; (1/4, 1/4) -> 0.25; (1/2, 1/4) -> 1/3. Best: 0.4
    assert meter.max_f() == pytest.approx(40.0)
    # IoU (prob > t), image 1: t 0.2..0.3 -> 2/3; 0.35..0.55 -> 1/3; 0.6..0.9 -> 1/2.
    # Image 2 (empty prediction and target) -> 1 at all t. Best mean: (2/3 + 1)/2
    assert meter.iou() == pytest.approx(100 * (2 / 3 + 1) / 2)


def test_saliency_errors():
    meter = SaliencyMeter()
    with pytest.raises(ValueError):
        meter.max_f()
    with pytest.raises(ValueError):
        meter.update(torch.full((1, 2, 2), 1.5), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError):
        meter.update(torch.zeros(1, 2, 2), torch.full((1, 2, 2), 2))


def test_normals_angles():
    meter = NormalsMeter()
    target = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]).t().reshape(1, 3, 1, 3)
    pred = torch.tensor([[0.0, 5.0, 0.0], [2.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]).t().reshape(1, 3, 1, 3)
    valid = torch.tensor([[[True, True, False]]])
    meter.update(pred, target, valid)
    # perpendicular -> 90, same direction (other scale) -> 0, opposite (180) masked out: mean 45
    assert meter.mean_angle() == pytest.approx(45.0)
    assert meter.rmse_angle() == pytest.approx(math.sqrt(90.0**2 / 2))
    meter.update(pred[..., 2:], target[..., 2:], torch.tensor([[[True]]]))
    assert meter.mean_angle() == pytest.approx((90 + 0 + 180) / 3)


def test_normals_errors():
    meter = NormalsMeter()
    with pytest.raises(ValueError):
        meter.mean_angle()
    with pytest.raises(TypeError):
        meter.update(torch.ones(1, 3, 2, 2), torch.ones(1, 3, 2, 2), torch.ones(1, 2, 2))
    with pytest.raises(ValueError):
        meter.update(torch.ones(1, 3, 2, 2), torch.ones(1, 3, 2, 2), torch.ones(1, 2, 3, dtype=torch.bool))


def test_delta_m_sign_convention():
    single = {"semseg": 50.0, "normals": 20.0}
    # semseg (60-50)/50 = +0.2; normals lower is better: -(18-20)/20 = +0.1 -> mean 0.15 -> 15%
    assert delta_m({"semseg": 60.0, "normals": 18.0}, single, {"normals"}) == pytest.approx(15.0)
    # a higher normals error is a loss: -(22-20)/20 = -10%
    assert delta_m({"normals": 22.0}, {"normals": 20.0}, LOWER_IS_BETTER) == pytest.approx(-10.0)
    assert delta_m(PAPER_SINGLE_TASK, PAPER_SINGLE_TASK, LOWER_IS_BETTER) == 0.0
    with pytest.raises(ValueError, match="normals"):
        delta_m({"semseg": 60.0}, single, {"normals"})


def test_paper_constants():
    assert PAPER_SINGLE_TASK == {"semseg": 67.21, "human_parts": 61.93, "saliency": 62.35, "normals": 17.97}
    assert LOWER_IS_BETTER == {"normals"}


def test_metrics_do_not_import_other_vlmtl_code():
    for path in Path(metrics_pkg.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.level <= 1, f"{path.name} imports from outside vlmtl.metrics"
                assert not (node.module or "").startswith("vlmtl"), path.name
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("vlmtl") for a in node.names), path.name
