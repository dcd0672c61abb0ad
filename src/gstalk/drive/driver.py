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
from functools import cached_property, partial
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from ..data.dataset import Dataset, load_dataset
from ..data.frames import Condition, FrameData, context_indices, expression_inputs, to_uint8
from ..data.layout import MANIFEST
from ..data.run_layout import model_dir
from ..device import pick_device
from ..errors import GstalkError
from ..media.audio import AUDIO_RATE
from ..model.checkpoint import load_model
from ..model.talking_head import Composite, Drive, TalkingHead, render_portrait
from ..speech import FeatureKind, feature_kind, silence_features
from ..splat import Camera
from ..timing import NO_LAPS, Laps
from .idle import blink, blink_amount, idle_rotation

#: source frames whose real-pixel layers a Driver keeps (8-bit): a replay comes back to them
LAYER_CACHE = 256
#: layers read ahead and not yet asked for that a Driver keeps (float, 3 MB each at 512²)
READ_AHEAD = 4


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
    mode: str = "replay"  # "replay" (back and forth), "still", or "idle" (still, with drive.idle's motion)
    still_frame: int = 0
    yaw_deg: float = 0.0
    pitch_deg: float = 0.0


@dataclass
class Speech:
    """New speech, ready to drive the model: the audio features of every output frame and the lower face's
    code the audio → motion model predicts from them."""

    features: np.ndarray
    """(T, W, C) float audio windows, one per output frame (``FeatureKind.compute``)."""
    codes: torch.Tensor
    """(T, K) the predicted lower-face codes, on the driver's device."""

    def __len__(self) -> int:
        return len(self.features)


class Driver:
    """A trained run and its dataset, driven by new speech: see the module docstring.

    ``speech_model``: the speech-model folder for runs whose dataset's features came from one (HuBERT,
    wav2vec 2.0, or a Whisper folder); the pinned Whisper weights need none.
    Raises :class:`GstalkError` when the run or its dataset cannot be found or read.
    """

    def __init__(
        self,
        run: str | Path,
        dataset: str | Path | None = None,
        size: int | None = None,
        device: str | torch.device = "cpu",
        backend: str = "auto",
        speech_model: str | Path | None = None,
    ) -> None:
        self.run = Path(run)
        device = pick_device(device)
        self.model, meta = load_model(model_dir(self.run), device)
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
        self.speech_model = Path(speech_model) if speech_model is not None else None
        self.past, self.future = self.model.config.context_past, self.model.config.context_future
        silence = partial(silence_features, self.ds.audio_spec, self.speech_model, self.device.type)
        self.frames = FrameData(self.ds, self.size, self.device, self.past, self.future, cache=False,
                                silence=silence)  # fmt: skip
        self.expression = torch.from_numpy(expression_inputs(self.ds)).to(self.device)
        self.source_ids = self.ds.train_ids if len(self.ds.train_ids) else np.flatnonzero(self.ds.valid)
        self._layers: OrderedDict[int, np.ndarray] = OrderedDict()
        self._prefetched: dict[int, Future] = {}
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="gstalk-frames")

    @classmethod
    def for_config(cls, config) -> Driver:
        """The driver a command's config asks for: its ``run``, ``dataset``, ``size``, ``device``,
        ``backend`` and ``speech_model`` (``RenderConfig``, ``EvaluateConfig``). Raises as ``Driver``."""
        return cls(config.run, config.dataset, config.size, config.device, config.backend,
                   speech_model=config.speech_model)  # fmt: skip

    @property
    def fps(self) -> float:
        return self.ds.fps

    def source(self, k: int, pose: PoseSource) -> int:
        """The training frame that poses output frame ``k``."""
        if pose.mode in ("still", "idle"):
            return int(np.clip(pose.still_frame, 0, self.ds.n_frames - 1))
        return pingpong(k, self.source_ids)

    def layer(self, s: int) -> torch.Tensor:
        """The source frame's real-pixel layer, (H, W, 3) float in [0, 1]: read ahead by :meth:`prefetch`
        when it was asked for, else read now. The last ``LAYER_CACHE`` layers are kept in 8 bits (a
        replay revisits them): 0.8 MB each at 512²."""
        pending = self._prefetched.pop(s, None)
        if pending is not None:
            image, layer = pending.result()
        else:
            image, layer = self._read_layer(s, self._layers.get(s))
        self._layers[s] = image
        self._layers.move_to_end(s)
        if len(self._layers) > LAYER_CACHE:
            self._layers.popitem(last=False)
        return layer

    def prefetch(self, s: int) -> None:
        """Start making source frame s's layer on a background thread (decoding, the compiled fill and
        the conversion release the GIL), from the 8-bit cache when it is there. At most
        ``READ_AHEAD`` read-aheads are kept (one per stream a server interleaves); the oldest never
        asked for is dropped."""
        if s not in self._prefetched:
            self._prefetched[s] = self._reader.submit(self._read_layer, s, self._layers.get(s))
        while len(self._prefetched) > READ_AHEAD:
            self._prefetched.pop(next(iter(self._prefetched))).cancel()

    def _read_layer(self, s: int, image: np.ndarray | None) -> tuple[np.ndarray, torch.Tensor]:
        """Source frame s's 8-bit layer (``image``, when cached, else read from the dataset) and the
        float layer made from it."""
        if image is None:
            image = self.frames.layer_uint8(s)
        return image, self.frames.to_float(image)

    def camera(self, s: int, pose: PoseSource, k: int = 0):
        """Source frame ``s``'s camera, turned by the pose's free-viewpoint offset (and, idle, by output
        frame ``k``'s idle motion, ``drive.idle``)."""
        cam = self.frames.camera(s)
        idle = pose.mode == "idle"
        if pose.yaw_deg or pose.pitch_deg or idle:
            turn = Rotation.from_euler("yx", [pose.yaw_deg, pose.pitch_deg], degrees=True).as_matrix()
            if idle:
                turn = turn @ idle_rotation(k, self.fps)
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

    # --- speech ----------------------------------------------------------------------------------
    @cached_property
    def feature_kind(self) -> FeatureKind:
        """How new speech becomes this run's audio features (the dataset's kind; ``speech.feature_kind``).
        Raises :class:`GstalkError` when new audio cannot be turned into them here."""
        return feature_kind(self.ds.audio_spec, self.speech_model, self.device.type)

    def features(self, audio: np.ndarray, n_frames: int | None = None) -> np.ndarray:
        """(n_frames, W, C) per-output-frame audio features of 16 kHz ``audio``, computed like the
        dataset's (default length: the audio's, in frames)."""
        n = n_frames if n_frames is not None else int(len(audio) / AUDIO_RATE * self.fps)
        return self.feature_kind.compute(audio, n, self.fps)

    def speech(self, audio: np.ndarray | None = None, n_frames: int | None = None,
               features: np.ndarray | None = None) -> Speech:  # fmt: skip
        """New speech ready to render: 16 kHz mono ``audio``, or ready-made (T, W, C) ``features``."""
        if features is None:
            features = self.features(audio, n_frames)
        features = np.asarray(features, np.float32)
        return Speech(features, self.model.motion.predict(features))

    def condition(self, audio: np.ndarray, k: int, s: int) -> Condition:
        """Audio windows of the output frames around k from ``audio`` (T, W, C); expression of the source
        frames around s."""
        idx = context_indices(k, self.past, self.future, len(audio))
        sidx = context_indices(s, self.past, self.future, self.ds.n_frames)
        a = torch.from_numpy(np.asarray(audio[idx], dtype=np.float32)).to(self.device)
        return Condition(a, self.expression[torch.from_numpy(sidx).to(self.device)])

    def drive(
        self, speech: Speech, k: int, s: int, pose: PoseSource | None = None, frame: int | None = None
    ) -> Drive:
        """Output frame k of ``speech`` posed by source frame s: its mesh, condition and code (an idle
        ``pose`` blinks, by ``frame``, the frame's index in the whole render, default k: ``drive.idle``)."""
        upper = self.frames.mesh(s)
        if pose is not None and pose.mode == "idle":
            upper = blink(upper, blink_amount(k if frame is None else frame, self.fps))
        mesh = self.model.compose_mesh(speech.codes[k], upper)
        return Drive(mesh, self.condition(speech.features, k, s), speech.codes[k])

    # --- the one frame-render path -----------------------------------------------------------------
    @torch.no_grad()
    def render_frame(
        self,
        speech: Speech | None,
        k: int,
        pose: PoseSource | None = None,
        source: int | None = None,
        model: TalkingHead | None = None,
        laps: Laps | None = None,
        read_ahead: int | None = None,
        drive: Drive | None = None,
        camera: Camera | None = None,
        layer: torch.Tensor | None = None,
        frame: int | None = None,
    ) -> Composite:
        """Frame k of ``speech`` posed by training frame ``source`` (default: the pose's frame for k):
        the lower face from the speech, the upper face, camera and real-pixel layer from the source frame.

        ``speech=None`` renders ``model`` (default: the run's) on its canonical face, with no motion (the
        static baseline of ``gstalk evaluate``). ``read_ahead``: the source frame whose layer to read on
        the reading thread meanwhile, for the next call (default: the pose's frame for k + 1 when
        ``source`` is not given, else none). ``laps``, when given, accumulates the time of each stage
        (``layer``, ``networks``, ``rasterize``) for ``gstalk bench``.

        Another face's motion (``drive.reenact``, ``eval.reference``) replaces what the speech and the
        source frame give: ``drive`` (a mesh and code, instead of the speech's), ``camera`` (instead of
        the source frame's, e.g. its pose moved by the driving head), ``layer`` ((H, W, 3) float in
        [0, 1], another clip's real pixels instead of the source frame's; nothing is then read ahead).
        ``frame``: the frame's index in the whole render when ``speech`` is a part of it (a stream's
        block), for what follows the clock (``--pose idle``); default k."""
        laps = laps or NO_LAPS
        laps.start()
        pose = pose or PoseSource()
        clock = k if frame is None else frame
        s = self.source(k, pose) if source is None else source
        if layer is None:
            layer = self.layer(s)
            if read_ahead is None and source is None:
                read_ahead = self.source(k + 1, pose)
            if read_ahead is not None:
                self.prefetch(read_ahead)
        laps.lap("layer")
        model = model or self.model
        if drive is None:
            drive = self.drive(speech, k, s, pose, clock) if speech is not None else Drive()
        posed = model(drive)
        laps.lap("networks")
        camera = camera if camera is not None else self.camera(s, pose, clock)
        comp = render_portrait(posed, camera, layer, backend=self.backend)
        laps.lap("rasterize")
        return comp

    def render(
        self, speech: Speech, pose: PoseSource | None = None, start: int = 0, stop: int | None = None
    ) -> Iterator[np.ndarray]:
        """Yield RGB uint8 frames (size × size) for output frames ``start..stop`` of ``speech``."""
        stop = len(speech) if stop is None else stop
        for k in range(start, stop):
            yield to_uint8(self.render_frame(speech, k, pose).image)
