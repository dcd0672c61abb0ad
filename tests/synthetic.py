"""A tiny synthetic talking subject with known ground truth, written as a gstalk dataset.

The face is a real MediaPipe face mesh (tracked once on the public-domain photo the demo uses), covered
with Gaussians on its triangles; its jaw and lower lip drop with a known opening signal, uncovering a dark
mouth interior; frames are rendered by the torch rasterizer from slowly turning cameras. The tracked
mesh, landmarks and cameras are the exact ones used to render, and the audio features carry the signal
(a fixed random projection of it, with noise), so a model that learns audio → motion can reproduce the
held-out frames, and one driven with silence cannot.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from gstalk.data import AudioSpec, DatasetWriter, ExpressionSpec, Manifest, Tracks
from gstalk.face.landmarks import LEFT_EYE, LIPS_INNER, LIPS_OUTER, RIGHT_EYE
from gstalk.face.mesh import N_MESH, face_triangles, sample_surface
from gstalk.face.pose import canonical_shape
from gstalk.regions import Region
from gstalk.splat import Camera, look_at, rasterize

SIZE = 64
FPS = 25.0
MAX_DROP = 0.012  # metres the chin drops at full opening


@lru_cache(maxsize=1)
def face_mesh() -> np.ndarray:
    """(478, 3) a real face in the head frame, metres: MediaPipe on scikit-image's astronaut photo."""
    from skimage.data import astronaut

    from gstalk.face.track import FaceTracker

    with FaceTracker() as tracker:
        obs = tracker.track(astronaut())
    return canonical_shape(obs.landmarks[None], np.ones(1, bool)).astype(np.float64)


def opening_signal(n: int, seed: int = 0) -> np.ndarray:
    """Mouth opening per frame in [0, 1]: syllable-like bumps."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    sig = np.zeros(n)
    for c in rng.uniform(0, n, n // 6):
        sig += np.exp(-0.5 * ((t - c) / rng.uniform(1.5, 3.0)) ** 2)
    return np.clip(sig, 0, 1)


def jaw_weights(mesh: np.ndarray) -> np.ndarray:
    """1 for the lower lip and the jaw below the lips' meeting line, fading to 0 just above it."""
    meet = 0.5 * (mesh[13, 1] + mesh[14, 1])
    return np.clip((mesh[:, 1] - meet) / 0.003, 0.0, 1.0)


def animated(mesh: np.ndarray, opening: float) -> np.ndarray:
    out = mesh.copy()
    out[:, 1] += MAX_DROP * opening * jaw_weights(mesh)
    return out


def _render(points, colours, cam, scale=0.0025, opacity=0.9, background=None):
    n = len(points)
    out = rasterize(
        torch.tensor(points, dtype=torch.float32),
        torch.tensor([[1.0, 0, 0, 0]]).expand(n, 4),
        torch.full((n, 3), scale),
        torch.full((n,), opacity),
        torch.tensor(colours, dtype=torch.float32),
        cam,
        background=background,
        backend="torch",
    )
    return out.image[0].numpy(), out.alpha[0, ..., 0].numpy()


def write_synthetic_dataset(root: Path, n_frames: int = 110, seed: int = 0) -> tuple[Path, np.ndarray]:
    """Write the dataset; returns its path and the per-frame mouth opening."""
    root = Path(root)
    writer = DatasetWriter(root, jpeg_quality=98)
    rng = np.random.default_rng(seed)
    rest = face_mesh()
    triangles = face_triangles(rest)
    pick, u, v = sample_surface(rest[:N_MESH], triangles, 2500, rng)
    tri = triangles[pick]
    centre = rest[:N_MESH].mean(0)
    colour = np.clip(0.75 + 0.15 * (rest[tri[:, 0], :1] - centre[0]) / 0.08, 0, 1) * np.array(
        [1.0, 0.78, 0.66]
    )
    lips = np.isin(tri, LIPS_OUTER + LIPS_INNER).any(1)
    eyes = np.isin(tri, LEFT_EYE + RIGHT_EYE).any(1)
    colour[lips], colour[eyes] = (0.75, 0.2, 0.25), (0.1, 0.1, 0.15)
    inner = rest[LIPS_INNER]
    mouth = (
        inner.mean(0) + np.array([0.0, 0.004, 0.008]) + rng.uniform(-1, 1, (300, 3)) * [0.02, 0.008, 0.002]
    )
    opening = opening_signal(n_frames, seed)
    fx = 0.5 * SIZE / np.tan(np.radians(15))
    intr = np.array([fx, fx, SIZE / 2, SIZE / 2], np.float32)
    bg = np.full((SIZE, SIZE, 3), 0.35, np.float32)
    meshes, w2cs, landmarks = [], [], []
    onehot = np.stack([~(eyes | lips), eyes, lips], 1).astype(np.float32)
    for k in range(n_frames):
        mesh = animated(rest, opening[k])
        a, b, c = (mesh[tri[:, j]] for j in range(3))
        points = a + u[:, None] * (b - a) + v[:, None] * (c - a)
        yaw = np.radians(6 * np.sin(2 * np.pi * k / 60))
        centre_k = mesh[:N_MESH].mean(0)
        eye = centre_k + np.array([0.45 * np.sin(yaw), 0.0, -0.45 * np.cos(yaw)])
        w2c = look_at(torch.tensor(eye, dtype=torch.float32), torch.tensor(centre_k, dtype=torch.float32))
        cam = Camera(w2c, torch.from_numpy(intr), SIZE, SIZE)
        mouth_img, malpha = _render(mouth, np.tile([0.12, 0.02, 0.05], (len(mouth), 1)), cam,
                                    background=torch.from_numpy(bg))  # fmt: skip
        img, alpha = _render(points, colour, cam, background=torch.from_numpy(mouth_img))
        reg, _ = _render(points, onehot, cam)
        labels = np.full((SIZE, SIZE), Region.BACKGROUND, np.uint8)
        head = alpha > 0.5
        labels[head] = np.array([Region.FACE, Region.EYES, Region.LIPS])[reg.argmax(-1)][head]
        labels[((1 - alpha) * malpha) > 0.3] = Region.MOUTH_INTERIOR
        writer.frame(k, (img * 255).astype(np.uint8), labels)
        w2c = w2c.numpy().astype(np.float64)
        cam_pts = mesh @ w2c[:3, :3].T + w2c[:3, 3]
        landmarks.append(np.stack([fx * cam_pts[:, 0] / cam_pts[:, 2] + SIZE / 2,
                                   fx * cam_pts[:, 1] / cam_pts[:, 2] + SIZE / 2], 1))  # fmt: skip
        meshes.append(mesh)
        w2cs.append(w2c)
    writer.background((bg * 255).astype(np.uint8))
    # audio features: the opening signal around each frame, projected on 8 channels, plus noise
    frng = np.random.default_rng(seed + 1)
    proj = frng.standard_normal(8)
    window = 16
    t = np.arange(n_frames)[:, None] + (np.arange(window) - window // 2)[None, :] / 4.0
    sig = np.interp(t, np.arange(n_frames), opening)
    writer.audio_features(sig[..., None] * proj + 0.05 * frng.standard_normal((n_frames, window, 8)))
    explicit = ("eye_open_right", "eye_open_left", "blink", "brow_raise", "mouth_open", "lip_width")
    writer.tracks(
        Tracks(
            valid=np.ones(n_frames, bool),
            landmarks2d=np.stack(landmarks).astype(np.float32),
            world_to_cam=np.stack(w2cs).astype(np.float32),
            canonical_shape=rest.astype(np.float32),
            expression=np.zeros((n_frames, len(explicit)), np.float32),
            expression_code=np.zeros((n_frames, 2), np.float32),
            mesh=np.stack(meshes).astype(np.float32),
            triangles=triangles,
        )
    )
    n_test = n_frames // 11
    writer.manifest(
        Manifest(
            n_frames=n_frames,
            fps=FPS,
            size=SIZE,
            intrinsics=tuple(intr.tolist()),
            train=tuple(range(n_frames - n_test)),
            test=tuple(range(n_frames - n_test, n_frames)),
            audio=AudioSpec("synthetic", feature_rate_hz=100.0, window=window, dim=8),
            expression=ExpressionSpec(explicit, code_kind="none", code_dim=2),
        )
    )
    return root, opening
