"""Per-frame model inputs at a working resolution: camera, target, region labels, the real-pixel layer under
the head, and the driving condition (audio and expression of the neighbouring frames)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np
import torch
from torch import Tensor

from ..face.expression import pca_code
from ..face.landmarks import LEFT_BROW, LEFT_EYE, RIGHT_BROW, RIGHT_EYE
from ..face.mesh import N_MESH, fit_to_landmarks
from ..regions import Region
from ..splat import Camera
from ..splat.images import uint8_to_float
from .dataset import Dataset
from .layer import HEAD_LUT, MOUTH_LUT, real_layer

#: the explicit measures of the upper face that drive the model (never the mouth: see expression_inputs)
UPPER_FACE = ("eye_open_right", "eye_open_left", "blink", "brow_raise")


@dataclass
class Condition:
    """What drives one frame: audio windows and expression features of the frames around it (``past``
    before, ``future`` after)."""

    audio: Tensor  # (context, W, C)
    expression: Tensor  # (context, E)


@dataclass
class Target:
    image: Tensor  # (H, W, 3) float in [0, 1]
    labels: Tensor  # (H, W) int64 Region ids
    layer: Tensor  # (H, W, 3): real hair/neck/torso/background pixels, the background plate elsewhere
    head_mask: Tensor  # (H, W) bool: head regions, dilated a little
    mouth_mask: Tensor  # (H, W) bool: lips and mouth interior, dilated a little


def context_indices(centre: int, past: int, future: int, n: int) -> np.ndarray:
    """Frame indices ``centre - past .. centre + future``, clipped to [0, n) (the centre is at ``past``)."""
    return np.clip(np.arange(centre - past, centre + future + 1), 0, n - 1)


def to_uint8(image: Tensor) -> np.ndarray:
    """(H, W, 3) float image in [0, 1] to uint8 RGB on the CPU, rounded."""
    if image.device.type == "cpu" and image.dtype == torch.float32:
        from ..splat.images import float_to_uint8

        return float_to_uint8(image.detach().numpy())
    return (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


class FrameData:
    """Reads and resizes a dataset's frames on demand (cached in memory at small sizes)."""

    def __init__(
        self,
        ds: Dataset,
        size: int,
        device: torch.device | str = "cpu",
        past: int = 6,
        future: int = 3,
        cache: bool | None = None,
        silence: Callable[[], np.ndarray | None] | None = None,
    ):
        self.ds, self.size, self.device = ds, size, torch.device(device)
        self._silence = silence
        self.past, self.future = past, future
        self.scale = size / ds.size
        self.cache_enabled = size <= 256 if cache is None else cache
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._ahead: dict[int, Future] = {}
        self._reader: ThreadPoolExecutor | None = None
        bg = self._resize(ds.background(), cv2.INTER_AREA)
        self.background = torch.from_numpy(bg).to(self.device).float() / 255
        self._background_uint8 = bg
        self.audio = ds.audio_features  # (T, W, C) float16, memory-mapped
        self.expression = expression_inputs(ds)

    @cached_property
    def meshes(self) -> np.ndarray:
        """(T, 468, 3) each frame's tracked mesh in the head frame, fitted to its 2D landmarks: where the
        frame shows the face (teacher forcing, and the upper face of replayed frames)."""
        t = self.ds.tracks
        return fit_to_landmarks(
            t.mesh[:, :N_MESH], t.world_to_cam, self.ds.intrinsics, t.landmarks2d[:, :N_MESH]
        )

    def mesh(self, i: int) -> Tensor:
        return torch.from_numpy(self.meshes[i]).to(self.device)

    @cached_property
    def silence(self) -> np.ndarray:
        """(W, C) audio features of silence: the "zeroed audio" input. Those the ``silence`` callable given at
        construction returns (the feature kind's features of a zero signal: ``speech.silence_features``;
        called once, when first needed), else the training clip's quietest frame."""
        silence = self._silence() if self._silence is not None else None
        if silence is not None:
            return silence
        feats = np.asarray(self.audio, dtype=np.float32)
        return feats[int(np.argmin(np.abs(feats).mean((1, 2))))]

    @cached_property
    def mouth_area_scale(self) -> float:
        """The clip's typical open-mouth area in pixels at this size (90th percentile over the training
        frames)."""
        ids = self.ds.train_ids[::10]
        mouth = np.array([(self.ds.regions(i) == Region.MOUTH_INTERIOR).sum() for i in ids])
        return float(max(np.percentile(mouth, 90), 1.0)) * self.scale**2

    def _resize(self, img: np.ndarray, interp: int) -> np.ndarray:
        if img.shape[0] == self.size:
            return img
        return cv2.resize(img, (self.size, self.size), interpolation=interp)

    def image(self, i: int) -> np.ndarray:
        """Frame i as uint8 at the working size."""
        return self._resize(self.ds.image(i), cv2.INTER_AREA)

    def camera(self, i: int) -> Camera:
        w2c = torch.from_numpy(self.ds.world_to_cam[i]).float()
        k = torch.from_numpy(self.ds.intrinsics * self.scale).float()
        return Camera(w2c, k, self.size, self.size).to(self.device)

    def read_ahead(self, i: int) -> None:
        """Start making :meth:`target` ``(i)`` on a background thread (decoding, the compiled layer and
        the dilations release the GIL), for the next ``target(i)`` to take. A read-ahead still pending
        for another frame is dropped."""
        for other in [k for k in self._ahead if k != i]:
            self._ahead.pop(other).cancel()
        if i not in self._ahead:
            if self._reader is None:
                self._reader = ThreadPoolExecutor(1, thread_name_prefix="gstalk-targets")
            self._ahead[i] = self._reader.submit(self._read_target, i)

    def target(self, i: int) -> Target:
        """Training frame i at the working size: image, labels, layer and masks (see :class:`Target`);
        read ahead when :meth:`read_ahead` asked for it."""
        pending = self._ahead.pop(i, None)
        return pending.result() if pending is not None else self._read_target(i)

    def _read_target(self, i: int) -> Target:
        # the cache holds the resized uint8 frame and labels (a few hundred kB a frame at 256²); the float
        # tensors are made per call
        if i in self._cache:
            image, labels = self._cache[i]
        else:
            image, labels = self.image(i), self.labels(i)
            if self.cache_enabled:
                self._cache[i] = (image, labels)
        return self._target(image, labels)

    def labels(self, i: int) -> np.ndarray:
        """Frame i's (size, size) uint8 Region labels at the working size."""
        return self._resize(self.ds.regions(i), cv2.INTER_NEAREST)

    def layer_uint8(self, i: int) -> np.ndarray:
        """Frame i's real-pixel layer alone, (size, size, 3) uint8 (what rendering needs of a replayed
        frame): its hair, neck, torso and background pixels, the background plate where its head was."""
        return real_layer(self.image(i), self.labels(i), self._background_uint8)

    def layer(self, i: int) -> Tensor:
        """Frame i's real-pixel layer (see :meth:`layer_uint8`) as an (H, W, 3) float tensor in [0, 1]."""
        return self.to_float(self.layer_uint8(i))

    def to_float(self, image: np.ndarray) -> Tensor:
        """(H, W, 3) uint8 → float32 tensor in [0, 1] on the device (``x / 255``), compiled, on the calling
        thread alone: PyTorch would fork its threads for it, beside the render."""
        return torch.from_numpy(uint8_to_float(image)).to(self.device)

    def _target(self, image: np.ndarray, labels: np.ndarray) -> Target:
        kernel = np.ones((5, 5), np.uint8)
        head = cv2.dilate(HEAD_LUT[labels].view(np.uint8), kernel).view(bool)
        mouth = cv2.dilate(MOUTH_LUT[labels].view(np.uint8), kernel).view(bool)
        return Target(
            self.to_float(image),
            torch.from_numpy(labels.astype(np.int64)).to(self.device),
            self.to_float(real_layer(image, labels, self._background_uint8)),
            torch.from_numpy(head).to(self.device),
            torch.from_numpy(mouth).to(self.device),
        )

    def condition(self, i: int, zero_audio: bool = False) -> Condition:
        idx = context_indices(i, self.past, self.future, self.ds.n_frames)
        audio = torch.from_numpy(np.asarray(self.audio[idx], dtype=np.float32)).to(self.device)
        if zero_audio:
            audio = torch.from_numpy(self.silence).to(self.device).expand_as(audio)
        expr = torch.from_numpy(self.expression[idx]).to(self.device)
        return Condition(audio, expr)


def expression_inputs(ds: Dataset) -> np.ndarray:
    """(T, E) per-frame expression input of the model: the upper face only.

    Eye openness, blink and brow raise, plus the eye and brow blendshapes when the dataset has them, else
    the leading principal components of the pose-normalised eye and brow landmarks. Nothing about the
    mouth goes in: the mouth must follow the audio, not a replayed expression.
    """
    spec = ds.expression_spec
    explicit = np.stack([ds.explicit(name) for name in UPPER_FACE], 1)
    if spec.code_kind == "blendshapes" and spec.code_names:
        keep = [i for i, n in enumerate(spec.code_names) if n.startswith(("eye", "brow"))]
        code = ds.tracks.expression_code[:, keep]
    else:
        idx = sorted({*LEFT_EYE, *RIGHT_EYE, *LEFT_BROW, *RIGHT_BROW})
        code, _, _ = pca_code(ds.tracks.mesh[:, idx], ds.valid, ds.train_ids, 8)
    return np.concatenate([explicit, code], 1).astype(np.float32)
