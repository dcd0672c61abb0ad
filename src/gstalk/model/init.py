"""Initial Gaussians from a prepared dataset: the tracked canonical face shape and the region maps.

- Head set: points on the canonical face surface (a triangulation of the 478 landmarks), plus a share of
  random points in the head's box for what the mesh does not cover (ears, jaw line, hairline).
- Mouth-interior set: points behind the inner lip contour, 0.5–2 cm deep.
- Colours and regions: each point is projected into frames spread over the training split and takes the
  mean colour and the most frequent region label found there.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import Delaunay, cKDTree

from ..config import ModelConfig
from ..data.dataset import Dataset
from ..data.frames import expression_inputs
from ..face.landmarks import LIPS_INNER
from ..regions import Region
from .gaussians import GaussianSet, ModelRegion
from .talking_head import TalkingHead

_TO_MODEL = np.full(len(Region), ModelRegion.FACE, np.uint8)
_TO_MODEL[[Region.EYES]] = ModelRegion.EYES
_TO_MODEL[[Region.LIPS, Region.MOUTH_INTERIOR]] = ModelRegion.MOUTH


def model_regions(labels: np.ndarray) -> np.ndarray:
    """Map image :class:`Region` labels to the deformation network that moves a Gaussian there."""
    return _TO_MODEL[labels]


def _surface_samples(shape: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    tri = Delaunay(shape[:, :2])
    simplices = tri.simplices
    a, b, c = shape[simplices[:, 0]], shape[simplices[:, 1]], shape[simplices[:, 2]]
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    pick = rng.choice(len(simplices), size=n, p=area / area.sum())
    u, v = rng.random(n), rng.random(n)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    return a[pick] + u[:, None] * (b[pick] - a[pick]) + v[:, None] * (c[pick] - a[pick])


def _mouth_samples(shape: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Behind the inner lip contour, in a box that leaves room for the jaw to open downward."""
    lips = shape[LIPS_INNER]
    lo, hi = lips[:, :2].min(0), lips[:, :2].max(0)
    width = hi[0] - lo[0]
    lo = np.array([lo[0] + 0.1 * width, lo[1] - 0.1 * width])
    hi = np.array([hi[0] - 0.1 * width, hi[1] + 0.5 * width])
    xy = lo + rng.random((n, 2)) * (hi - lo)
    depth = lips[:, 2].mean() + rng.uniform(0.005, 0.02, n)
    return np.concatenate([xy, depth[:, None]], 1)


def _knn_scale(points: np.ndarray) -> np.ndarray:
    """Mean distance to the 3 nearest neighbours (3DGS), capped at twice the median so that sparse
    volume points do not start as huge blobs covering the face."""
    d, _ = cKDTree(points).query(points, k=4)
    scale = d[:, 1:].mean(1)
    return np.clip(scale, 1e-4, 2 * np.median(scale))


def _sample_colours_and_regions(ds: Dataset, points: np.ndarray, views: int = 8):
    ids = ds.train_ids[np.linspace(0, len(ds.train_ids) - 1, min(views, len(ds.train_ids))).astype(int)]
    fx, fy, cx, cy = ds.intrinsics
    colours = np.zeros((len(points), 3))
    votes = np.zeros((len(points), len(Region)), np.int32)
    for i in ids:
        w2c = ds.world_to_cam[i].astype(np.float64)
        cam = points @ w2c[:3, :3].T + w2c[:3, 3]
        u = np.clip(np.round(fx * cam[:, 0] / cam[:, 2] + cx - 0.5).astype(int), 0, ds.size - 1)
        v = np.clip(np.round(fy * cam[:, 1] / cam[:, 2] + cy - 0.5).astype(int), 0, ds.size - 1)
        colours += ds.image(i)[v, u] / 255.0
        votes[np.arange(len(points)), ds.regions(i)[v, u]] += 1
    return colours / len(ids), votes.argmax(1)


def init_talking_head(
    ds: Dataset,
    n_gaussians: int,
    mouth_fraction: float = 0.1,
    random_fraction: float = 0.2,
    config: ModelConfig | None = None,
    seed: int = 0,
) -> TalkingHead:
    """A TalkingHead whose Gaussians start on the subject's tracked face, coloured from its frames."""
    config = config or ModelConfig()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    shape = ds.tracks.canonical_shape.astype(np.float64)
    n_mouth = max(16, int(n_gaussians * mouth_fraction))
    n_random = int(n_gaussians * random_fraction)
    n_surface = max(16, n_gaussians - n_mouth - n_random)

    lo, hi = shape.min(0), shape.max(0)
    extent = hi - lo
    box_lo = lo - extent * np.array([0.12, 0.12, 0.05])
    box_hi = hi + extent * np.array([0.12, 0.12, 0.1])
    surface = _surface_samples(shape, n_surface, rng)
    volume = box_lo + rng.random((n_random, 3)) * (box_hi - box_lo)
    head_points = np.concatenate([surface, volume])
    colours, labels = _sample_colours_and_regions(ds, head_points)
    head = GaussianSet(
        torch.from_numpy(head_points),
        torch.from_numpy(colours),
        torch.from_numpy(_knn_scale(head_points)),
        torch.from_numpy(model_regions(labels)),
        config.embedding_dim,
        opacity=0.3,
    )
    mouth_points = _mouth_samples(shape, n_mouth, rng)
    mouth = GaussianSet(
        torch.from_numpy(mouth_points),
        torch.tensor([[0.35, 0.12, 0.12]]).expand(n_mouth, 3),
        torch.from_numpy(_knn_scale(mouth_points)),
        torch.full((n_mouth,), int(ModelRegion.MOUTH)),
        config.embedding_dim,
        opacity=0.5,
    )
    bounds = torch.tensor(np.stack([box_lo - 0.1 * extent, box_hi + 0.1 * extent]))
    audio = np.asarray(ds.audio_features[ds.train_ids], dtype=np.float32)
    expr = expression_inputs(ds)[ds.train_ids]
    model = TalkingHead(head, mouth, bounds, audio.shape[1], audio.shape[2], expr.shape[1], config)
    model.audio_encoder.set_statistics(
        torch.from_numpy(audio.mean((0, 1))), torch.from_numpy(audio.std((0, 1)))
    )
    model.expression_encoder.set_statistics(torch.from_numpy(expr.mean(0)), torch.from_numpy(expr.std(0)))
    return model
