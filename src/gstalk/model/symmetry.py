"""The face's left/right symmetry: filling what one photo does not show (MGGTalk's symmetric prior).

A photo shows one side of the face better than the other, and nothing behind the nose or past the turned
cheek. MGGTalk mirrors its point cloud across the face's plane of symmetry and keeps, by a voxel filter,
only the mirrored points that fill a gap: those hidden along the view axis by the visible surface
(z-occlusion) and not already next to a visible point. Here the Gaussians are bound to the mesh, so
nothing is added; instead each head Gaussian gets a **visibility** in the photo (its facing toward the
camera, times whether it is the front-most point of its screen cell: the same z-occlusion rule on a grid
of cells), and the parameters the photo could not teach it (colour, opacity, size) are taken from the
Gaussian nearest its mirror image, in proportion to how much better that one was seen.

The plane of symmetry comes from the mesh: its normal is the mean direction of MediaPipe's paired points
(eye corners, mouth corners, cheeks, brows), and it passes through the midline's points.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

#: left/right vertex pairs of MediaPipe's face mesh (outer and inner eye corners, mouth corners, cheeks,
#: brows' ends, jaw corners)
PAIRS = ((33, 263), (133, 362), (61, 291), (234, 454), (70, 300), (107, 336), (172, 397), (130, 359))
#: midline vertices (forehead, between the brows, nose ridge and tip, lips' middles, chin)
MIDLINE = (10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 2, 164, 0, 13, 14, 17, 18, 200, 199, 175, 152)

#: screen cells of the z-occlusion rule, in pixels of the photo
CELL_PX = 4
#: a point deeper than the front-most point of its cell by more than this (metres) is hidden
DEPTH_TOLERANCE = 0.012


def symmetry_plane(vertices: np.ndarray) -> tuple[np.ndarray, float]:
    """(unit normal (3,), offset d) of the face's plane of symmetry n·x = d, from mesh ``vertices``
    (>=468, 3)."""
    v = np.asarray(vertices, np.float64)
    n = sum(v[b] - v[a] for a, b in PAIRS)
    n = n / np.linalg.norm(n)
    return n, float(np.mean(v[list(MIDLINE)] @ n))


def reflect(points: np.ndarray, plane: tuple[np.ndarray, float]) -> np.ndarray:
    """``points`` (N, 3) mirrored across ``plane``."""
    n, d = plane
    return points - 2.0 * ((points @ n) - d)[:, None] * n


def visibility(points: np.ndarray, normals: np.ndarray, world_to_cam: np.ndarray, intrinsics) -> np.ndarray:
    """(N,) in [0, 1]: how well a camera sees head-frame ``points`` whose surface faces along
    ``normals`` (N, 3; zero where unknown, counted as facing): the cosine toward the camera (0 at 15° and
    less, 1 from 50°), times 0 where a nearer point of its screen cell hides it (z-occlusion)."""
    w2c = np.asarray(world_to_cam, np.float64)
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    z = np.maximum(cam[:, 2], 1e-6)
    u, v = fx * cam[:, 0] / z + cx, fy * cam[:, 1] / z + cy
    toward = -cam / np.linalg.norm(cam, axis=1, keepdims=True)
    n_cam = normals @ w2c[:3, :3].T
    known = np.linalg.norm(n_cam, axis=1) > 0
    cos = np.where(known, np.einsum("ij,ij->i", n_cam, toward), 1.0)
    facing = np.clip((cos - np.sin(np.radians(15))) / (np.sin(np.radians(50)) - np.sin(np.radians(15))), 0, 1)
    cell = np.stack([np.floor(u / CELL_PX), np.floor(v / CELL_PX)], 1).astype(np.int64)
    _, inverse = np.unique(cell, axis=0, return_inverse=True)
    front = np.full(inverse.max() + 1, np.inf)
    np.minimum.at(front, inverse, z)
    return facing * (z <= front[inverse] + DEPTH_TOLERANCE)


@torch.no_grad()
def symmetric_fill(model, world_to_cam: np.ndarray, intrinsics) -> dict[str, float]:
    """Fill the head Gaussians the photo taken by ``world_to_cam`` and ``intrinsics`` did not show from
    their mirror images (see the module docstring): each Gaussian g with visibility w_g and mirror partner
    h (the Gaussian nearest g's mirrored position, itself seen with w_h) takes
    ``(1 − a)·θ_g + a·θ_h`` with ``a = max(w_h − w_g, 0)`` for its colour and opacity logits and its
    log-scales. Returns figures for the log: the share of Gaussians hidden (w < 0.5) and the mean weight
    moved."""
    head = model.head
    canonical = model.canonical_mesh.double().cpu().numpy()
    means = head.posed(model.pose(None))[0]
    points = means.double().cpu().numpy()
    plane = symmetry_plane(canonical)
    normals = _normals(model, points)
    seen = visibility(points, normals, world_to_cam, intrinsics)
    _, partner = cKDTree(points).query(reflect(points, plane))
    amount = torch.from_numpy(np.clip(seen[partner] - seen, 0.0, 1.0)).float()
    partner_t = torch.from_numpy(partner)
    for name in ("color_logits", "opacity_logits", "log_scales"):
        p = head.params[name]
        a = amount.to(p.device).reshape(-1, *([1] * (p.ndim - 1)))
        p.copy_((1 - a) * p + a * p[partner_t.to(p.device)])
    return {"hidden_fraction": float((seen < 0.5).mean()), "mean_fill": float(amount.mean())}


def _forward(v: np.ndarray) -> np.ndarray:
    """Unit vector from the face's mean toward the nose tip (vertex 1): out of the face."""
    d = v[1] - v.mean(0)
    return d / np.linalg.norm(d)


def _normals(model, points: np.ndarray) -> np.ndarray:
    """(N, 3) outward unit normals of the canonical mesh at ``points`` (the nearest vertex's), zero for
    points farther than 1.5 cm from the mesh (hair, ears: visibility by occlusion alone)."""
    v = model.canonical_mesh.double().cpu().numpy()
    t = model.triangles.long().cpu().numpy()
    face_n = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
    # outward, each triangle on its own: away from a centre well behind the face (the triangles' winding
    # is not relied on)
    centre = v.mean(0) - 0.1 * _forward(v)
    flip = np.einsum("ij,ij->i", face_n, v[t].mean(1) - centre) < 0
    face_n[flip] *= -1
    vert_n = np.zeros_like(v)
    for k in range(3):
        np.add.at(vert_n, t[:, k], face_n)
    vert_n /= np.maximum(np.linalg.norm(vert_n, axis=1, keepdims=True), 1e-12)
    dist, nearest = cKDTree(v).query(points)
    out = vert_n[nearest]
    out[dist > 0.015] = 0.0
    return out


__all__ = ["reflect", "symmetric_fill", "symmetry_plane", "visibility"]
