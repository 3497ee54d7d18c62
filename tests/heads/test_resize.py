"""vlmtl.heads.resize: bilinear resizing as two matrix products equals F.interpolate (bilinear,
align_corners=False) in values and input gradients, keeps channels-last inputs channels-last,
and names bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlmtl.heads.resize import bilinear_resize, interpolation_matrix


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "shape, size",
    [((2, 3, 7, 7), (56, 56)), ((1, 4, 5, 9), (13, 11)), ((2, 2, 9, 6), (4, 3)), ((1, 1, 1, 1), (3, 5))],
)
def test_equals_torch_bilinear_in_values_and_gradients(shape, size, channels_last):
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(shape[0], shape[1], *size, dtype=torch.float64)
    results = []
    for fn in (bilinear_resize, lambda t, s: F.interpolate(t, size=s, mode="bilinear", align_corners=False)):
        xi = x.detach().requires_grad_(True)
        out = fn(xi, size)
        (out * weight).sum().backward()
        results.append((out.detach(), xi.grad))
    (out, grad), (ref, ref_grad) = results
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(grad, ref_grad)
    if channels_last and shape[1] > 1:
        assert out.is_contiguous(memory_format=torch.channels_last)


def test_interpolation_rows_sum_to_one_with_two_weights():
    m = interpolation_matrix(56, 448, torch.float64, torch.device("cpu"))
    assert m.shape == (448, 56)
    torch.testing.assert_close(m.sum(1), torch.ones(448, dtype=torch.float64))
    assert int((m != 0).sum(1).max()) <= 2


def test_same_size_is_the_input_and_bad_input_is_named():
    x = torch.randn(1, 2, 4, 4)
    assert bilinear_resize(x, (4, 4)) is x
    with pytest.raises(ValueError, match="4-D floating"):
        bilinear_resize(torch.randn(2, 4, 4), (8, 8))
    with pytest.raises(ValueError, match="4-D floating"):
        bilinear_resize(torch.ones(1, 1, 2, 2, dtype=torch.long), (4, 4))
