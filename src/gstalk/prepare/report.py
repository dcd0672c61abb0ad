"""Visual checks a person reads at a glance: a contact sheet and a timeline plot of a dataset, drawn as
images (``data.DatasetWriter`` writes them)."""

from __future__ import annotations

import cv2
import numpy as np

from ..data.tracks import Tracks
from ..face.expression import EXPLICIT
from ..regions import REGION_COLOURS, Region, colourise


def _pose_axes(img: np.ndarray, w2c: np.ndarray, intrinsics: np.ndarray, length: float = 0.06) -> None:
    """Draw the head frame's x (red), y (green), z (blue) axes from the origin of the canonical head."""
    fx, fy, cx, cy = intrinsics
    pts = np.array([[0, 0, 0], [length, 0, 0], [0, length, 0], [0, 0, length]], np.float64)
    cam = pts @ w2c[:3, :3].T + w2c[:3, 3]
    if (cam[:, 2] <= 0).any():
        return
    uv = np.stack([fx * cam[:, 0] / cam[:, 2] + cx, fy * cam[:, 1] / cam[:, 2] + cy], 1)
    o = tuple(np.round(uv[0]).astype(int))
    for k, colour in zip((1, 2, 3), ((255, 40, 40), (40, 220, 40), (60, 120, 255))):
        cv2.line(img, o, tuple(np.round(uv[k]).astype(int)), colour, 2, cv2.LINE_AA)


def contact_sheet(
    frames: np.ndarray,
    labels: np.ndarray,
    ids: np.ndarray,
    tracks: Tracks,
    intrinsics: np.ndarray,
    caption: str = "",
    tile: int = 256,
) -> np.ndarray:
    """(H, W, 3) uint8 picture of sample frames: landmarks and pose axes (top), the frame under its region
    colours (bottom), a legend of the regions below, and ``caption`` (e.g. the sync check) under that.
    ``frames`` (S, size, size, 3) uint8 and ``labels`` (S, size, size) uint8 are the dataset's frames
    ``ids``."""
    columns = []
    for rgb, regions, i in zip(frames, labels, ids):
        overlay = rgb.copy()
        if tracks.valid[i]:
            for x, y in np.round(tracks.landmarks2d[i]).astype(int)[::2]:
                cv2.circle(overlay, (int(x), int(y)), 1, (0, 255, 0), -1)
            _pose_axes(overlay, tracks.world_to_cam[i], intrinsics, length=0.06)
        else:
            cv2.putText(overlay, "no face", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 0, 0), 2)
        blend = (0.55 * rgb + 0.45 * colourise(regions)).astype(np.uint8)
        top = cv2.resize(overlay, (tile, tile), interpolation=cv2.INTER_AREA)
        bottom = cv2.resize(blend, (tile, tile), interpolation=cv2.INTER_AREA)
        cv2.putText(top, f"#{i}", (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
        columns.append(np.concatenate([top, bottom], 0))
    sheet = np.concatenate(columns, 1)
    legend = np.full((28, sheet.shape[1], 3), 255, np.uint8)
    x = 6
    for r in Region:
        cv2.rectangle(legend, (x, 7), (x + 14, 21), tuple(int(c) for c in REGION_COLOURS[r]), -1)
        cv2.putText(legend, r.name.lower(), (x + 18, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
        x += 30 + 9 * len(r.name)
    rows = [sheet, legend]
    if caption:
        band = np.full((26, sheet.shape[1], 3), 255, np.uint8)
        cv2.putText(band, caption, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        rows.append(band)
    return np.concatenate(rows, 0)


def sheet_ids(n_frames: int, n: int = 8) -> np.ndarray:
    """The frames a contact sheet of ``n`` columns shows: evenly spread over the clip."""
    return np.linspace(0, n_frames - 1, min(n, n_frames)).astype(int)


def timeline(tracks: Tracks, fps: float) -> np.ndarray:
    """(H, W, 3) uint8 plot of head rotation, translation, mouth opening, blink and tracking over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.spatial.transform import Rotation

    t = np.arange(len(tracks)) / fps
    w2c = tracks.world_to_cam.astype(np.float64)
    euler = Rotation.from_matrix(w2c[:, :3, :3]).as_euler("yxz", degrees=True)
    euler -= np.median(euler, axis=0)
    trans = 1000 * (w2c[:, :3, 3] - np.median(w2c[:, :3, 3], axis=0))
    fig, axes = plt.subplots(4, 1, figsize=(11, 8), sharex=True, dpi=90)
    for k, name in enumerate(("yaw", "pitch", "roll")):
        axes[0].plot(t, euler[:, k], label=name, lw=0.8)
    axes[0].set_ylabel("rotation (°)")
    for k, name in enumerate("xyz"):
        axes[1].plot(t, trans[:, k], label=name, lw=0.8)
    axes[1].set_ylabel("translation (mm)")
    mouth, blink = EXPLICIT.index("mouth_open"), EXPLICIT.index("blink")
    axes[2].plot(t, tracks.expression[:, mouth], color="crimson", lw=0.8, label="mouth opening")
    axes[2].set_ylabel("mouth open")
    axes[3].plot(t, tracks.expression[:, blink], color="navy", lw=0.8, label="blink")
    lost = ~tracks.valid
    if lost.any():
        for ax in axes:
            ax.fill_between(
                t,
                0,
                1,
                where=lost,
                color="red",
                alpha=0.2,
                transform=ax.get_xaxis_transform(),
                label="face lost",
            )
    axes[3].set_ylabel("blink")
    axes[3].set_xlabel("time (s)")
    for ax in axes:
        ax.legend(loc="upper right", fontsize=7, ncol=4)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return rgb
