"""New speech in, frames out: the trained model driven by any audio, posed by the training clip.

A :class:`Driver` holds a trained run and its dataset. For output frame k it takes:

- the lower face's motion, predicted from the new speech by the run's audio → motion model (features
  computed the way the dataset's were), and the audio around k for the residual networks;
- a *source* frame of the training clip, which gives the camera (head pose), the real hair, neck, torso
  and background pixels under the head, and the upper face (blinks, brows: its tracked mesh, and its
  expression for the residual networks). The clip is played back and forth (no jump at its ends), or one
  still frame is held; a free-viewpoint offset turns the head by a yaw and pitch in degrees.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from ..data.dataset import Dataset, load_dataset
from ..data.frames import Condition, FrameData, context_indices, expression_inputs, to_uint8
from ..data.layout import MANIFEST
from ..device import pick_device
from ..errors import GstalkError
from ..media.audio import AUDIO_RATE
from ..model.checkpoint import load_model
from ..model.talking_head import Composite, Drive, render_portrait


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
        device = pick_device(device)
        self.model, meta = load_model(self.run / "model", device)
        self.model.eval().freeze()
        ds_path = Path(dataset) if dataset is not None else Path(meta["dataset"])
        if not (ds_path / MANIFEST).is_file():
            raise GstalkError(
                f"the run's dataset is not at {ds_path}",
                "pass --dataset with the folder `gstalk prepare` made for this run",
            )
        self.ds: Dataset = load_dataset(ds_path)
        self.size = int(size or meta.get("train_size") or self.ds.size)
        self.device = torch.device(device)
        self.backend = backend
        self.past, self.future = self.model.config.context_past, self.model.config.context_future
        self.frames = FrameData(self.ds, self.size, self.device, self.past, self.future, cache=False)
        self.expression = torch.from_numpy(expression_inputs(self.ds)).to(self.device)
        self.source_ids = self.ds.train_ids if len(self.ds.train_ids) else np.flatnonzero(self.ds.valid)
        self._layers: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._prefetched: dict[int, Future] = {}
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="gstalk-frames")

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
            pending = self._prefetched.pop(s, None)
            self._layers[s] = pending.result() if pending is not None else self.frames.layer(s)
            if len(self._layers) > 256:
                self._layers.popitem(last=False)
        return self._layers[s]

    def prefetch(self, s: int) -> None:
        """Start reading source frame s's layer on a background thread (image decoding releases the GIL)."""
        if s not in self._layers and s not in self._prefetched:
            self._prefetched[s] = self._reader.submit(self.frames.layer, s)

    def camera(self, s: int, pose: PoseSource):
        cam = self.frames.camera(s)
        if pose.yaw_deg or pose.pitch_deg:
            turn = Rotation.from_euler("yx", [pose.yaw_deg, pose.pitch_deg], degrees=True).as_matrix()
            offset = torch.eye(4, dtype=cam.world_to_cam.dtype, device=cam.device)
            offset[:3, :3] = torch.from_numpy(turn).to(offset)
            cam = cam.__class__(cam.world_to_cam @ offset, cam.intrinsics, cam.width, cam.height)
        return cam

    def view_coverage(self) -> tuple[float, float]:
        """How far (degrees of yaw, pitch) the training frames turn the head from its median pose: the 95th
        percentile of the deviation. Free-viewpoint offsets beyond it show sides the clip never saw."""
        rotations = self.ds.world_to_cam[self.ds.train_ids, :3, :3].astype(np.float64)
        yaw, pitch = Rotation.from_matrix(rotations).as_euler("yxz", degrees=True)[:, :2].T
        spread = [float(np.percentile(np.abs(a - np.median(a)), 95)) for a in (yaw, pitch)]
        return spread[0], spread[1]

    def condition(self, audio: np.ndarray, k: int, s: int) -> Condition:
        """Audio windows of the output frames around k from ``audio`` (T, W, C); expression of the source
        frames around s."""
        idx = context_indices(k, self.past, self.future, len(audio))
        sidx = context_indices(s, self.past, self.future, self.ds.n_frames)
        a = torch.from_numpy(np.asarray(audio[idx], dtype=np.float32)).to(self.device)
        return Condition(a, self.expression[torch.from_numpy(sidx).to(self.device)])

    def codes(self, audio_features: np.ndarray) -> torch.Tensor:
        """(T, K) the lower face's predicted code for every frame of (T, W, C) audio features."""
        return self.model.motion.predict(audio_features)

    def drive(self, audio_features: np.ndarray, codes: torch.Tensor, k: int, s: int) -> Drive:
        """Output frame k (audio) posed by source frame s: its mesh, condition and code."""
        mesh = self.model.compose_mesh(codes[k], self.frames.mesh(s))
        return Drive(mesh, self.condition(audio_features, k, s), codes[k])

    @torch.no_grad()
    def render_frame(
        self,
        audio_features: np.ndarray,
        codes: torch.Tensor,
        k: int,
        pose: PoseSource,
        source_frame: int | None = None,
    ) -> Composite:
        """The composite of frame k of ``audio_features`` (posed by ``source_frame``, by default the pose
        source's frame for k)."""
        s = self.source(k, pose) if source_frame is None else source_frame
        self.prefetch(self.source(k + 1, pose))
        frame = self.model(self.drive(audio_features, codes, k, s))
        return render_portrait(frame, self.camera(s, pose), self.layer(s), backend=self.backend)

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
        codes = self.codes(audio_features)
        for k in range(start, stop):
            yield to_uint8(self.render_frame(audio_features, codes, k, pose).image)

    def features(self, audio: np.ndarray, n_frames: int | None = None, speech_model: Path | None = None):
        """Per-output-frame audio features of 16 kHz ``audio``, computed like the dataset's."""
        n = n_frames if n_frames is not None else int(len(audio) / AUDIO_RATE * self.fps)
        return self.ds.audio_spec.compute(audio, n, self.fps, speech_model, device=self.device.type)
