"""A tiny synthetic talking subject with known ground truth, written as a gstalk dataset.

An ellipsoid "head" of Gaussians whose lower-lip Gaussians move down with a known audio signal, revealing
a dark mouth interior, rendered by the torch rasterizer from slowly turning cameras. The audio features
carry the signal (a fixed random projection of it, with noise), so a model that learns audio → motion
can reproduce the held-out frames, and one driven with silence cannot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gstalk.data import AudioSpec, DatasetWriter, ExpressionSpec, Manifest, Tracks
from gstalk.face.landmarks import LIPS_INNER
from gstalk.regions import Region
from gstalk.splat import Camera, look_at, rasterize

SIZE = 64
FPS = 25.0


def opening_signal(n: int, seed: int = 0) -> np.ndarray:
    """Mouth opening per frame in [0, 1]: syllable-like bumps."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    sig = np.zeros(n)
    for c in rng.uniform(0, n, n // 6):
        sig += np.exp(-0.5 * ((t - c) / rng.uniform(1.5, 3.0)) ** 2)
    return np.clip(sig, 0, 1)


def _scene(seed: int = 0):
    rng = np.random.default_rng(seed)
    n = 1500
    d = rng.standard_normal((n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    d[:, 2] = -np.abs(d[:, 2])  # front half, facing the camera at -z
    axes = np.array([0.07, 0.09, 0.07])
    face = d * axes
    colour = np.clip(
        0.6
        + 0.25 * np.stack([np.ones(n), 0.8 * np.ones(n), 0.7 * np.ones(n)], 1)
        + 0.1 * face[:, :1] / axes[0],
        0,
        1,
    )
    lips_centre = np.array([0.0, 0.045, -0.06])
    lip = np.linalg.norm((face - lips_centre) / [0.025, 0.008, 0.03], axis=1) < 1
    colour[lip] = [0.75, 0.2, 0.25]
    eye_centres = [np.array([-0.025, -0.015, -0.065]), np.array([0.025, -0.015, -0.065])]
    eyes = np.zeros(n, bool)
    for c in eye_centres:
        eyes |= np.linalg.norm(face - c, axis=1) < 0.012
    colour[eyes] = [0.1, 0.1, 0.15]
    lower = lip & (face[:, 1] > lips_centre[1])
    m = 200
    mouth = lips_centre + [0, 0.004, 0.012] + rng.uniform(-1, 1, (m, 3)) * [0.016, 0.006, 0.003]
    return face, colour, lip, lower, eyes, mouth


def _render(points, colours, cam, scale=0.004, opacity=0.9, background=None):
    n = len(points)
    out = rasterize(
        torch.tensor(points, dtype=torch.float32),
        torch.tensor([[1.0, 0, 0, 0]]).expand(n, 4),
        torch.full((n, 3), scale),
        torch.full((n,), opacity),
        torch.tensor(colours, dtype=torch.float32),
        cam,
        background=background,
    )
    return out.image[0].numpy(), out.alpha[0, ..., 0].numpy()


def write_synthetic_dataset(root: Path, n_frames: int = 110, seed: int = 0) -> tuple[Path, np.ndarray]:
    """Write the dataset; returns its path and the per-frame mouth opening."""
    root = Path(root)
    writer = DatasetWriter(root, jpeg_quality=98)
    face, colour, lip, lower, eyes, mouth = _scene(seed)
    opening = opening_signal(n_frames, seed)
    fx = 0.5 * SIZE / np.tan(np.radians(15))
    intr = np.array([fx, fx, SIZE / 2, SIZE / 2], np.float32)
    bg = np.full((SIZE, SIZE, 3), 0.35, np.float32)
    w2cs = []
    for k in range(n_frames):
        yaw = np.radians(6 * np.sin(2 * np.pi * k / 60))
        eye_pos = torch.tensor([0.45 * np.sin(yaw), 0.0, -0.45 * np.cos(yaw)], dtype=torch.float32)
        w2c = look_at(eye_pos, torch.zeros(3))
        cam = Camera(w2c, torch.from_numpy(intr), SIZE, SIZE)
        pts = face.copy()
        pts[lower, 1] += 0.012 * opening[k]  # the lower lip drops with the sound
        mouth_img, _ = _render(
            mouth, np.tile([0.15, 0.02, 0.05], (len(mouth), 1)), cam, background=torch.from_numpy(bg)
        )
        img, alpha = _render(pts, colour, cam, background=torch.from_numpy(mouth_img))
        # region ids: render one-hot "colours" of face / eyes / lips, and the mouth interior behind
        onehot = np.stack([~(eyes | lip), eyes, lip], 1).astype(np.float32)
        reg, _ = _render(pts, onehot, cam)
        _, malpha = _render(mouth, np.ones((len(mouth), 1)), cam)
        head_alpha = alpha
        labels = np.full((SIZE, SIZE), Region.BACKGROUND, np.uint8)
        labels[head_alpha > 0.5] = np.array([Region.FACE, Region.EYES, Region.LIPS])[reg.argmax(-1)][
            head_alpha > 0.5
        ]
        labels[
            ((1 - head_alpha) * malpha[..., 0] if malpha.ndim == 3 else (1 - head_alpha) * malpha) > 0.3
        ] = Region.MOUTH_INTERIOR
        writer.frame(k, (img * 255).astype(np.uint8), labels)
        w2cs.append(w2c.numpy())
    writer.background((bg * 255).astype(np.uint8))
    # audio features: the opening signal around each frame, projected on 8 channels, plus noise
    rng = np.random.default_rng(seed + 1)
    proj = rng.standard_normal(8)
    window = 16
    t = np.arange(n_frames)[:, None] + (np.arange(window) - window // 2)[None, :] / 4.0
    sig = np.interp(t, np.arange(n_frames), opening)
    feats = sig[..., None] * proj + 0.05 * rng.standard_normal((n_frames, window, 8))
    writer.audio_features(feats)
    canonical = np.concatenate([face[rng.choice(len(face), 478)]])
    lips_ring = np.linspace(0, 2 * np.pi, len(LIPS_INNER), endpoint=False)
    canonical[LIPS_INNER] = np.stack(
        [0.02 * np.cos(lips_ring), 0.045 + 0.004 * np.sin(lips_ring), np.full(len(lips_ring), -0.062)], 1
    )
    explicit = ("eye_open_right", "eye_open_left", "blink", "brow_raise", "mouth_open", "lip_width")
    writer.tracks(
        Tracks(
            valid=np.ones(n_frames, bool),
            landmarks2d=np.zeros((n_frames, 478, 2), np.float32),
            world_to_cam=np.stack(w2cs).astype(np.float32),
            canonical_shape=canonical.astype(np.float32),
            expression=np.zeros((n_frames, len(explicit)), np.float32),
            expression_code=np.zeros((n_frames, 2), np.float32),
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
