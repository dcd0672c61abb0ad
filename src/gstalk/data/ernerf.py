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
from ..fileio import atomic_folder, read_json
from ..media import read_audio
from ..outputs import claim_output
from ..regions import HEAD_REGIONS, Region
from .dataset import Dataset, load_dataset
from .layout import AUDIO, frame_path
from .writer import write_image

#: what marks an ER-NeRF folder (replaced by ``export_ernerf(overwrite=True)`` only when it holds it)
TRANSFORMS = "transforms_train.json"

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


def export_ernerf(dataset: str | Path | Dataset, out: str | Path, overwrite: bool = False) -> Path:
    """Write a gstalk dataset in the ER-NeRF / TalkingGaussian layout (frames without a face are left out
    of the transforms). The folder is built under a temporary name and moved into place when complete."""
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    out = Path(out)
    with claim_output(out, [ds.root], overwrite=overwrite, what="ER-NeRF export", markers=(TRANSFORMS,)):
        if out.exists() and not overwrite:
            raise GstalkError(f"{out} already exists", "choose another --out")
        with atomic_folder(out, overwrite=overwrite) as tmp:
            _write_ernerf(ds, tmp)
    return out


def _write_ernerf(ds: Dataset, out: Path) -> None:
    for sub in ("ori_imgs", "parsing", "gt_imgs", "torso_imgs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    background = ds.background()
    write_image(out / "bc.jpg", background)
    shutil.copyfile(ds.root / AUDIO, out / "aud.wav")
    lms = ds.tracks.landmarks2d
    for i in range(ds.n_frames):
        rgb, labels = ds.image(i), ds.regions(i)
        shutil.copyfile(frame_path(ds.root, i), out / "ori_imgs" / f"{i}.jpg")
        np.savetxt(out / "ori_imgs" / f"{i}.lms", lms[i, MP_TO_68], fmt="%.2f")
        head = np.isin(labels, [*HEAD_REGIONS, Region.HAIR])
        neck, torso = labels == Region.NECK, labels == Region.TORSO
        bg = labels == Region.BACKGROUND
        parsing = np.full((*labels.shape, 3), 255, np.uint8)  # their colours are BGR on disk
        parsing[head], parsing[neck], parsing[torso] = (0, 0, 255), (0, 255, 0), (255, 0, 0)
        write_image(out / "parsing" / f"{i}.png", parsing)
        gt = rgb.copy()
        gt[bg] = background[bg]
        write_image(out / "gt_imgs" / f"{i}.jpg", gt)
        body = neck | torso
        rgba = np.concatenate([gt, (255 * body[..., None]).astype(np.uint8)], -1)
        rgba[~body, :3] = 0
        write_image(out / "torso_imgs" / f"{i}.png", rgba)
    feats = np.asarray(ds.audio_features)
    kind = ds.audio_spec.features
    if kind == "hubert":  # their HuBERT layout: the two 20 ms frames of each 40 ms video frame
        w = feats.shape[1]
        np.save(out / "aud_hu.npy", feats[:, w // 2 - 1 : w // 2 + 1].astype(np.float32))
    else:
        np.save(out / f"aud_{kind}.npy", feats.astype(np.float32))
    blink = ds.explicit("blink")
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


class ErnerfFolder:
    """Frames, speech and cameras of an ER-NeRF / TalkingGaussian folder (read side of the interop)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        splits = [self._transforms(split) for split in ("train", "val")]
        frames = [f for s in splits for f in s["frames"]]
        if not frames:
            raise GstalkError(
                f"the transforms of {folder} list no frames",
                "check transforms_train.json / transforms_val.json",
            )
        try:
            frames.sort(key=lambda f: int(f["img_id"]))
            self.ids = [int(f["img_id"]) for f in frames]
            w2c = np.stack([from_ernerf_matrix(f["transform_matrix"]) for f in frames])
            focal = float(splits[0]["focal_len"])
        except (KeyError, TypeError, ValueError, np.linalg.LinAlgError) as err:
            raise GstalkError(
                f"the transforms of {folder} are malformed ({type(err).__name__}: {err})",
                "each frame needs img_id and a 4×4 transform_matrix, and the file a focal_len",
            ) from err
        first = cv2.imread(str(self.folder / "ori_imgs" / f"{self.ids[0]}.jpg"))
        if first is None:
            raise GstalkError(f"no image ori_imgs/{self.ids[0]}.jpg in {folder}", "check the folder")
        self.height, self.width = first.shape[:2]
        if self.height != self.width:
            raise GstalkError(
                f"the frames in {folder} are {self.width}×{self.height}; gstalk needs square frames",
                "crop them to a square first",
            )
        s = splits[0]
        self.world_to_cam = w2c.astype(np.float32)
        self.intrinsics = np.array(
            [focal, focal, float(s.get("cx", self.width / 2)), float(s.get("cy", self.height / 2))],
            np.float32,
        )
        self.audio_path = self.folder / "aud.wav"

    def _transforms(self, split: str) -> dict:
        path = self.folder / f"transforms_{split}.json"
        missing = (f"{path} is missing: {self.folder} is not an ER-NeRF / TalkingGaussian dataset",
                   "point at the folder that holds transforms_train.json and ori_imgs/")  # fmt: skip
        data = read_json(path, missing, "repair or regenerate the file")
        if not isinstance(data, dict) or not isinstance(data.get("frames"), list):
            raise GstalkError(f"{path} has no frame list", "repair or regenerate the file")
        return data

    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        for k, i in enumerate(self.ids):
            bgr = cv2.imread(str(self.folder / "ori_imgs" / f"{i}.jpg"))
            if bgr is None:
                raise GstalkError(
                    f"missing or unreadable ori_imgs/{i}.jpg in {self.folder}", "check the folder"
                )
            yield k, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def audio(self) -> np.ndarray:
        return read_audio(self.audio_path)
