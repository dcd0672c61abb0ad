"""Gaussians that follow the tracked face: bound to a mesh triangle, to the jaw, or to the skull.

A Gaussian's mean, rotation and scale are stored in the frame it is bound to (GaussianAvatars binds to
FLAME triangles the same way):

- **triangle**: the frame of one face-mesh triangle: origin at its centroid, axes along its first edge,
  the in-plane perpendicular and the normal, and a scale equal to the triangle's mean edge length
  relative to the canonical face. The face's skin, lips, brows and lids follow the mesh.
- **jaw**: the rigid motion of the jaw (chin, jaw line, lower lip; ``face.mesh.JAW``) from the canonical
  face: the lower teeth and the tongue, and what lies under the chin.
- **skull**: the head frame itself: the upper teeth, the mouth's dark back wall, ears, hairline.

A :class:`FacePose` holds every frame of one mesh; :func:`place` maps stored (local) parameters to the
head frame. In the canonical face every frame is the identity-scaled one the Gaussians were initialised
in, so local parameters start as the head-frame ones moved into each frame.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch
from torch import Tensor

from ..face.mesh import JAW
from ..splat.projection import quat_multiply


class Binding(enum.IntEnum):
    SKULL = 0
    JAW = 1
    TRIANGLE = 2


def triangle_frames(vertices: Tensor, triangles: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Rotations (F, 3, 3) whose columns are a triangle's first edge, in-plane normal and face normal;
    origins (F, 3) at the centroids; sizes (F,) the mean edge lengths. ``vertices`` (V, 3)."""
    v0, v1, v2 = (vertices[triangles[:, k]] for k in range(3))
    e0 = torch.nn.functional.normalize(v1 - v0, dim=-1)
    normal = torch.nn.functional.normalize(torch.linalg.cross(v1 - v0, v2 - v0), dim=-1)
    e1 = torch.linalg.cross(normal, e0)
    size = ((v1 - v0).norm(dim=-1) + (v2 - v1).norm(dim=-1) + (v0 - v2).norm(dim=-1)) / 3
    return torch.stack([e0, e1, normal], -1), (v0 + v1 + v2) / 3, size


def rigid_fit(src: Tensor, dst: Tensor) -> tuple[Tensor, Tensor]:
    """Rotation (3, 3) and translation (3,) minimising ||R src + t - dst|| for (P, 3) points (Kabsch)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    u, _, vt = torch.linalg.svd((src - mu_s).T @ (dst - mu_d))
    d = torch.sign(torch.linalg.det(vt.T @ u.T))
    fix = torch.ones(3, dtype=src.dtype, device=src.device)
    fix[2] = d
    rot = vt.T @ torch.diag(fix) @ u.T
    return rot, mu_d - rot @ mu_s


def rotmat_to_quat(rot: Tensor) -> Tensor:
    """(..., 3, 3) rotation matrices to (..., 4) unit quaternions w, x, y, z (Shepperd's method)."""
    m = rot
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    candidates = torch.stack(
        [
            torch.stack([1 + trace, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                         m[..., 1, 0] - m[..., 0, 1]], -1),
            torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                         m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
            torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0],
                         1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], m[..., 1, 2] + m[..., 2, 1]], -1),
            torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0],
                         m[..., 1, 2] + m[..., 2, 1], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1),
        ],
        -2,
    )  # fmt: skip
    pivots = torch.stack([trace, m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]], -1).argmax(-1)
    q = torch.gather(candidates, -2, pivots[..., None, None].expand(*pivots.shape, 1, 4))[..., 0, :]
    q = torch.nn.functional.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


@dataclass
class FacePose:
    """Every binding frame of one mesh: index 0 the skull, 1 the jaw, 2 + f triangle f."""

    rot: Tensor  # (F + 2, 3, 3)
    origin: Tensor  # (F + 2, 3)
    scale: Tensor  # (F + 2,)
    quat: Tensor  # (F + 2, 4)


def face_pose(mesh: Tensor, canonical: Tensor, triangles: Tensor, canonical_sizes: Tensor) -> FacePose:
    """The frames of ``mesh`` (V, 3): its triangles, its jaw's motion from ``canonical`` (V, 3), the skull."""
    tri_rot, tri_origin, tri_size = triangle_frames(mesh, triangles)
    jaw_rot, jaw_t = rigid_fit(canonical[JAW], mesh[JAW])
    eye = torch.eye(3, dtype=mesh.dtype, device=mesh.device)
    rot = torch.cat([eye[None], jaw_rot[None], tri_rot])
    origin = torch.cat([torch.zeros_like(jaw_t)[None], jaw_t[None], tri_origin])
    ones = torch.ones(2, dtype=mesh.dtype, device=mesh.device)
    scale = torch.cat([ones, tri_size / canonical_sizes])
    return FacePose(rot, origin, scale, rotmat_to_quat(rot))


def frame_index(binding: Tensor, parent: Tensor) -> Tensor:
    """Each Gaussian's row in a :class:`FacePose`."""
    return torch.where(binding == Binding.TRIANGLE, parent.long() + 2, binding.long())


def place(means: Tensor, quats: Tensor, log_scales: Tensor, index: Tensor, pose: FacePose):
    """Stored (local) parameters → head-frame means (N, 3), quaternions (N, 4) and log-scales (N, 3)."""
    rot, scale = pose.rot[index], pose.scale[index]
    # R x as three broadcast products: much faster on a CPU than a batch of 3×3 matrix products
    turned = rot[:, :, 0] * means[:, :1] + rot[:, :, 1] * means[:, 1:2] + rot[:, :, 2] * means[:, 2:]
    world = scale[:, None] * turned + pose.origin[index]
    return world, quat_multiply(pose.quat[index], quats), log_scales + torch.log(scale)[:, None]


def localise(means: Tensor, index: Tensor, pose: FacePose) -> Tensor:
    """Head-frame means (N, 3) → local means in their frames (the inverse of :func:`place`'s means)."""
    rot, scale = pose.rot[index], pose.scale[index]
    return (rot.transpose(-1, -2) @ (means - pose.origin[index])[..., None])[..., 0] / scale[:, None]
