"""Video-driven reenactment: another person's tracked face moves the avatar.

``gstalk render --run RUN --drive-video other.mp4 --out out.mp4`` (and ``gstalk serve`` with an uploaded
video) renders the avatar with the driving person's mouth, jaw, brows and blinks, and with
``--drive-pose`` their head pose too, with the driving clip's sound muxed in:

1. **Track** (:func:`track_driving_video`): the video is read as a player shows it (``media``: upright,
   square pixels, frames on the sound's timeline, from its first shown frame) and MediaPipe's mesh is
   tracked on every frame (``face.track.FaceTracker``); ``face.transfer.driving_face`` removes the head
   pose (as ``prepare`` does) and finds the face's neutral, and with ``--drive-pose`` its head poses.
2. **Transfer** (:class:`Reenactment`): ``face.transfer``: the driver's canonical head frame is aligned to
   the avatar's on the rigid landmarks; each frame's mesh is the avatar's neutral plus the driver's
   displacement from its own neutral; frames where the face was lost hold the last motion and ease back
   when it returns. The lower face's code for the expression colour is the projection of that mesh on the
   avatar's lower-face basis.
3. **Render** through :meth:`Driver.render_frame` with that mesh (``drive=``): the camera, torso, hair and
   background come from the avatar's own clip as for speech (``--pose replay|still``); with
   ``--drive-pose`` the head is held at the avatar's most typical frame and moved by the driver's motion
   from its mean pose (``camera=``), so the real-pixel layer (hair, torso) stays still as the head turns,
   as it does for ``--yaw-deg``.

The residual networks of a run trained with ``--model.residual`` (off by default) are not applied when a
face drives the avatar: they learned the audio and the avatar's own upper-face expression.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from tqdm import tqdm

from ..config import RenderConfig, save_config
from ..data.dataset import Dataset
from ..data.frames import to_uint8
from ..errors import GstalkError
from ..face.landmarks import N_LANDMARKS
from ..face.track import FaceTracker
from ..face.transfer import (
    DrivingFace,
    align_heads,
    driven_motion,
    driving_face,
    hold_and_ease,
    neutral_face,
    transfer_expression,
    turn_degrees,
)
from ..fileio import atomic_path
from ..media import probe_video, read_audio, read_frames
from ..media.audio import AUDIO_RATE
from ..media.encode import write_video
from ..media.video import VideoInfo
from ..model.talking_head import Composite, Drive
from ..outputs import check_free_space
from .driver import Driver, PoseSource
from .stream import Prepared
from .video import (
    AUDIO_BITS_PER_SECOND,
    MARKER,
    MUX_RATE,
    PROBE_FRAMES,
    VIDEO_BITS_PER_PIXEL,
    VIEW_MARGIN_DEG,
    check_viewpoint,
    config_path,
    seconds_per_frame,
)

#: a driving video whose face is lost in more than this share of its frames gets a warning
LOST_WARNING_SHARE = 0.25


def video_frames(info: VideoInfo, fps: float, max_seconds: float | None = None) -> int:
    """Frames of the video at ``fps`` (at most ``max_seconds`` of them)."""
    n = info.frames_at(fps)
    return n if max_seconds is None else min(n, int(max_seconds * fps + 1e-6))


def track_driving_video(
    path: str | Path,
    fps: float,
    n_frames: int | None = None,
    info: VideoInfo | None = None,
    with_pose: bool = False,
    progress: bool = False,
) -> DrivingFace:
    """The driving face of the video at ``path``: its first ``n_frames`` frames at ``fps`` (default: all),
    as a player shows them, tracked by MediaPipe (one subject followed; ``face.track``); with
    ``with_pose`` also its head poses. Holds landmarks, never frames (about 6 kB a frame).

    Raises GstalkError when the file is not a video or no frame shows a face."""
    info = info or probe_video(path)
    n = video_frames(info, fps) if n_frames is None else n_frames
    landmarks = np.zeros((n, N_LANDMARKS, 3), np.float32)
    valid = np.zeros(n, bool)
    with (
        FaceTracker(fps=fps) as tracker,
        tqdm(total=n, desc="track", unit="frame", disable=not progress) as bar,
    ):
        for k, rgb in read_frames(path, fps, 0, n, info):
            found = tracker.track(rgb)
            if found is not None:
                landmarks[k], valid[k] = found.landmarks, True
            bar.update()
    if not valid.any():
        raise GstalkError(
            f"no face was found in the driving video {path}",
            "drive with a video in which a face is visible and turned toward the camera",
        )
    size = (info.width, info.height) if with_pose else None
    return driving_face(landmarks, valid, fps, size)


def driving_sound(path: str | Path, info: VideoInfo, n_frames: int, fps: float, rate: int) -> np.ndarray:
    """(round(n_frames / fps · rate),) float32: the video's sound from its first shown frame (``media``),
    as long as its first ``n_frames`` frames; silence where it has none (a video without an audio
    track is silent throughout)."""
    n = round(n_frames / fps * rate)
    sound = read_audio(path, rate) if info.has_audio else np.zeros(0, np.float32)
    return np.pad(sound[:n], (0, max(0, n - len(sound))))


def dataset_neutral(ds: Dataset, meshes: np.ndarray) -> np.ndarray:
    """(468, 3) float32 a dataset's face at rest (``face.transfer.neutral_face``) over its training frames
    (its tracked frames when it has none), from its (T, 468, 3) fitted meshes (``FrameData.meshes``, where
    its frames show the face, as its Gaussians were trained): the avatar's neutral in reenactment, and
    the reference clip's in ``eval.reference``."""
    ids = ds.train_ids if len(ds.train_ids) else np.flatnonzero(ds.valid)
    return neutral_face(meshes[ids], np.ones(len(ids), bool)).astype(np.float32)


def typical_frame(driver: Driver) -> int:
    """The avatar's training frame nearest its mean head pose (rotation, then position): the still frame
    that a driving head's motion from its own mean pose moves."""
    ids = driver.source_ids
    w2c = driver.ds.world_to_cam[ids].astype(np.float64)
    rots = Rotation.from_matrix(w2c[:, :3, :3])
    turn = (rots.mean().inv() * rots).magnitude()
    shift = np.linalg.norm(w2c[:, :3, 3] - w2c[:, :3, 3].mean(0), axis=1)
    return int(ids[np.lexsort((shift, np.round(np.degrees(turn), 1)))[0]])


@dataclass
class LostFace:
    """What a driving video's tracking lost: for the log and the figures."""

    share: float
    """Share of the frames without a face."""
    spans: list[tuple[int, int]]
    """[start, stop) frame spans without a face."""

    def describe(self, fps: float) -> str:
        spans = ", ".join(f"{a / fps:.1f}–{b / fps:.1f} s" for a, b in self.spans[:5])
        more = f" and {len(self.spans) - 5} more" if len(self.spans) > 5 else ""
        return (
            f"the face is lost in {self.share:.0%} of the driving video's frames ({spans}{more}); the "
            "avatar holds the last motion there and eases back when the face returns"
        )


class Reenactment:
    """A :class:`DrivingFace` on a :class:`Driver`'s avatar: frame k's mesh and code (and, with
    ``drive_pose``, its camera), rendered through :meth:`Driver.render_frame`.

    ``pose``: the avatar's own pose source when the head pose is not driven (replay or still, yaw and
    pitch); with ``drive_pose`` its yaw and pitch still apply, and its still frame when ``pose.mode`` is
    "still", else the avatar's :func:`typical_frame`. Raises ValueError when ``drive_pose`` is asked of a
    face without head poses."""

    def __init__(
        self, driver: Driver, face: DrivingFace, drive_pose: bool = False, pose: PoseSource | None = None
    ) -> None:
        self.driver, self.face, self.drive_pose = driver, face, drive_pose
        pose = pose or PoseSource()
        self.to_avatar = align_heads(face.canonical, driver.ds.tracks.canonical_shape)
        self.neutral = dataset_neutral(driver.ds, driver.frames.meshes)
        self.held = hold_and_ease(face.meshes, face.valid)  # (T, 468, 3) in the driver's head frame
        self.motion: torch.Tensor | None = None
        if drive_pose:
            if face.world_to_cam is None:
                raise ValueError("the driving face was tracked without head poses")
            still = pose.still_frame if pose.mode == "still" else typical_frame(driver)
            pose = PoseSource("still", still, pose.yaw_deg, pose.pitch_deg)
            motion = driven_motion(face.world_to_cam, face.valid, self.to_avatar)
            self.motion = torch.from_numpy(motion).float().to(driver.device)
        self.pose = pose
        self.lost = LostFace(1 - face.found_share, face.lost_spans())

    def __len__(self) -> int:
        return len(self.face)

    def mesh(self, k: int) -> np.ndarray:
        """(468, 3) float32 the avatar's face mesh of driving frame k (its head frame, metres)."""
        return transfer_expression(self.held[k : k + 1], self.face.neutral, self.neutral, self.to_avatar)[0]

    @torch.no_grad()
    def drive(self, k: int) -> Drive:
        """Frame k's :class:`Drive`: the transferred mesh and its lower-face code (the projection of its
        displacement from the avatar's canonical face on the avatar's lower-face basis)."""
        model = self.driver.model
        mesh = torch.from_numpy(self.mesh(k)).to(model.canonical_mesh)
        code = model.basis.project(mesh - model.canonical_mesh)
        return Drive(mesh, None, code)

    def turn(self) -> tuple[float, float]:
        """How far the driven head turns from its mean pose: the 95th percentile of |yaw| and |pitch|
        (degrees); zeros when the pose is not driven."""
        if self.motion is None:
            return 0.0, 0.0
        return turn_degrees(self.motion.cpu().numpy().astype(np.float64))

    def render(self, k: int) -> Composite:
        """Output frame k (posed by the avatar's clip, or by the driving head with ``drive_pose``)."""
        driver, pose = self.driver, self.pose
        camera = None
        if self.motion is not None:
            cam = driver.camera(pose.still_frame, pose)
            camera = cam.__class__(cam.world_to_cam @ self.motion[k], cam.intrinsics, cam.width, cam.height)
        source = pose.still_frame if self.motion is not None else None
        return driver.render_frame(None, k, pose, source=source, drive=self.drive(k), camera=camera)

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """RGB uint8 frames ``start..stop`` (default: to the end of the driving video)."""
        for k in range(start, len(self) if stop is None else stop):
            yield to_uint8(self.render(k).image)


def render_reenactment(config: RenderConfig, out: Path, fmt: str) -> dict:
    """``gstalk render --drive-video``: the avatar of ``config.run`` driven by the face in
    ``config.drive_video`` (and its head pose with ``config.drive_pose``), with its sound, written to
    ``out`` (container ``fmt``; claimed by the caller). Returns figures as ``render_video`` does, plus the
    tracking's (seconds, share of frames with a face).

    Raises GstalkError for a driving video that cannot be read, is longer than
    ``config.max_audio_seconds``, or shows no face."""
    video = Path(config.drive_video)
    info = probe_video(video)
    if info.duration > config.max_audio_seconds:
        raise GstalkError(
            f"{video} is longer than the limit of {config.max_audio_seconds:g} s ({info.duration:.0f} s)",
            "cut the video, or raise the limit (--max-audio-seconds)",
        )
    driver = Driver.for_config(config)
    fps, size = driver.fps, driver.size
    n = video_frames(info, fps)
    if n < 1:
        raise GstalkError(f"{video} is shorter than one video frame", "pass a longer driving video")
    needed = (n * size * size * VIDEO_BITS_PER_PIXEL + n / fps * AUDIO_BITS_PER_SECOND) / 8
    check_free_space(out.parent, needed, "the video")
    tracked = time.perf_counter()
    face = track_driving_video(video, fps, n, info, config.drive_pose, config.progress)
    tracked = time.perf_counter() - tracked
    sound = driving_sound(video, info, n, fps, MUX_RATE)
    pose = PoseSource(config.pose, config.still_frame, config.yaw_deg, config.pitch_deg)
    reenact = Reenactment(driver, face, config.drive_pose, pose)
    check_viewpoint(driver, config)
    _check_driven_turn(driver, reenact)
    if reenact.lost.spans:
        loud = reenact.lost.share > LOST_WARNING_SHARE
        print(
            f"gstalk render: {'warning' if loud else 'note'}: {reenact.lost.describe(fps)}",
            file=sys.stderr if loud else sys.stdout,
            flush=True,
        )
    if not info.has_audio:
        print(f"gstalk render: note: {video} has no sound; the video is silent", flush=True)
    _confirm_duration(config, reenact, n, fps)
    bar = tqdm(total=n, desc="render", unit="frame", disable=not config.progress)

    def frames():
        for frame in reenact.frames():
            bar.update()
            yield frame

    start, cpu = time.perf_counter(), time.process_time()
    with atomic_path(out, unnamed=True) as tmp:
        written = write_video(tmp, frames(), fps, sound, MUX_RATE, container_format=fmt,
                              comment=f"{MARKER} driven by {video.name}")  # fmt: skip
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    bar.close()
    save_config(config, out.parent, name=config_path(out).name)
    figures = {
        "frames": written,
        "seconds": round(seconds, 2),
        "fps": round(written / seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "tracking_seconds": round(tracked, 2),
        "face_found_share": round(face.found_share, 4),
        "out": str(out),
    }
    print(
        f"gstalk render: {written} frames driven by {video.name} in {seconds:.1f} s ({figures['fps']} "
        f"frames/s, encoding included; tracking took {tracked:.1f} s) -> {out}",
        flush=True,
    )
    return figures


def _check_driven_turn(driver: Driver, reenact: Reenactment) -> None:
    """Warn when the driving head turns further than the avatar's clip shows (plus the free-viewpoint
    margin): the sides of the face the clip never showed render as blotches."""
    covered = driver.view_coverage()
    for name, turned, seen in zip(("yaw", "pitch"), reenact.turn(), covered):
        if turned > seen + VIEW_MARGIN_DEG:
            print(
                f"gstalk render: warning: the driving head turns ±{turned:.0f}° of {name} (95th "
                f"percentile), beyond the ±{seen:.0f}° the avatar's clip shows; expect blotches and seams",
                file=sys.stderr,
                flush=True,
            )


def _confirm_duration(config: RenderConfig, reenact: Reenactment, n: int, fps: float) -> None:
    """Time a few frames; a render estimated to take longer than ``confirm_minutes`` needs ``--yes``."""
    if n <= 10 * PROBE_FRAMES:
        return
    estimate = n * seconds_per_frame(reenact.frames(stop=PROBE_FRAMES + 1))
    if estimate > config.confirm_minutes * 60 and not config.yes:
        raise GstalkError(
            f"rendering {n / fps:.0f} s of driving video will take about {estimate / 60:.0f} minutes here",
            "pass --yes to go ahead, or --size with a smaller value, or a shorter video",
        )


class ReenactStream:
    """A reenactment paced by its sound arriving, for ``gstalk serve``: the page plays the driving video's
    sound and sends it as it plays (as it sends a file's); frame k is rendered once the sound under it has
    arrived. The same interface as ``drive.stream.FrameStream`` (``push``, ``ready``, ``end``, ``finish``,
    ``catch_up``, and the server's two halves ``prepare`` and ``render``), so a server session takes
    either; its ``prepare`` has no speech to compute (the face was tracked when the session opened)."""

    #: the sound a frame waits for beyond its own, seconds (none: the face, not the speech, drives it)
    ahead = 0.0

    def __init__(self, reenact: Reenactment) -> None:
        self.reenact = reenact
        self.fps = reenact.driver.fps
        self.samples = 0
        self.next_frame = 0
        self.ended = False

    @property
    def arrived_seconds(self) -> float:
        return self.samples / AUDIO_RATE

    def push(self, chunk: np.ndarray, render: bool = True) -> Iterator[tuple[int, np.ndarray]]:
        """Count 16 kHz audio as arrived; yields the frames it completes (none with ``render=False``)."""
        if self.ended:
            raise ValueError("the stream has ended")
        self.samples += int(np.asarray(chunk).size)
        return self._frames() if render else iter(())

    def ready(self) -> Iterator[tuple[int, np.ndarray]]:
        return self._frames()

    def end(self) -> None:
        """The sound has ended: the frames it reached (at most the driving video's) are ready."""
        self.ended = True

    def finish(self) -> Iterator[tuple[int, np.ndarray]]:
        """The sound has ended: the frames it reached (at most the driving video's)."""
        self.end()
        return self._frames()

    def last_ready(self) -> int:
        """The last frame whose sound has arrived (the video's last at most)."""
        return min(len(self.reenact), int(np.floor(self.arrived_seconds * self.fps + 1e-9))) - 1

    def catch_up(self, elapsed: float, max_behind: float) -> int:
        """Skip the frames overdue by more than ``max_behind`` seconds, ``elapsed`` seconds after the
        sound started arriving in real time; returns how many were skipped."""
        if self.ended:
            return 0
        overdue = int(np.floor((elapsed - max_behind) * self.fps))
        target = min(overdue + 1, self.last_ready())
        skipped = max(0, target - self.next_frame)
        self.next_frame += skipped
        return skipped

    def prepare(self, until: int | None = None) -> Prepared | None:
        """The next frames whose sound has arrived, at most up to frame ``until``; the stream moves past
        them. None when no frame is ready."""
        last = self.last_ready() if until is None else min(self.last_ready(), until)
        if last < self.next_frame:
            return None
        prepared = Prepared(None, 0, range(self.next_frame, last + 1))
        self.next_frame = last + 1
        return prepared

    def render(self, prepared: Prepared, k: int) -> np.ndarray:
        """Frame ``k`` (one of ``prepared.frames``) as (size, size, 3) RGB uint8."""
        return to_uint8(self.reenact.render(k).image)

    def _frames(self) -> Iterator[tuple[int, np.ndarray]]:
        prepared = self.prepare()
        for k in prepared.frames if prepared is not None else ():
            yield k, self.render(prepared, k)


def reenact_upload(driver: Driver, video: bytes, drive_pose: bool, max_seconds: float,
                   pose: PoseSource | None = None) -> ReenactStream:  # fmt: skip
    """A served session's stream from an uploaded driving video (``video``: the file's bytes): tracked
    here (at most ``max_seconds`` of it) and transferred onto ``driver``'s avatar (posed by ``pose``, or
    by the driving head with ``drive_pose``). The bytes go to a private temporary file for the decoder,
    deleted before this returns. Raises GstalkError for a file that is not a video or shows no face."""
    with tempfile.TemporaryDirectory(prefix="gstalk-drive-") as folder:
        path = Path(folder) / "drive"
        path.write_bytes(video)
        info = probe_video(path)
        n = video_frames(info, driver.fps, max_seconds)
        if n < 1:
            raise GstalkError("the uploaded video is shorter than one frame", "upload a longer video")
        face = track_driving_video(path, driver.fps, n, info, drive_pose)
    return ReenactStream(Reenactment(driver, face, drive_pose, pose))
