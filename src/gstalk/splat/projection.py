"""EWA projection of 3D Gaussians to screen-space ellipses: pure functions of tensors.

Follows the reference 3DGS rasterizer (and gsplat's ``classic`` mode): the Jacobian of the perspective
projection evaluated at the Gaussian's centre, with the centre's direction clamped to 1.3× the field of
view, a 0.3 px² low-pass added to the 2D covariance, and an opacity-aware bounding box that contains
exactly the pixels where ``alpha >= 1/255``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

ALPHA_MIN = 1.0 / 255.0
LOW_PASS = 0.3
NEAR_PLANE = 0.01
FAR_PLANE = 1e10


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """(..., 4) quaternions ``w, x, y, z`` (any norm) to (..., 3, 3) rotation matrices."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    rows = [
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ]
    return torch.stack(rows, -2)


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product of (..., 4) quaternions w, x, y, z."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        -1,
    )


def covariance_3d(quats: Tensor, scales: Tensor) -> Tensor:
    """(N, 3, 3) covariances ``R S Sᵀ Rᵀ`` from quaternions and (linear, not log) scales."""
    m = quat_to_rotmat(quats) * scales[..., None, :]
    return m @ m.transpose(-1, -2)


@dataclass
class Projected:
    """Per camera and Gaussian, shapes (C, N, ...)."""

    means2d: Tensor  # (C, N, 2) pixels
    conics: Tensor  # (C, N, 3) inverse 2D covariance: a, b, c of [[a, b], [b, c]]
    depths: Tensor  # (C, N) camera-space z
    radii: Tensor  # (C, N, 2) int32 half extent of the bounding box in x and y; 0 when culled

    @property
    def visible(self) -> Tensor:
        return (self.radii > 0).all(-1)


def project_gaussians(
    means: Tensor,
    covars: Tensor,
    opacities: Tensor,
    world_to_cam: Tensor,
    intrinsics: Tensor,
    width: int,
    height: int,
    near_plane: float = NEAR_PLANE,
    far_plane: float = FAR_PLANE,
    low_pass: float = LOW_PASS,
) -> Projected:
    """Project N Gaussians into C cameras. Differentiable in every floating-point input."""
    rot, trans = world_to_cam[:, :3, :3], world_to_cam[:, :3, 3]
    p = torch.einsum("cij,nj->cni", rot, means) + trans[:, None, :]
    x, y, z = p.unbind(-1)
    fx, fy, cx, cy = (v[:, None] for v in intrinsics.unbind(-1))

    in_depth = (z > near_plane) & (z < far_plane)
    zs = torch.where(in_depth, z, torch.ones_like(z))  # keeps culled entries finite for autograd

    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_x, cx / fx + 0.3 * tan_x
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_y, cy / fy + 0.3 * tan_y
    tx = zs * torch.maximum(torch.minimum(x / zs, lim_x_pos), -lim_x_neg)
    ty = zs * torch.maximum(torch.minimum(y / zs, lim_y_pos), -lim_y_neg)

    zero = torch.zeros_like(zs)
    jac = torch.stack(
        [
            torch.stack([fx / zs, zero, -fx * tx / (zs * zs)], -1),
            torch.stack([zero, fy / zs, -fy * ty / (zs * zs)], -1),
        ],
        -2,
    )  # (C, N, 2, 3)
    cov_cam = rot[:, None] @ covars[None] @ rot[:, None].transpose(-1, -2)
    cov2d = jac @ cov_cam @ jac.transpose(-1, -2)
    a = cov2d[..., 0, 0] + low_pass
    b = cov2d[..., 0, 1]
    c = cov2d[..., 1, 1] + low_pass
    det = a * c - b * b
    ok = in_depth & (det > 0)
    det_safe = torch.where(ok, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], -1)
    means2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], -1)

    with torch.no_grad():
        op = opacities.detach().expand_as(z)
        ok = ok & (op >= ALPHA_MIN)
        extend = torch.sqrt(2.0 * torch.log(op.clamp(min=ALPHA_MIN) / ALPHA_MIN)).clamp(max=3.33)
        rx = torch.ceil(extend * torch.sqrt(a.detach().clamp(min=0)))
        ry = torch.ceil(extend * torch.sqrt(c.detach().clamp(min=0)))
        mx, my = means2d.detach().unbind(-1)
        on_screen = (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        ok = ok & on_screen & torch.isfinite(rx) & torch.isfinite(ry) & ((rx > 0) | (ry > 0))
        radii = torch.stack([rx, ry], -1).where(ok[..., None], torch.zeros_like(means2d.detach()))
        radii = radii.clamp(max=1e6).to(torch.int32)
    return Projected(means2d=means2d, conics=conics, depths=z, radii=radii)
