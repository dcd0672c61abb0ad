"""Initial Gaussians from a prepared dataset: the tracked face mesh, its motion, and the region maps.

- Head set: points on the canonical face's triangles, bound to them; plus a share of random points in the
  head's box for what the mesh does not cover (ears, hairline, under the jaw), bound to the nearest
  triangle when within a centimetre of it, to the jaw when under the chin, else to the skull.
- Mouth interior: upper teeth behind the upper lip (with the skull), lower teeth behind the lower lip and
  the tongue (with the jaw), and a dark back wall (with the skull), laid out from the inner lip contour.
- Colours and regions: each head point is posed by the tracked mesh of frames spread over the training
  split, projected, and takes the mean colour and the most frequent region label found there.
- The lower face's motion basis (``speech.motion.LowerFaceBasis``) from the training frames' meshes.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from ..config import ModelConfig, resolve_model
from ..data.dataset import Dataset
from ..data.frames import expression_inputs
from ..errors import GstalkError
from ..face.landmarks import CHIN, LIPS_INNER
from ..face.mesh import N_MESH, fit_to_landmarks, lower_face_weights, sample_surface
from ..regions import Region
from ..speech.motion import AudioMotion, LowerFaceBasis
from ..speech.person import PersonMotion, basis_from_prior
from ..speech.prior import MotionPrior, PriorShape
from ..speech.space import Normalisation, PriorSpace
from .binding import Binding, face_pose, frame_index, localise
from .gaussians import GaussianSet, ModelRegion
from .talking_head import TalkingHead

_TO_MODEL = np.full(len(Region), ModelRegion.FACE, np.uint8)
_TO_MODEL[[Region.EYES]] = ModelRegion.EYES
_TO_MODEL[[Region.LIPS, Region.MOUTH_INTERIOR]] = ModelRegion.MOUTH

#: volume points within this distance of a triangle's centroid are bound to it (metres)
BIND_RADIUS = 0.012


def model_regions(labels: np.ndarray) -> np.ndarray:
    """Map image :class:`Region` labels to the residual network that refines a Gaussian there."""
    return _TO_MODEL[labels]


def _surface_samples(vertices: np.ndarray, triangles: np.ndarray, n: int, rng: np.random.Generator):
    """``n`` points spread over the mesh by area, and the triangle each lies on."""
    pick, u, v = sample_surface(vertices, triangles, n, rng)
    a, b, c = (vertices[triangles[pick, k]] for k in range(3))
    return a + u[:, None] * (b - a) + v[:, None] * (c - a), pick


def _bind_volume(points: np.ndarray, vertices: np.ndarray, triangles: np.ndarray):
    """Binding and parent triangle of free points: the nearest triangle within BIND_RADIUS; else the jaw
    under the chin's level within the jaw's width; else the skull."""
    centroids = vertices[triangles].mean(1)
    dist, nearest = cKDTree(centroids).query(points)
    binding = np.full(len(points), Binding.SKULL, np.uint8)
    chin = vertices[CHIN]
    lower_lip_y = vertices[LIPS_INNER[10], 1]
    jaw_half_width = 0.5 * np.ptp(vertices[:, 0]) * 0.6
    under_chin = (points[:, 1] > lower_lip_y) & (np.abs(points[:, 0] - chin[0]) < jaw_half_width)
    binding[under_chin] = Binding.JAW
    near = dist < BIND_RADIUS
    binding[near] = Binding.TRIANGLE
    return binding, np.where(near, nearest, 0).astype(np.int32)


def _mouth_parts(vertices: np.ndarray, n: int, rng: np.random.Generator):
    """Points of the mouth interior laid out from the inner lip contour (head frame, y down, z into the
    head): upper teeth, lower teeth, tongue, back wall; with their colours and bindings."""
    upper_lip, lower_lip = vertices[LIPS_INNER[0]], vertices[LIPS_INNER[10]]
    left, right = vertices[LIPS_INNER[5]], vertices[LIPS_INNER[15]]
    width = abs(right[0] - left[0])
    cx = 0.5 * (left[0] + right[0])
    z0 = 0.5 * (upper_lip[2] + lower_lip[2])
    up, low = upper_lip[1], lower_lip[1]
    # share, x half-extent (× width), y range, z offset range, colour, binding: upper teeth, lower teeth,
    # tongue, back wall
    parts = [
        (0.25, 0.45, (up - 0.004, up + 0.004), (0.003, 0.006), (0.86, 0.84, 0.78), Binding.SKULL),
        (0.20, 0.42, (low - 0.004, low + 0.004), (0.004, 0.007), (0.84, 0.82, 0.76), Binding.JAW),
        (0.20, 0.35, (low - 0.002, low + 0.006), (0.010, 0.028), (0.55, 0.22, 0.24), Binding.JAW),
        (0.35, 0.50, (up - 0.005, low + 0.025), (0.028, 0.034), (0.12, 0.04, 0.05), Binding.SKULL),
    ]
    points, colours, bindings = [], [], []
    for share, half, (y0, y1), (d0, d1), colour, binding in parts:
        k = max(4, round(share * n))
        x = rng.uniform(-half, half, k) * width
        arch = 0.6 * width * (x / width) ** 2  # the dental arch curves back toward the sides
        points.append(np.stack([cx + x, rng.uniform(y0, y1, k), z0 + rng.uniform(d0, d1, k) + arch], 1))
        colours.append(np.tile(colour, (k, 1)))
        bindings.append(np.full(k, binding, np.uint8))
    return np.concatenate(points), np.concatenate(colours), np.concatenate(bindings)


def _knn_scale(points: np.ndarray) -> np.ndarray:
    """Mean distance to the 3 nearest neighbours (3DGS), capped at twice the median so that sparse
    volume points do not start as huge blobs covering the face."""
    d, _ = cKDTree(points).query(points, k=4)
    scale = d[:, 1:].mean(1)
    return np.clip(scale, 1e-4, 2 * np.median(scale))


def _sample_colours_and_regions(ds: Dataset, model: TalkingHead, views: int = 8):
    """Mean colour and most frequent region label of each head Gaussian, posed in sampled frames."""
    ids = ds.train_ids[np.linspace(0, len(ds.train_ids) - 1, min(views, len(ds.train_ids))).astype(int)]
    ids = ids[ds.valid[ids]] if ds.valid[ids].any() else ids
    meshes = fit_to_landmarks(
        ds.tracks.mesh[ids, :N_MESH], ds.world_to_cam[ids], ds.intrinsics, ds.tracks.landmarks2d[ids, :N_MESH]
    )
    fx, fy, cx, cy = ds.intrinsics
    n = len(model.head)
    colours = np.zeros((n, 3))
    votes = np.zeros((n, len(Region)), np.int32)
    with torch.no_grad():
        for i, mesh in zip(ids, meshes):
            points = model.head.posed(model.pose(torch.from_numpy(mesh)))[0].double().numpy()
            w2c = ds.world_to_cam[i].astype(np.float64)
            cam = points @ w2c[:3, :3].T + w2c[:3, 3]
            u = np.clip(np.round(fx * cam[:, 0] / cam[:, 2] + cx - 0.5).astype(int), 0, ds.size - 1)
            v = np.clip(np.round(fy * cam[:, 1] / cam[:, 2] + cy - 0.5).astype(int), 0, ds.size - 1)
            colours += ds.image(i)[v, u] / 255.0
            votes[np.arange(n), ds.regions(i)[v, u]] += 1
    return colours / len(ids), votes.argmax(1)


def fit_motion_basis(ds: Dataset, components: int) -> LowerFaceBasis:
    """The lower face's motion basis over the tracked training frames."""
    ids = ds.train_ids[ds.valid[ds.train_ids]]
    displacement = ds.tracks.mesh[ids, :N_MESH] - ds.tracks.canonical_shape[None, :N_MESH]
    basis, _ = LowerFaceBasis.fit(displacement, lower_face_weights(ds.tracks.canonical_shape), components)
    return basis


#: the inner lips' vertical gap (metres) of a face at rest: they just meet (the CNN, Lieu and German
#: clips' most closed tenth of frames: 0.1–0.4 mm)
REST_GAP = 0.0


def photo_rest(space: PriorSpace, face: np.ndarray, amplitude: float) -> np.ndarray:
    """(468, 3) the face of a photo, ``face`` (>=468, 3, head frame), with its lips brought to rest: a
    photo is often taken mid-word (the first frames of the CNN and Lieu clips part the lips by 6 and 12 mm).
    The opening removed is the most likely motion under the prior's components (standardised over the
    corpus, so the minimum-norm change of coefficients) that parts the lips by the photo's gap beyond
    ``REST_GAP``: Δz = b·g / (amplitude·|b|²), b the coefficients' lip-gap directions. A closed or pressed
    mouth is its own rest."""
    face = np.asarray(face[:N_MESH], np.float64)
    gap = float(face[14, 1] - face[13, 1]) - REST_GAP
    if gap <= 0:
        return face
    b = space.gap_direction().double().cpu().numpy()
    dz = b * gap / (amplitude * float(b @ b))
    opening = np.einsum("k,knc->nc", dz, space.basis.double().cpu().numpy())
    return face - amplitude * opening


def prior_basis(ds: Dataset, prior: MotionPrior) -> LowerFaceBasis:
    """A photo's lower-face basis (no clip to fit one): the prior's components, scaled by the corpus's
    median amplitude, about the photo's face at rest (:func:`photo_rest`;
    ``speech.person.basis_from_prior``)."""
    amplitude = float(prior.space.amplitude)
    rest = photo_rest(prior.space, ds.tracks.mesh[ds.train_ids[0]], amplitude)
    return basis_from_prior(prior.space, Normalisation(rest, amplitude), ds.tracks.canonical_shape)


def person_motion(shape: PriorShape, basis: LowerFaceBasis, config: ModelConfig) -> PersonMotion:
    """An empty ``PersonMotion`` for a prior of ``shape`` and ``basis``, with a residual network of
    ``config``'s sizes when ``config.motion_residual``."""
    residual = None
    if config.motion_residual:
        residual = AudioMotion(shape.window, shape.channels, basis.components, config.context_past, 0,
                               config.motion_dim, config.motion_norm, config.motion_bands,
                               config.motion_input_dropout)  # fmt: skip
    return PersonMotion(shape, basis.components, residual)


def init_talking_head(
    ds: Dataset,
    n_gaussians: int,
    mouth_fraction: float = 0.1,
    random_fraction: float = 0.2,
    config: ModelConfig | None = None,
    seed: int = 0,
    prior: MotionPrior | None = None,
) -> TalkingHead:
    """A TalkingHead whose Gaussians start on the subject's tracked face, coloured from its frames; its
    audio → motion model a ``speech.person.PersonMotion`` of ``prior`` (to be fitted by
    ``train.person``), or without a prior an ``AudioMotion`` learnt from the clip alone."""
    config = resolve_model(config or ModelConfig(), ds.audio_spec.features)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    canonical = ds.tracks.canonical_shape.astype(np.float64)
    vertices = canonical[:N_MESH]
    triangles = ds.tracks.triangles.astype(np.int64)
    n_mouth = max(16, int(n_gaussians * mouth_fraction))
    n_random = int(n_gaussians * random_fraction)
    n_surface = max(16, n_gaussians - n_mouth - n_random)

    lo, hi = vertices.min(0), vertices.max(0)
    extent = hi - lo
    box_lo = lo - extent * np.array([0.12, 0.12, 0.05])
    box_hi = hi + extent * np.array([0.12, 0.12, 0.1])
    surface, surface_parent = _surface_samples(vertices, triangles, n_surface, rng)
    volume = box_lo + rng.random((n_random, 3)) * (box_hi - box_lo)
    volume_binding, volume_parent = _bind_volume(volume, vertices, triangles)
    head_points = np.concatenate([surface, volume])
    binding = np.concatenate([np.full(n_surface, Binding.TRIANGLE, np.uint8), volume_binding])
    parent = np.concatenate([surface_parent.astype(np.int32), volume_parent])
    pose = face_pose(
        *(torch.from_numpy(a) for a in (vertices, vertices, triangles)), _sizes(vertices, triangles)
    )
    index = frame_index(torch.from_numpy(binding), torch.from_numpy(parent))
    local = localise(torch.from_numpy(head_points), index, pose).float()
    head = GaussianSet(
        local,
        torch.full((len(head_points), 3), 0.5),
        torch.from_numpy(_knn_scale(head_points)),
        torch.zeros(len(head_points), dtype=torch.uint8),
        config.embedding_dim,
        opacity=0.3,
        binding=torch.from_numpy(binding),
        parent=torch.from_numpy(parent),
    )
    mouth_points, mouth_colours, mouth_binding = _mouth_parts(vertices, n_mouth, rng)
    mouth_index = frame_index(
        torch.from_numpy(mouth_binding), torch.zeros(len(mouth_points), dtype=torch.int32)
    )
    mouth = GaussianSet(
        localise(torch.from_numpy(mouth_points), mouth_index, pose).float(),
        torch.from_numpy(mouth_colours),
        torch.from_numpy(_knn_scale(mouth_points)),
        torch.full((len(mouth_points),), int(ModelRegion.MOUTH)),
        config.embedding_dim,
        opacity=0.9 if ds.is_photo else 0.6,  # a photo never trains it: opaque, nothing shows through
        binding=torch.from_numpy(mouth_binding),
    )
    bounds = torch.tensor(np.stack([box_lo - 0.1 * extent, box_hi + 0.1 * extent]))
    if ds.is_photo and prior is None:
        raise GstalkError(
            f"{ds.root} was made from one photo, whose avatar moves only through the motion prior",
            "train it with the builtin prior (leave out --prior none) and the default Whisper features",
        )
    basis = prior_basis(ds, prior) if ds.is_photo else fit_motion_basis(ds, config.motion_components)
    motion = None if prior is None else person_motion(prior.info.shape, basis, config)
    audio = np.asarray(ds.audio_features[ds.train_ids], dtype=np.float32)
    expr = expression_inputs(ds)[ds.train_ids]
    torch.manual_seed(seed)  # the networks' initial weights do not depend on the Gaussian budget
    model = TalkingHead(
        head,
        mouth,
        bounds,
        torch.from_numpy(vertices),
        torch.from_numpy(triangles),
        basis,
        audio.shape[1],
        audio.shape[2],
        expr.shape[1],
        config,
        motion,
    )
    mean, std = torch.from_numpy(audio.mean((0, 1))), torch.from_numpy(audio.std((0, 1)))
    model.audio_encoder.set_statistics(mean, std)
    if prior is None:
        model.motion.set_statistics(mean, std)
    model.expression_encoder.set_statistics(torch.from_numpy(expr.mean(0)), torch.from_numpy(expr.std(0)))
    colours, labels = _sample_colours_and_regions(ds, model)
    with torch.no_grad():
        model.head.params["color_logits"].copy_(
            torch.logit(torch.from_numpy(colours).float().clamp(0.02, 0.98))
        )
    model.head.region = torch.from_numpy(model_regions(labels))
    return model


def _sizes(vertices: np.ndarray, triangles: np.ndarray) -> torch.Tensor:
    v = vertices[triangles]
    edges = np.linalg.norm(v - np.roll(v, 1, axis=1), axis=-1).mean(1)
    return torch.from_numpy(edges)
