"""New speech in, frames out: the trained model driven by any audio, posed by the training clip.

A :class:`Driver` holds a trained run and its dataset. For output frame k it takes:

- the audio window around k from the new speech (features computed the way the dataset's were);
- a *source* frame of the training clip, which gives the camera (head pose), the real hair, neck, torso
  and background pixels under the head, and the blink and brow expression (replayed). The clip is played
  back and forth (no jump at its ends), or one still frame is held; a free-viewpoint offset turns the
  head by a yaw and pitch in degrees.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from ..data.dataset import Dataset, load_dataset
from ..errors import GstalkError
from ..model.conditions import CONTEXT
from ..model.init import expression_inputs
from ..model.talking_head import Condition, render_portrait
from ..train.checkpoint import load_model
from ..train.frames import FrameData


def pingpong(k: int, ids: np.ndarray) -> int:
    """The k-th source frame when ``ids`` is played forward, then backward, and so on."""
    n = len(ids)
    if n == 1:
        return int(ids[0])
    period = 2 * (n - 1)
    j = k % period
    return int(ids[j if j < n else period - j])


@dataclass
class PoseSource:
    mode: str = "replay"  # "replay" (back and forth) or "still"
    still_frame: int = 0
    yaw_deg: float = 0.0
    pitch_deg: float = 0.0


class Driver:
    def __init__(
        self,
        run: str | Path,
        dataset: str | Path | None = None,
        size: int | None = None,
        device: str | torch.device = "cpu",
        backend: str = "auto",
    ) -> None:
        self.run = Path(run)
        self.model, meta = load_model(self.run / "model", device)
        self.model.eval().freeze()
        ds_path = Path(dataset) if dataset is not None else Path(meta["dataset"])
        if not (ds_path / "manifest.json").is_file():
            raise GstalkError(
                f"the run's dataset is not at {ds_path}",
                "pass --dataset with the folder `gstalk prepare` made for this run",
            )
        self.ds: Dataset = load_dataset(ds_path)
        self.size = int(size or meta.get("train_size") or self.ds.size)
        self.device = torch.device(device)
        self.backend = backend
        self.frames = FrameData(self.ds, self.size, self.device, cache=False)
        self.expression = torch.from_numpy(expression_inputs(self.ds)).to(self.device)
        self.source_ids = self.ds.train_ids if len(self.ds.train_ids) else np.flatnonzero(self.ds.valid)
        self._layers: OrderedDict[int, torch.Tensor] = OrderedDict()

    @property
    def fps(self) -> float:
        return self.ds.fps

    def source(self, k: int, pose: PoseSource) -> int:
        if pose.mode == "still":
            return int(np.clip(pose.still_frame, 0, self.ds.n_frames - 1))
        return pingpong(k, self.source_ids)

    def layer(self, s: int) -> torch.Tensor:
        """The source frame's real-pixel layer, kept for the few hundred frames a replay revisits."""
        if s not in self._layers:
            self._layers[s] = self.frames.target(s).layer
            if len(self._layers) > 256:
                self._layers.popitem(last=False)
        return self._layers[s]

    def camera(self, s: int, pose: PoseSource):
        cam = self.frames.camera(s)
        if pose.yaw_deg or pose.pitch_deg:
            turn = Rotation.from_euler("yx", [pose.yaw_deg, pose.pitch_deg], degrees=True).as_matrix()
            offset = torch.eye(4, dtype=cam.world_to_cam.dtype, device=cam.device)
            offset[:3, :3] = torch.from_numpy(turn).to(offset)
            cam = cam.__class__(cam.world_to_cam @ offset, cam.intrinsics, cam.width, cam.height)
        return cam

    def condition(self, audio: np.ndarray, k: int, s: int) -> Condition:
        """Audio windows of output frames k-4..k+3 from ``audio`` (T, W, C); expression of source frames."""
        n = len(audio)
        idx = np.clip(np.arange(k - CONTEXT // 2, k + CONTEXT - CONTEXT // 2), 0, n - 1)
        sidx = np.clip(np.arange(s - CONTEXT // 2, s + CONTEXT - CONTEXT // 2), 0, self.ds.n_frames - 1)
        a = torch.from_numpy(np.asarray(audio[idx], dtype=np.float32)).to(self.device)
        return Condition(a, self.expression[torch.from_numpy(sidx).to(self.device)])

    @torch.no_grad()
    def render(
        self,
        audio_features: np.ndarray,
        pose: PoseSource | None = None,
        start: int = 0,
        stop: int | None = None,
    ) -> Iterator[np.ndarray]:
        """Yield RGB uint8 frames (size × size) for output frames ``start..stop`` of the features."""
        pose = pose or PoseSource()
        stop = len(audio_features) if stop is None else stop
        for k in range(start, stop):
            s = self.source(k, pose)
            frame = self.model(self.condition(audio_features, k, s))
            comp = render_portrait(frame, self.camera(s, pose), self.layer(s), backend=self.backend)
            yield (comp.image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()

    def features(self, audio: np.ndarray, n_frames: int | None = None, speech_model: Path | None = None):
        """Per-output-frame audio features of 16 kHz ``audio``, computed like the dataset's."""
        from ..prepare.audio_features import audio_features

        kind = self.ds.manifest["audio"]["features"]
        n = n_frames if n_frames is not None else math.floor(len(audio) / 16_000 * self.fps)
        if kind not in ("logmel", "hubert", "wav2vec2"):
            raise GstalkError(
                f"this run was trained on {kind!r} audio features, which new audio cannot be turned into",
                "train on a dataset prepared with logmel, hubert or wav2vec2",
            )
        if kind != "logmel" and speech_model is None:
            raise GstalkError(
                f"this run was trained on {kind} features", "pass --speech-model with the same model"
            )
        window_ms = 1000 * self.ds.manifest["audio"]["window"] / self.ds.manifest["audio"]["feature_rate_hz"]
        return audio_features(audio, n, self.fps, kind, speech_model, window_ms=window_ms).features
