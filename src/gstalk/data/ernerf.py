"""Interop with the ER-NeRF / TalkingGaussian data layout, both ways.

Their layout (one folder)::

    transforms_{train,val}.json  focal_len, cx, cy, frames[img_id, aud_id, transform_matrix]
    ori_imgs/{i}.jpg, {i}.lms    the frames, 68 landmarks
    parsing/{i}.png              head (BGR 255,0,0), neck (0,255,0), torso (0,0,255), background white
    gt_imgs/{i}.jpg              the frame on the background plate
    torso_imgs/{i}.png, bc.jpg   neck and torso RGBA, the background plate
    aud.wav, aud_*.npy, au.csv   speech, audio features, blink (column " AU45_r")

Their cameras: ``transform_matrix`` is camera-to-world in OpenGL axes (x right, y up, z backward) in a head
frame with y up and z toward the camera, in metres. Ours are world-to-camera in OpenCV axes with y down and
z into the head. With F = diag(1, -1, -1, 1): ``transform_matrix = F · inv(world_to_cam) · F``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from ..errors import GstalkError
from ..media import read_audio
from ..media.video import VideoInfo
from ..prepare.sources import KnownCameras, Source
from ..regions import HEAD_REGIONS, Region
from .dataset import Dataset, load_dataset

FLIP = np.diag([1.0, -1.0, -1.0, 1.0])

#: MediaPipe mesh points standing in for the 68 dlib/face_alignment landmarks (jaw, brows, nose, eyes,
#: outer and inner lips), in that order. The correspondence is approximate: the two topologies differ.
MP_TO_68 = [
    127, 234, 93, 132, 58, 136, 150, 176, 152, 400, 379, 365, 288, 361, 323, 454, 356,
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    78, 82, 13, 312, 308, 317, 14, 87,
]  # fmt: skip


def to_ernerf_matrix(world_to_cam: np.ndarray) -> np.ndarray:
    return FLIP @ np.linalg.inv(world_to_cam.astype(np.float64)) @ FLIP


def from_ernerf_matrix(transform_matrix: np.ndarray) -> np.ndarray:
    return np.linalg.inv(FLIP @ np.asarray(transform_matrix, np.float64) @ FLIP)


def export_ernerf(dataset: str | Path | Dataset, out: str | Path) -> Path:
    """Write a gstalk dataset in the ER-NeRF / TalkingGaussian layout (frames without a face are left out
    of the transforms)."""
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    out = Path(out)
    for sub in ("ori_imgs", "parsing", "gt_imgs", "torso_imgs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    background = ds.background()
    cv2.imwrite(str(out / "bc.jpg"), cv2.cvtColor(background, cv2.COLOR_RGB2BGR))
    shutil.copyfile(ds.root / "audio.wav", out / "aud.wav")
    lms = ds.tracks["landmarks2d"]
    for i in range(ds.n_frames):
        rgb, labels = ds.image(i), ds.regions(i)
        shutil.copyfile(ds.root / "frames" / f"{i:06d}.jpg", out / "ori_imgs" / f"{i}.jpg")
        np.savetxt(out / "ori_imgs" / f"{i}.lms", lms[i, MP_TO_68], fmt="%.2f")
        head = np.isin(labels, [*HEAD_REGIONS, Region.HAIR])
        neck, torso = labels == Region.NECK, labels == Region.TORSO
        bg = labels == Region.BACKGROUND
        parsing = np.full((*labels.shape, 3), 255, np.uint8)
        parsing[head], parsing[neck], parsing[torso] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
        cv2.imwrite(str(out / "parsing" / f"{i}.png"), parsing)
        gt = rgb.copy()
        gt[bg] = background[bg]
        cv2.imwrite(str(out / "gt_imgs" / f"{i}.jpg"), cv2.cvtColor(gt, cv2.COLOR_RGB2BGR))
        body = neck | torso
        rgba = np.concatenate([gt, (255 * body[..., None]).astype(np.uint8)], -1)
        rgba[~body, :3] = 0
        cv2.imwrite(str(out / "torso_imgs" / f"{i}.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    feats = np.asarray(ds.audio_features)
    kind = ds.manifest["audio"]["features"]
    if kind == "hubert":  # their HuBERT layout: the two 20 ms frames of each 40 ms video frame
        w = feats.shape[1]
        np.save(out / "aud_hu.npy", feats[:, w // 2 - 1 : w // 2 + 1].astype(np.float32))
    else:
        np.save(out / f"aud_{kind}.npy", feats.astype(np.float32))
    blink = ds.tracks["expression"][:, 2]
    with open(out / "au.csv", "w") as f:
        f.write("frame, timestamp, confidence, success, AU45_r\n")
        for i in range(ds.n_frames):
            f.write(
                f"{i + 1}, {i / ds.fps:.3f}, {0.98 if ds.valid[i] else 0.0}, {int(ds.valid[i])}, "
                f"{2.5 * blink[i]:.3f}\n"
            )
    fx, fy, cx, cy = ds.intrinsics.tolist()
    for split, ids in (("train", ds.train_ids), ("val", ds.test_ids)):
        frames = [
            {
                "img_id": int(i),
                "aud_id": int(i),
                "transform_matrix": to_ernerf_matrix(ds.world_to_cam[i]).tolist(),
            }
            for i in ids
            if ds.valid[i]
        ]
        (out / f"transforms_{split}.json").write_text(
            json.dumps({"focal_len": 0.5 * (fx + fy), "cx": cx, "cy": cy, "frames": frames}, indent=2)
        )
    return out


class ErnerfSource(Source):
    """Frames, speech and cameras from an ER-NeRF / TalkingGaussian folder, as a ``prepare`` source."""

    def __init__(self, folder: str | Path, fps: float = 25.0) -> None:
        self.folder = Path(folder)
        self.name = str(folder)
        splits = []
        for split in ("train", "val"):
            path = self.folder / f"transforms_{split}.json"
            if not path.is_file():
                raise GstalkError(
                    f"{path} is missing: {folder} is not an ER-NeRF / TalkingGaussian dataset",
                    "point at the folder that holds transforms_train.json and ori_imgs/",
                )
            splits.append(json.loads(path.read_text()))
        frames = sorted((f for s in splits for f in s["frames"]), key=lambda f: int(f["img_id"]))
        self.ids = [int(f["img_id"]) for f in frames]
        first = cv2.imread(str(self.folder / "ori_imgs" / f"{self.ids[0]}.jpg"))
        if first is None:
            raise GstalkError(f"no image ori_imgs/{self.ids[0]}.jpg in {folder}", "check the folder")
        h, w = first.shape[:2]
        if h != w:
            raise GstalkError(
                f"the frames in {folder} are {w}×{h}; gstalk needs square frames",
                "crop them to a square first",
            )
        n = len(self.ids)
        w2c = np.tile(np.eye(4), (n, 1, 1))
        for k, f in enumerate(frames):
            w2c[k] = from_ernerf_matrix(f["transform_matrix"])
        s = splits[0]
        focal = float(s["focal_len"])
        intr = np.array([focal, focal, float(s.get("cx", w / 2)), float(s.get("cy", h / 2))], np.float32)
        self.cameras = KnownCameras(w2c.astype(np.float32), intr, np.ones(n, bool))
        audio_path = self.folder / "aud.wav"
        has_audio = audio_path.is_file()
        self.info = VideoInfo(
            path=self.name,
            width=w,
            height=h,
            fps=fps,
            duration=n / fps,
            codec="jpeg",
            has_audio=has_audio,
            audio_rate=16000 if has_audio else None,
            audio_channels=1 if has_audio else None,
        )
        self.fps = fps

    def frames(self, fps: float) -> Iterator[tuple[int, np.ndarray]]:
        if abs(fps - self.fps) > 1e-6:
            raise GstalkError(
                f"ER-NeRF frames are at {self.fps:g} fps; cannot resample them to {fps:g}",
                f"prepare with --fps {self.fps:g}",
            )
        for k, i in enumerate(self.ids):
            bgr = cv2.imread(str(self.folder / "ori_imgs" / f"{i}.jpg"))
            if bgr is None:
                raise GstalkError(
                    f"missing or unreadable ori_imgs/{i}.jpg in {self.folder}", "check the folder"
                )
            yield k, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def audio(self) -> np.ndarray:
        return read_audio(self.folder / "aud.wav")


def import_ernerf(folder: str | Path, out: str | Path, **prepare_options) -> Path:
    """Prepare a gstalk dataset from an ER-NeRF / TalkingGaussian folder, keeping its frames and cameras.

    Landmarks, regions, background, audio features and expression are computed the gstalk way from its
    images and ``aud.wav``.
    """
    from ..config import PrepareConfig
    from ..prepare import prepare

    source = ErnerfSource(folder)
    options = {"size": source.info.width, "min_seconds": 1.0, **prepare_options}
    return prepare(PrepareConfig(video=Path(folder), out=Path(out), **options), source=source)
