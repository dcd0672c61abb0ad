"""Per-frame training inputs at the training resolution: camera, target, region labels, the real-pixel
layer under the head, and the driving condition (audio and expression of the neighbouring frames)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from ..data.dataset import Dataset
from ..model.conditions import CONTEXT
from ..model.init import expression_inputs
from ..model.talking_head import Condition
from ..regions import HEAD_REGIONS, PIXEL_REGIONS, Region
from ..splat import Camera


@dataclass
class Target:
    image: Tensor  # (H, W, 3) float in [0, 1]
    labels: Tensor  # (H, W) int64 Region ids
    layer: Tensor  # (H, W, 3): real hair/neck/torso/background pixels, the background plate elsewhere
    head_mask: Tensor  # (H, W) bool: head regions, dilated a little


class FrameData:
    """Reads and resizes a dataset's frames on demand (cached in memory at small sizes)."""

    def __init__(self, ds: Dataset, size: int, device: torch.device | str = "cpu", cache: bool | None = None):
        self.ds, self.size, self.device = ds, size, torch.device(device)
        self.scale = size / ds.size
        self.cache_enabled = size <= 256 if cache is None else cache
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        bg = self._resize(ds.background(), cv2.INTER_AREA)
        self.background = torch.from_numpy(bg).to(self.device).float() / 255
        self.audio = ds.audio_features  # (T, W, C) float16, memory-mapped
        self.silence = silence_features(ds)
        self.expression = expression_inputs(ds)
        mouth = np.array([(ds.regions(i) == Region.MOUTH_INTERIOR).sum() for i in ds.train_ids[::10]])
        self.mouth_area_scale = float(max(np.percentile(mouth, 90), 1.0)) * self.scale**2

    def _resize(self, img: np.ndarray, interp: int) -> np.ndarray:
        if img.shape[0] == self.size:
            return img
        return cv2.resize(img, (self.size, self.size), interpolation=interp)

    def image(self, i: int) -> np.ndarray:
        """Frame i as uint8 at the training size."""
        return self._resize(self.ds.image(i), cv2.INTER_AREA)

    def camera(self, i: int) -> Camera:
        w2c = torch.from_numpy(self.ds.world_to_cam[i]).float()
        k = torch.from_numpy(self.ds.intrinsics * self.scale).float()
        return Camera(w2c, k, self.size, self.size).to(self.device)

    def target(self, i: int) -> Target:
        # the cache holds the resized uint8 frame and labels (a few hundred kB a frame at 256²); the float
        # tensors are made per call
        if i in self._cache:
            image, labels = self._cache[i]
        else:
            image = self._resize(self.ds.image(i), cv2.INTER_AREA)
            labels = self._resize(self.ds.regions(i), cv2.INTER_NEAREST)
            if self.cache_enabled:
                self._cache[i] = (image, labels)
        return self._target(image, labels)

    def _target(self, image: np.ndarray, labels: np.ndarray) -> Target:
        img = torch.from_numpy(image).to(self.device).float() / 255
        lab = torch.from_numpy(labels.astype(np.int64)).to(self.device)
        real = torch.from_numpy(np.isin(labels, PIXEL_REGIONS)).to(self.device)
        layer = torch.where(real[..., None], img, self.background)
        head = np.isin(labels, HEAD_REGIONS).astype(np.uint8)
        head = cv2.dilate(head, np.ones((5, 5), np.uint8)).astype(bool)
        return Target(img, lab, layer, torch.from_numpy(head).to(self.device))

    def condition(self, i: int, zero_audio: bool = False) -> Condition:
        idx = np.clip(np.arange(i - CONTEXT // 2, i + CONTEXT - CONTEXT // 2), 0, self.ds.n_frames - 1)
        audio = torch.from_numpy(np.asarray(self.audio[idx], dtype=np.float32)).to(self.device)
        if zero_audio:
            audio = torch.from_numpy(self.silence).to(self.device).expand_as(audio)
        expr = torch.from_numpy(self.expression[idx]).to(self.device)
        return Condition(audio, expr)


def silence_features(ds: Dataset) -> np.ndarray:
    """(W, C) audio features of silence: the "zeroed audio" input. Log-mel of a zero signal; for speech
    models (which need their weights to run) the training clip's quietest frame."""
    w = int(ds.manifest["audio"]["window"])
    if ds.manifest["audio"]["features"] == "logmel":
        from ..prepare.audio_features import log_mel

        frames = log_mel(np.zeros(16_000, np.float32))
        return np.repeat(frames[:1], w, axis=0)
    feats = np.asarray(ds.audio_features, dtype=np.float32)
    return feats[int(np.argmin(np.abs(feats).mean((1, 2))))]
