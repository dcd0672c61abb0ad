"""Head pose per frame: the camera relative to a canonical 3D face built from the clip itself.

1. A canonical shape: generalised Procrustes (similarity) alignment of MediaPipe's per-frame 3D landmarks
   on the rigid points (``STABLE``), averaged, scaled to metres by the mean outer-eye-corner distance.
2. The focal length: fitted jointly with the rigid shape and the poses of sampled frames (a bundle
   adjustment), with a prior for clips whose head barely turns.
3. Per frame, the world-to-camera transform by PnP of the stable points (OpenCV convention).
4. Zero-phase smoothing over time (a symmetric Gaussian, so no lag), on rotations and translations.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.spatial.transform import Rotation

from .landmarks import OUTER_EYE_CORNER_DISTANCE_M, OUTER_EYE_CORNERS, STABLE


@dataclass
class PoseTrack:
    world_to_cam: np.ndarray  # (T, 4, 4) smoothed; invalid frames interpolated
    world_to_cam_raw: np.ndarray  # (T, 4, 4) per-frame PnP, before smoothing
    intrinsics: np.ndarray  # (4,) fx, fy, cx, cy in pixels
    canonical: np.ndarray  # (478, 3) metres, head frame
    reprojection_px: np.ndarray  # (T,) RMS reprojection error of the stable points, smoothed pose
    jitter: dict[str, float]
    focal_fit: dict


def similarity_align(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Scale s, rotation R, translation t minimising ||s R src + t - dst|| (Umeyama)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.diag([1.0, 1.0, d])
    rot = u @ fix @ vt
    scale = float((sig * np.diag(fix)).sum() / (a**2).sum())
    return scale, rot, mu_d - scale * rot @ mu_s


def canonical_shape(
    landmarks: np.ndarray, valid: np.ndarray, max_frames: int = 400, iters: int = 4
) -> np.ndarray:
    """(478, 3) metric canonical face from (T, 478, 3) MediaPipe landmarks of the valid frames."""
    idx = np.flatnonzero(valid)
    if idx.size > max_frames:
        idx = idx[np.linspace(0, idx.size - 1, max_frames).astype(int)]
    shapes = landmarks[idx].astype(np.float64)
    ref = shapes[0]
    for _ in range(iters):
        aligned = []
        for s in shapes:
            scale, rot, t = similarity_align(s[STABLE], ref[STABLE])
            aligned.append(scale * s @ rot.T + t)
        ref = np.median(np.stack(aligned), axis=0)
    ref -= ref[STABLE].mean(0)
    a, b = OUTER_EYE_CORNERS
    ref *= OUTER_EYE_CORNER_DISTANCE_M / np.linalg.norm(ref[a] - ref[b])
    return ref


def _pnp(obj: np.ndarray, img: np.ndarray, k: np.ndarray, guess: tuple[np.ndarray, np.ndarray] | None):
    if guess is None:
        ok, rvec, tvec = cv2.solvePnP(obj, img, k, None, flags=cv2.SOLVEPNP_SQPNP)
    else:
        rvec, tvec = guess[0].copy(), guess[1].copy()
        ok, rvec, tvec = cv2.solvePnP(obj, img, k, None, rvec, tvec, True, cv2.SOLVEPNP_ITERATIVE)
    if not ok or tvec[2, 0] <= 0:
        ok, rvec, tvec = cv2.solvePnP(obj, img, k, None, flags=cv2.SOLVEPNP_SQPNP)
    return rvec, tvec


def _reprojection(obj, img, k, rvec, tvec) -> float:
    proj, _ = cv2.projectPoints(obj, rvec, tvec, k, None)
    return float(np.sqrt(((proj[:, 0] - img) ** 2).sum(1).mean()))


def _k(focal: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[focal, 0, cx], [0, focal, cy], [0, 0, 1]], dtype=np.float64)


#: Prior of the focal length: the face is seen from about a metre (log-normal, a factor of 2 at one sigma),
#: which with the face's size in pixels gives the focal length. Clips with head rotation pin it down; clips
#: without any fall back to this.
PRIOR_DISTANCE_M = 1.0
PRIOR_SIGMA_LOG = 0.7


def estimate_focal(
    canonical: np.ndarray,
    landmarks: np.ndarray,
    valid: np.ndarray,
    cx: float,
    cy: float,
    size: int,
    frames: int = 80,
    point_sigma_px: float = 1.0,
    shape_sigma_m: tuple[float, float, float] = (0.004, 0.004, 0.02),
) -> tuple[float, dict]:
    """Focal length (pixels) fitted jointly with the face's rigid shape and the head poses of sampled frames.

    A bundle adjustment of the rigid (``STABLE``) landmarks: unknowns are log f, the 3D points (kept near
    ``canonical`` by a prior of ``shape_sigma_m`` in x, y, z, which also fixes the scale; loose in depth,
    which MediaPipe only estimates) and one pose per frame;
    residuals are reprojection errors over ``point_sigma_px`` and the prior on log f (a face seen from
    about a metre). Perspective under head rotation separates the focal length from the distance; the
    returned record says how much the clip constrained it (posterior against prior sigma of log f).
    """
    from scipy.optimize import least_squares
    from scipy.sparse import lil_matrix

    idx = np.flatnonzero(valid)
    idx = idx[np.linspace(0, idx.size - 1, min(frames, idx.size)).astype(int)]
    obs = np.ascontiguousarray(landmarks[idx][:, STABLE, :2], dtype=np.float64)  # (F, P, 2)
    shape0 = canonical[STABLE].astype(np.float64)
    n_f, n_p = obs.shape[:2]
    a, b = OUTER_EYE_CORNERS
    eye_px = float(np.median(np.linalg.norm(landmarks[idx, a, :2] - landmarks[idx, b, :2], axis=-1)))
    f_prior = eye_px * PRIOR_DISTANCE_M / OUTER_EYE_CORNER_DISTANCE_M
    k0 = _k(f_prior, cx, cy)
    poses0 = []
    for o in obs:
        rvec, tvec = _pnp(shape0, o, k0, None)
        poses0 += [rvec[:, 0], tvec[:, 0]]
    x0 = np.concatenate([[np.log(f_prior)], shape0.reshape(-1), np.concatenate(poses0)])

    def unpack(x):
        return np.exp(x[0]), x[1 : 1 + 3 * n_p].reshape(n_p, 3), x[1 + 3 * n_p :].reshape(n_f, 6)

    def residuals(x):
        f, shape, poses = unpack(x)
        rot = Rotation.from_rotvec(poses[:, :3]).as_matrix()
        cam = np.einsum("fij,pj->fpi", rot, shape) + poses[:, None, 3:]
        z = np.maximum(cam[..., 2], 1e-3)
        proj = np.stack([f * cam[..., 0] / z + cx, f * cam[..., 1] / z + cy], -1)
        return np.concatenate(
            [
                ((proj - obs) / point_sigma_px).reshape(-1),
                ((shape - shape0) / np.asarray(shape_sigma_m)).reshape(-1),
                [(x[0] - np.log(f_prior)) / PRIOR_SIGMA_LOG],
            ]
        )

    sparsity = lil_matrix((n_f * n_p * 2 + n_p * 3 + 1, x0.size), dtype=np.int8)
    for fi in range(n_f):
        for pi in range(n_p):
            rows = slice(2 * (fi * n_p + pi), 2 * (fi * n_p + pi) + 2)
            sparsity[rows, 0] = 1
            sparsity[rows, 1 + 3 * pi : 4 + 3 * pi] = 1
            sparsity[rows, 1 + 3 * n_p + 6 * fi : 1 + 3 * n_p + 6 * fi + 6] = 1
    base = n_f * n_p * 2
    for j in range(n_p * 3):
        sparsity[base + j, 1 + j] = 1
    sparsity[base + n_p * 3, 0] = 1
    fit = least_squares(residuals, x0, jac_sparsity=sparsity, x_scale="jac", method="trf", max_nfev=200)
    focal = float(np.exp(fit.x[0]))
    jac = fit.jac.toarray() if hasattr(fit.jac, "toarray") else fit.jac
    try:
        sigma_log = float(np.sqrt(np.linalg.pinv(jac.T @ jac)[0, 0]))
    except np.linalg.LinAlgError:
        sigma_log = PRIOR_SIGMA_LOG
    reproj = fit.fun[: n_f * n_p * 2].reshape(n_f, n_p, 2) * point_sigma_px
    return focal, {
        "method": "bundle adjustment of the rigid landmarks over sampled frames",
        "fov_deg": float(np.degrees(2 * np.arctan(0.5 * size / focal))),
        "prior_fov_deg": float(np.degrees(2 * np.arctan(0.5 * size / f_prior))),
        "sigma_log_focal": sigma_log,
        "prior_sigma_log_focal": PRIOR_SIGMA_LOG,
        "constrained_by_clip": bool(sigma_log < 0.7 * PRIOR_SIGMA_LOG),
        "rms_px": float(np.sqrt((reproj**2).sum(-1).mean())),
        "frames": int(n_f),
    }


def _smooth_rotations(rots: Rotation, sigma: float) -> Rotation:
    mean = rots.mean()
    rel = (mean.inv() * rots).as_rotvec()
    return mean * Rotation.from_rotvec(gaussian_filter1d(rel, sigma, axis=0, mode="nearest"))


def _fill_invalid(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Linear interpolation over invalid frames (held constant past the ends)."""
    t = np.arange(len(values))
    out = values.copy()
    flat = out.reshape(len(values), -1)
    for j in range(flat.shape[1]):
        flat[:, j] = np.interp(t, t[valid], flat[valid, j])
    return out


def estimate_poses(
    landmarks: np.ndarray,
    valid: np.ndarray,
    size: int,
    principal_point: tuple[float, float],
    smoothing_sigma: float = 1.5,
    focal: float | None = None,
) -> PoseTrack:
    """Poses for (T, 478, 3) landmarks in the pixels of a ``size``-square crop."""
    canonical = canonical_shape(landmarks, valid)
    cx, cy = principal_point
    fit: dict = {"method": "given (--fov-deg)"}
    if focal is None:
        focal, fit = estimate_focal(canonical, landmarks, valid, cx, cy, size)
    k = _k(focal, cx, cy)
    obj = canonical[STABLE]
    n = len(landmarks)
    rvecs = np.zeros((n, 3))
    tvecs = np.zeros((n, 3))
    guess = None
    for i in np.flatnonzero(valid):
        rvec, tvec = _pnp(obj, landmarks[i, STABLE, :2].astype(np.float64), k, guess)
        guess = (rvec, tvec)
        rvecs[i], tvecs[i] = rvec[:, 0], tvec[:, 0]
    rvecs_raw = _fill_invalid(rvecs, valid)
    # unwrap rotation vectors through quaternions so the interpolation never takes the long way round
    quats = Rotation.from_rotvec(rvecs_raw).as_quat()
    quats[np.sum(quats * quats[:1], axis=1) < 0] *= -1
    rots_raw = Rotation.from_quat(quats)
    t_raw = _fill_invalid(tvecs, valid)
    rots = _smooth_rotations(rots_raw, smoothing_sigma) if smoothing_sigma > 0 else rots_raw
    t_smooth = (
        gaussian_filter1d(t_raw, smoothing_sigma, axis=0, mode="nearest") if smoothing_sigma > 0 else t_raw
    )

    w2c = np.tile(np.eye(4), (n, 1, 1))
    w2c[:, :3, :3], w2c[:, :3, 3] = rots.as_matrix(), t_smooth
    w2c_raw = np.tile(np.eye(4), (n, 1, 1))
    w2c_raw[:, :3, :3], w2c_raw[:, :3, 3] = rots_raw.as_matrix(), t_raw
    reproj = np.full(n, np.nan)
    for i in np.flatnonzero(valid):
        reproj[i] = _reprojection(
            obj, landmarks[i, STABLE, :2].astype(np.float64), k, rots[i].as_rotvec(), t_smooth[i]
        )
    return PoseTrack(
        world_to_cam=w2c.astype(np.float32),
        world_to_cam_raw=w2c_raw.astype(np.float32),
        intrinsics=np.array([focal, focal, cx, cy], dtype=np.float32),
        canonical=canonical.astype(np.float32),
        reprojection_px=reproj.astype(np.float32),
        jitter=pose_jitter(rots_raw, t_raw, rots, t_smooth, valid),
        focal_fit=fit,
    )


def known_poses(
    estimated: PoseTrack, world_to_cam: np.ndarray, valid: np.ndarray, intrinsics: np.ndarray
) -> PoseTrack:
    """Replace the estimated cameras by ones supplied with the input (their head frame, their focal).

    The canonical shape stays ours (it normalises expression); reprojection errors are not comparable
    across head frames and are left as NaN.
    """
    w2c = world_to_cam.astype(np.float64)
    rots = Rotation.from_matrix(w2c[:, :3, :3])
    return PoseTrack(
        world_to_cam=world_to_cam.astype(np.float32),
        world_to_cam_raw=world_to_cam.astype(np.float32),
        intrinsics=np.asarray(intrinsics, np.float32),
        canonical=estimated.canonical,
        reprojection_px=np.full(len(w2c), np.nan, np.float32),
        jitter=pose_jitter(rots, w2c[:, :3, 3], rots, w2c[:, :3, 3], valid),
        focal_fit={"method": "cameras came with the input"},
    )


def pose_jitter(rots_raw: Rotation, t_raw, rots: Rotation, t_smooth, valid) -> dict[str, float]:
    """Frame-to-frame motion and high-frequency noise of the head pose, in degrees and millimetres.

    ``*_step`` is the median frame-to-frame change; ``*_noise`` is the RMS of what smoothing removed
    (raw minus smoothed), i.e. the tracker's jitter.
    """
    both = valid[1:] & valid[:-1]

    def step_deg(r: Rotation) -> float:
        d = (r[:-1].inv() * r[1:]).magnitude()[both]
        return float(np.degrees(np.median(d))) if d.size else float("nan")

    def step_mm(t) -> float:
        d = np.linalg.norm(np.diff(t, axis=0), axis=1)[both]
        return float(1000 * np.median(d)) if d.size else float("nan")

    noise_rot = np.degrees((rots.inv() * rots_raw).magnitude()[valid])
    noise_t = 1000 * np.linalg.norm(t_raw - t_smooth, axis=1)[valid]
    return {
        "rotation_step_deg_raw": step_deg(rots_raw),
        "rotation_step_deg": step_deg(rots),
        "translation_step_mm_raw": step_mm(t_raw),
        "translation_step_mm": step_mm(t_smooth),
        "rotation_noise_deg": float(np.sqrt(np.mean(noise_rot**2))) if noise_rot.size else float("nan"),
        "translation_noise_mm": float(np.sqrt(np.mean(noise_t**2))) if noise_t.size else float("nan"),
    }


def normalise_landmarks(landmarks: np.ndarray, canonical: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(T, 478, 3) landmarks similarity-aligned onto the canonical head on the stable points (metres).

    Removes head pose and distance, leaving expression: the input of the expression features.
    """
    out = np.zeros_like(landmarks, dtype=np.float32)
    for i in np.flatnonzero(valid):
        s, r, t = similarity_align(
            landmarks[i, STABLE].astype(np.float64), canonical[STABLE].astype(np.float64)
        )
        out[i] = s * landmarks[i] @ r.T + t
    return out
