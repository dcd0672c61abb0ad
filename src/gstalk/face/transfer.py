"""Another face's motion onto this one: expression and head pose, each relative to its own face's neutral.

Reenactment (``render --drive-video``, ``serve`` with an uploaded video) and the reference-video
evaluation (``evaluate --reference-video``) share these steps, all on NumPy arrays in the head frame:

1. **Head frames.** Every clip's canonical head frame is its own (``face.pose.canonical_shape``: a
   Procrustes mean whose axes follow the clip's first frames, origin at the rigid points' centroid, scale
   from the eye corners). :func:`align_heads` is the similarity that carries one onto the other on the
   rigid landmarks (``STABLE``), so the source's displacements and rotations are expressed in the
   target's axes and at its size.
2. **Each face's neutral** (:func:`neutral_face`): the upper face at its median over the clip (eyes open,
   brows at rest), the lower face at rest (the mean of the clip's most closed mouths, by the inner-lip
   gap), blended by how much each vertex belongs to the lower face. A talking clip's median has the mouth
   half open; relative to that, a closed source mouth would close the target's past its lips.
3. **Expression** (:func:`transfer_expression`): target = target neutral + s·R (source − source neutral).
4. **Head pose** (:func:`relative_motion`): the source head's rigid motion from its mean pose,
   ``M_t = W_mean⁻¹ W_t`` in its head frame, carried into the target's head frame by conjugation with the
   alignment (:meth:`Similarity.conjugate`); the target's camera becomes ``W_target · M'_t``.
5. **A face lost for a while** (:func:`hold_and_ease`): the last tracked value is held, and when the face
   comes back the output eases from the held value to the tracked one (smoothstep) instead of jumping.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.spatial.transform import Rotation

from .landmarks import OUTER_EYE_CORNER_DISTANCE_M, OUTER_EYE_CORNERS, STABLE
from .mesh import N_MESH, lower_face_weights, mouth_gap
from .pose import similarity_align

#: share of a clip's frames, the most closed mouths, whose mean is the lower face at rest
CLOSED_SHARE = 0.05
#: frames over which a face that comes back eases from the held motion to the tracked one (0.32 s at 25 fps)
EASE_FRAMES = 8
#: zero-phase smoothing (frames, σ) of the transferred head motion, as prepare smooths head poses
POSE_SMOOTHING = 1.5


@dataclass(frozen=True)
class Similarity:
    """x ↦ scale · rotation @ x + translation (a uniform scale, a rotation, a shift; metres)."""

    scale: float
    rotation: np.ndarray
    """(3, 3) float64, a proper rotation."""
    translation: np.ndarray
    """(3,) float64."""

    def points(self, x: np.ndarray) -> np.ndarray:
        """(..., 3) points mapped."""
        return self.scale * x @ self.rotation.T + self.translation

    def vectors(self, d: np.ndarray) -> np.ndarray:
        """(..., 3) displacements mapped (no shift)."""
        return self.scale * d @ self.rotation.T

    def conjugate(self, motion: np.ndarray) -> np.ndarray:
        """(..., 4, 4) rigid motions of the source frame as the same motions of the target frame:
        ``A ∘ M ∘ A⁻¹``, still rigid (the translation scaled by ``scale``)."""
        rot, shift = motion[..., :3, :3], motion[..., :3, 3]
        r = self.rotation
        out = np.array(motion, dtype=np.float64, copy=True)
        out[..., :3, :3] = r @ rot @ r.T
        moved = np.einsum("...ij,j->...i", out[..., :3, :3], self.translation)
        out[..., :3, 3] = self.translation - moved + self.scale * shift @ r.T
        return out


def align_heads(source_canonical: np.ndarray, target_canonical: np.ndarray) -> Similarity:
    """The similarity carrying the source's canonical head frame onto the target's, fitted (Umeyama) on
    the rigid landmarks of the two (>=468, 3) canonical shapes (metres)."""
    scale, rot, shift = similarity_align(
        np.asarray(source_canonical, np.float64)[STABLE], np.asarray(target_canonical, np.float64)[STABLE]
    )
    return Similarity(float(scale), rot, shift)


def neutral_face(meshes: np.ndarray, valid: np.ndarray, closed_share: float = CLOSED_SHARE) -> np.ndarray:
    """(N, 3) a face's neutral from its (T, N >= 468, 3) head-frame meshes (``valid`` (T,) bool): the
    median upper face and the lower face at rest (the mean of the ``closed_share`` most closed mouths,
    at least one frame), blended by ``face.mesh.lower_face_weights``. Raises ValueError when no frame is
    valid."""
    ids = np.flatnonzero(valid)
    if not ids.size:
        raise ValueError("no valid frame to take a neutral face from")
    m = np.asarray(meshes, np.float64)[ids]
    median = np.median(m, axis=0)
    closed = np.argsort(mouth_gap(m))[: max(1, round(closed_share * len(ids)))]
    rest = m[closed].mean(0)
    w = np.zeros(len(median))
    w[:N_MESH] = lower_face_weights(median)
    return (1 - w)[:, None] * median + w[:, None] * rest


def transfer_expression(
    meshes: np.ndarray, source_neutral: np.ndarray, target_neutral: np.ndarray, to_target: Similarity
) -> np.ndarray:
    """(T, N, 3) target meshes: the target's neutral moved by the source's (T, N, 3) displacements from
    its own neutral, carried into the target's head frame (``to_target``: source → target)."""
    d = np.asarray(meshes, np.float64) - np.asarray(source_neutral, np.float64)
    return (np.asarray(target_neutral, np.float64) + to_target.vectors(d)).astype(np.float32)


def smoothstep(x: np.ndarray | float) -> np.ndarray:
    """3x² − 2x³ of x clipped to [0, 1]: 0 and 1 with zero slope at both ends."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def hold_and_ease(values: np.ndarray, valid: np.ndarray, ease_frames: int = EASE_FRAMES) -> np.ndarray:
    """(T, ...) ``values`` where a face was lost (``valid`` False) replaced by what was shown before:

    - before the first tracked frame, that frame's value (nothing to hold yet, and nothing jumps);
    - in a gap, the value shown at the frame before it, held;
    - when the face comes back at frame r, frame r + j shows ``held + e_j · (value − held)`` with
      e_j = smoothstep((j + 1) / (ease_frames + 1)), so the output reaches the tracked value after
      ``ease_frames`` frames without a jump (a gap inside an easing holds the eased value).

    Raises ValueError when no frame is valid."""
    valid = np.asarray(valid, bool)
    if not valid.any():
        raise ValueError("no valid frame to hold")
    values = np.asarray(values)
    out = np.array(values, dtype=np.float64, copy=True)
    first = int(np.argmax(valid))
    out[:first] = values[first]
    held, back = None, None  # the value held through the last gap, and the frame the face came back
    for t in range(first + 1, len(values)):
        if not valid[t]:
            out[t] = out[t - 1]
            if held is None or back is not None:
                held, back = out[t - 1].copy(), None
        elif held is not None:
            back = t if back is None else back
            j = t - back
            if j >= ease_frames:
                held, back = None, None
            else:
                out[t] = held + smoothstep((j + 1) / (ease_frames + 1)) * (values[t] - held)
    return out.astype(values.dtype if np.issubdtype(values.dtype, np.floating) else np.float64)


def relative_motion(world_to_cam: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(T, 6) each frame's rigid head motion from the mean pose of the ``valid`` frames, in the head
    frame: the rotation vector (radians) and translation (metres) of ``M_t = W_mean⁻¹ W_t``, for
    (T, 4, 4) world-to-camera poses (OpenCV convention, the head frame as the world)."""
    w = np.asarray(world_to_cam, np.float64)
    rots = Rotation.from_matrix(w[:, :3, :3])
    ok = np.asarray(valid, bool)
    mean_rot = rots[np.flatnonzero(ok)].mean()
    mean_t = w[ok, :3, 3].mean(0)
    rel = mean_rot.inv() * rots
    shift = mean_rot.inv().apply(w[:, :3, 3] - mean_t)
    return np.concatenate([rel.as_rotvec(), shift], 1)


def motion_matrices(motion: np.ndarray) -> np.ndarray:
    """(T, 4, 4) rigid transforms of (T, 6) rotation vectors and translations."""
    out = np.tile(np.eye(4), (len(motion), 1, 1))
    out[:, :3, :3] = Rotation.from_rotvec(motion[:, :3]).as_matrix()
    out[:, :3, 3] = motion[:, 3:]
    return out


def driven_motion(
    world_to_cam: np.ndarray,
    valid: np.ndarray,
    to_target: Similarity,
    ease_frames: int = EASE_FRAMES,
    smoothing: float = POSE_SMOOTHING,
) -> np.ndarray:
    """(T, 4, 4) the source head's motion from its mean pose, lost frames held and eased
    (:func:`hold_and_ease`), smoothed over time (zero-phase Gaussian, σ = ``smoothing`` frames), as a
    rigid motion of the target's head frame: the target camera ``W`` becomes ``W @ motion[t]``."""
    motion = hold_and_ease(relative_motion(world_to_cam, valid), valid, ease_frames)
    if smoothing > 0 and len(motion) > 1:
        motion = gaussian_filter1d(motion, smoothing, axis=0, mode="nearest")
    return to_target.conjugate(motion_matrices(motion))


def turn_degrees(motion: np.ndarray) -> tuple[float, float]:
    """The 95th percentile of |yaw| and |pitch| (degrees) of (T, 4, 4) head motions."""
    if not len(motion):
        return 0.0, 0.0
    yaw, pitch = Rotation.from_matrix(motion[:, :3, :3]).as_euler("yxz", degrees=True)[:, :2].T
    return float(np.percentile(np.abs(yaw), 95)), float(np.percentile(np.abs(pitch), 95))


@dataclass
class DrivingFace:
    """A face's motion as tracked in a driving clip, in that clip's own head frame: what reenactment
    transfers, whoever it is transferred onto."""

    meshes: np.ndarray
    """(T, 468, 3) float32 the face mesh per frame, pose removed (head frame, metres); lost frames hold
    zeros (``valid`` says which)."""
    valid: np.ndarray
    """(T,) bool: the face was tracked in the frame."""
    canonical: np.ndarray
    """(478, 3) the clip's canonical face: it defines the head frame (``face.pose.canonical_shape``)."""
    neutral: np.ndarray
    """(468, 3) the face at rest (:func:`neutral_face`)."""
    fps: float
    """Frames per second of the series."""
    world_to_cam: np.ndarray | None = None
    """(T, 4, 4) per-frame head pose (OpenCV convention, unsmoothed PnP), or None when not estimated."""

    def __len__(self) -> int:
        return len(self.valid)

    @property
    def found_share(self) -> float:
        """Share of the frames where the face was tracked."""
        return float(self.valid.mean()) if len(self.valid) else 0.0

    def lost_spans(self) -> list[tuple[int, int]]:
        """[start, stop) frame spans where the face was lost."""
        spans, start = [], None
        for i, ok in enumerate([*self.valid.tolist(), True]):
            if not ok and start is None:
                start = i
            elif ok and start is not None:
                spans.append((start, i))
                start = None
        return spans


def driving_face(
    landmarks: np.ndarray,
    valid: np.ndarray,
    fps: float,
    frame_size: tuple[int, int] | None = None,
    focal: float | None = None,
) -> DrivingFace:
    """The :class:`DrivingFace` of (T, 478, 3) MediaPipe landmarks in a video's pixels (``valid`` (T,)
    bool): its canonical face, its meshes with the pose removed (``face.pose.normalise_landmarks``, as
    ``prepare`` makes a dataset's), its neutral; and, given the ``frame_size`` (width, height) the
    landmarks' pixels belong to, its head poses (``face.pose.estimate_poses``, by PnP of the rigid
    landmarks). The focal length (pixels) is ``focal``, or the prior ``prepare`` starts its fit from (the
    face seen from about a metre): a motion relative to the clip's own mean pose hardly depends on it, and
    the bundle adjustment that would refine it costs seconds per clip. Raises ValueError when no frame is
    valid."""
    from .pose import PRIOR_DISTANCE_M, canonical_shape, estimate_poses, normalise_landmarks

    valid = np.asarray(valid, bool)
    if not valid.any():
        raise ValueError("no frame with a face")
    world_to_cam = None
    if frame_size is not None:
        width, height = frame_size
        if focal is None:
            a, b = OUTER_EYE_CORNERS
            eyes = landmarks[valid][:, [a, b], :2].astype(np.float64)
            eye_px = float(np.median(np.linalg.norm(eyes[:, 0] - eyes[:, 1], axis=-1)))
            focal = eye_px * PRIOR_DISTANCE_M / OUTER_EYE_CORNER_DISTANCE_M
        poses = estimate_poses(landmarks, valid, max(width, height), (width / 2, height / 2), 0.0, focal)
        canonical, world_to_cam = poses.canonical, poses.world_to_cam_raw
    else:
        canonical = canonical_shape(landmarks, valid).astype(np.float32)
    meshes = normalise_landmarks(landmarks, canonical, valid)[:, :N_MESH]
    return DrivingFace(
        meshes, valid, canonical, neutral_face(meshes, valid).astype(np.float32), fps, world_to_cam
    )
