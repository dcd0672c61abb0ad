"""The tracked face as a mesh: MediaPipe's fixed triangulation, the lower face that speech moves, the jaw's
vertices, and the fit of a head-frame mesh to a frame's 2D landmarks.

MediaPipe publishes its face mesh as a list of edges (``FACEMESH_TESSELATION``, 468 vertices; the 10 iris
points are not part of it). Its faces are the edge graph's triangles: 852 of them, as Euler's formula
predicts for a disk with three holes (the eyes and the mouth), plus two spurious 3-cycles whose every edge
is already shared by two faces, which are dropped.
"""

from __future__ import annotations

import itertools
from collections import Counter
from functools import lru_cache

import numpy as np

from .landmarks import LIPS_OUTER, NOSE_TIP

#: vertices of the triangulated face mesh (the first 468 landmarks)
N_MESH = 468

#: the jaw, rigid to a good approximation: the lower lip, the chin and the jaw line below the mouth corners
JAW = sorted({
    17, 84, 181, 91, 146, 314, 405, 321, 375,  # lower outer lip
    14, 87, 178, 88, 95, 317, 402, 318, 324,  # lower inner lip
    152, 148, 176, 149, 150, 136, 377, 400, 378, 379, 365,  # chin and jaw line
    199, 175, 171, 396, 200, 208, 428, 32, 262, 140, 369,  # chin front
})  # fmt: skip


@lru_cache(maxsize=1)
def _tessellation_triangles() -> np.ndarray:
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    edges = {tuple(sorted(e)) for e in FACEMESH_TESSELATION}
    neighbours: dict[int, set[int]] = {}
    for a, b in edges:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    cycles = {tuple(sorted((a, b, c))) for a, b in edges for c in neighbours[a] & neighbours[b]}
    use = Counter(e for t in cycles for e in itertools.combinations(t, 2))
    faces = [t for t in sorted(cycles) if not all(use[e] > 2 for e in itertools.combinations(t, 2))]
    return np.asarray(faces, np.int32)


def face_triangles(canonical: np.ndarray) -> np.ndarray:
    """(852, 3) int32 triangles of the face mesh, wound so their normals point out of the face (toward
    the camera of a frontal view, −z in the head frame), given the (>=468, 3) canonical shape."""
    tris = _tessellation_triangles().copy()
    v = canonical[:N_MESH].astype(np.float64)
    normal = np.cross(v[tris[:, 1]] - v[tris[:, 0]], v[tris[:, 2]] - v[tris[:, 0]])
    # out of the head: away from a centre some 8 cm behind the face's middle
    centre = v.mean(0) + np.array([0.0, 0.0, 0.08])
    flip = (normal * (v[tris].mean(1) - centre)).sum(1) < 0
    tris[flip] = tris[flip][:, [0, 2, 1]]
    return tris


def lower_face_weights(canonical: np.ndarray) -> np.ndarray:
    """(468,) in [0, 1]: how much a vertex belongs to the speech-driven lower face. 0 above the nose tip,
    1 from the upper lip down, a smooth ramp between (head frame, y down)."""
    v = canonical[:N_MESH]
    top = float(v[NOSE_TIP, 1])
    lip = float(v[LIPS_OUTER, 1].min())
    ramp = np.clip((v[:, 1] - top) / max(lip - top, 1e-6), 0.0, 1.0)
    return (ramp * ramp * (3 - 2 * ramp)).astype(np.float32)


def fit_to_landmarks(
    mesh: np.ndarray, world_to_cam: np.ndarray, intrinsics: np.ndarray, landmarks2d: np.ndarray
) -> np.ndarray:
    """The head-frame ``mesh`` (T, N, 3) moved, at each vertex's own depth, so that it projects exactly onto
    the frame's 2D landmarks (T, N, 2) under ``world_to_cam`` (T, 4, 4) and ``intrinsics`` (fx, fy, cx, cy).

    The pose-normalised mesh already projects within about a pixel of the landmarks; this removes that last
    pixel, so Gaussians that follow the mesh land where the frame shows the face."""
    rot, trans = world_to_cam[:, :3, :3].astype(np.float64), world_to_cam[:, :3, 3].astype(np.float64)
    cam = np.einsum("tij,tnj->tni", rot, mesh.astype(np.float64)) + trans[:, None]
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    z = cam[..., 2]
    cam = np.stack([(landmarks2d[..., 0] - cx) * z / fx, (landmarks2d[..., 1] - cy) * z / fy, z], -1)
    back = np.einsum("tji,tnj->tni", rot, cam - trans[:, None])
    return back.astype(np.float32)


def mouth_gap(mesh: np.ndarray) -> np.ndarray:
    """(...,) the inner-lip gap at the middle of the mouth, in the mesh's units."""
    return np.linalg.norm(mesh[..., 13, :] - mesh[..., 14, :], axis=-1)


def sample_surface(vertices: np.ndarray, triangles: np.ndarray, n: int, rng: np.random.Generator):
    """``n`` points spread uniformly over the mesh's area, as (triangle, u, v): the point is
    a + u·(b − a) + v·(c − a) on that triangle (a, b, c), so it can be placed again on a moved mesh."""
    a, b, c = (vertices[triangles[:, k]] for k in range(3))
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    pick = rng.choice(len(triangles), size=n, p=area / area.sum())
    u, v = rng.random(n), rng.random(n)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    return pick, u, v
