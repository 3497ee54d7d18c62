"""Bilinear resizing as two small matrix products.

Bilinear interpolation (``align_corners=False``) is separable: resizing an (h, w) map to
(H, W) is ``M_h · x · M_wᵀ`` with ``M_h`` (H × h) and ``M_w`` (W × w) the 1-D linear-interpolation
weights, two non-zeros per row. The dense decoders upsample their predictions eightfold to the
input size (56² to 448² on Swin-T at 448), where torch's CPU kernel spends several nanoseconds per
output element in forward and more in backward (a scatter); the two products run at matmul speed
in both directions and keep a channels-last input channels-last. ``bilinear_resize`` gives
``F.interpolate(x, size, mode="bilinear", align_corners=False)`` up to float rounding (tested),
its weights taken from torch's own 1-D interpolation of the identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def interpolation_matrix(n_in: int, n_out: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(n_out, n_in): row i holds the weights of ``F.interpolate(mode="linear", align_corners=False)``
    for output i, read off by interpolating the identity (so they are torch's, edges included)."""
    eye = torch.eye(n_in, dtype=dtype, device=device).unsqueeze(0)  # channel j: the j-th unit vector
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[0].t()


def bilinear_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)`` for a 4-D floating ``x``
    (NCHW, or NCHW-shaped with channels-last strides, which the result keeps)."""
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"bilinear_resize takes a 4-D floating tensor, got {tuple(x.shape)} {x.dtype}")
    (h, w), (out_h, out_w) = x.shape[-2:], (int(size[0]), int(size[1]))
    if (h, w) == (out_h, out_w):
        return x
    rows = interpolation_matrix(h, out_h, x.dtype, x.device)
    cols = interpolation_matrix(w, out_w, x.dtype, x.device)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        b, c = x.shape[:2]
        nhwc = x.permute(0, 2, 3, 1)  # contiguous (B, h, w, C)
        wide = torch.matmul(cols, nhwc.reshape(b * h, w, c))  # (B·h, W, C)
        out = torch.matmul(rows, wide.view(b, h, out_w * c))  # (B, H, W·C)
        return out.view(b, out_h, out_w, c).permute(0, 3, 1, 2)
    return torch.matmul(rows, torch.matmul(x, cols.t()))
