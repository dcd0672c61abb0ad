"""The ``track`` step: which of the video's frames become the dataset (those with sound under them, after
the sync check), and the face landmarks on them.

1. The sound is decoded on the frames' clock (``media.clip``) and must not be silent.
2. The frames it covers are the candidates; too few of them is a refusal naming the coverage.
3. The face is tracked on those frames and a margin either side (room for the sync correction).
4. The sync check (``prepare.sync``) may move the sound by a small, clear offset.
5. The frames covered by the sound as placed, and tracked, are kept; the face must be found in enough of
   them. The record says which video frame is the dataset's frame 0.
"""

from __future__ import annotations

import math

import numpy as np

from ..config import PrepareConfig
from ..errors import GstalkError
from ..face.landmarks import N_LANDMARKS
from ..face.track import N_BLENDSHAPES, FaceTracker
from ..media.audio import TimedAudio, is_silent
from ..media.clip import Coverage, coverage
from .progress import bar, say
from .sources import Source
from .sync import check_sync, prior_lip_gap, search_frames
from .work import Timing, Tracked


def track_step(config: PrepareConfig, source: Source, total: int) -> tuple[Tracked, Timing]:
    """Track the ``total``-frame video of ``source``; the records of the dataset's frames and timing."""
    fps = config.fps
    audio = _speech(source)
    heard = coverage(audio, total, fps)
    _check_coverage(config, source.name, heard, audio)
    margin = search_frames(fps, config.max_sync_correction)
    if config.audio_offset is not None:
        margin = max(margin, math.ceil(abs(config.audio_offset) * fps) + 1)
    t0, t1 = max(0, heard.first - margin), min(total, heard.stop + margin)
    landmarks, valid, n_faces, blend, names = _track(config, source, t0, t1)
    predicted = None
    if config.audio_features == "whisper":
        predicted = prior_lip_gap(audio, t0, t1, fps, config.prior, config.whisper, config.speech_model)
    check = check_sync(audio, landmarks, valid, t0, (heard.first, heard.stop), fps,
                       config.max_sync_correction, config.audio_offset, predicted)  # fmt: skip
    audio = audio.shifted(check.shift_s)
    placed = coverage(audio, total, fps)
    kept = Coverage(max(placed.first, t0), max(min(placed.stop, t1), t0), total, fps)
    _check_coverage(config, source.name, kept, audio)
    a, b = kept.first - t0, kept.stop - t0
    valid = valid[a:b]
    if source.cameras is not None:
        valid = valid & source.cameras.valid[kept.first : kept.stop]
    _check_tracking(config, source.name, valid)
    speech = audio.between(kept.first / fps, max(audio.end, kept.stop / fps))
    tracked = Tracked(
        landmarks[a:b], valid, n_faces[a:b], speech, names, None if blend is None else blend[a:b]
    )
    notes, warnings = _advice(config, source, kept, check)
    timing = Timing(kept.first, kept.kept, kept.as_dict(), check.as_dict(), _shown(source), notes, warnings)
    return tracked, timing


def _speech(source: Source) -> TimedAudio:
    audio = source.audio()
    if is_silent(audio.samples):
        raise GstalkError(
            f"the audio track of {source.name} is silent",
            "gstalk learns lip motion from the speech: use a clip where the person is heard",
        )
    return audio


def _check_coverage(config: PrepareConfig, name: str, cover: Coverage, audio: TimedAudio) -> None:
    if cover.kept >= config.min_seconds * config.fps:
        return
    heard = f"its sound runs from {audio.start:.2f} s to {audio.end:.2f} s"
    raise GstalkError(
        f"only {cover.kept / config.fps:.1f} s of the {cover.total / config.fps:.1f} s of video in {name} "
        f"has sound under it ({heard}, the first frame being 0 s); at least {config.min_seconds:g} s is "
        "needed to learn lip motion",
        "use the clip with its whole sound track (or cut the video to the part with sound); --min-seconds "
        "lowers the limit",
    )


def _track(config: PrepareConfig, source: Source, t0: int, t1: int):
    """Landmarks (T, 478, 3), valid (T,), face counts (T,), blendshapes (T, 52) or None and their names,
    for the video's frames t0 … t1 - 1."""
    n = t1 - t0
    landmarks = np.zeros((n, N_LANDMARKS, 3), np.float32)
    valid = np.zeros(n, bool)
    n_faces = np.zeros(n, np.int16)
    blend = np.zeros((n, N_BLENDSHAPES), np.float32) if config.landmarker else None
    with FaceTracker(config.landmarker, fps=config.fps) as tracker, bar(config, n, "track") as progress:
        for k, rgb in source.frames(config.fps, t0, t1):
            i = k - t0
            obs = tracker.track(rgb)
            if obs is not None:
                landmarks[i], valid[i], n_faces[i] = obs.landmarks, True, obs.n_faces
                if blend is not None and obs.blendshapes is not None:
                    blend[i] = obs.blendshapes
            progress.update()
        names = list(tracker.blendshape_names or [])
    return landmarks, valid, n_faces, blend, names


def _lost_runs(valid: np.ndarray) -> list[tuple[int, int]]:
    runs, start = [], None
    for i, v in enumerate(np.append(valid, True)):
        if not v and start is None:
            start = i
        elif v and start is not None:
            runs.append((start, i))
            start = None
    return runs


def _check_tracking(config: PrepareConfig, name: str, valid: np.ndarray) -> None:
    if not valid.any():
        raise GstalkError(
            f"no face was found in {name}",
            "use a video where the person's face is visible and turned toward the camera",
        )
    lost = 1 - valid.mean()
    runs = _lost_runs(valid)
    longest = max((b - a for a, b in runs), default=0) / config.fps
    if lost > config.max_lost_fraction or longest > config.max_lost_seconds:
        spans = ", ".join(
            f"{a / config.fps:.1f}–{b / config.fps:.1f} s"
            for a, b in sorted(runs, key=lambda r: r[0] - r[1])[:5]
        )
        raise GstalkError(
            f"the face is lost in {lost:.0%} of the frames of {name} "
            f"(longest stretch {longest:.1f} s; "
            f"lost at {spans})",
            "cut the video to the part where the face is visible, or raise --max-lost-fraction / "
            "--max-lost-seconds",
        )


def _shown(source: Source) -> dict:
    """The video as stored and as a player shows it."""
    info = source.info
    display = info.display
    return {
        "stored_size": [info.stored_width or info.width, info.stored_height or info.height],
        "shown_size": [info.width, info.height],
        "rotation_deg": display.rotation,
        "mirrored": display.mirrored,
        "sample_aspect_ratio": f"{display.sar.numerator}:{display.sar.denominator}",
        "start_s": round(info.start, 4),
    }


def _advice(config: PrepareConfig, source: Source, kept: Coverage, check) -> tuple[list[str], list[str]]:
    """Notes and warnings about the clip's timeline and picture, shown now and kept in summary.json."""
    notes, warnings = [], []
    info = source.info
    display = info.display
    if display.describe():
        notes.append(f"the video's display matrix turns its frames ({display.describe()}); they were turned "
                     "as players show them")  # fmt: skip
    if display.sar != 1:
        notes.append(f"the video's pixels are not square (sample aspect ratio {display.sar}); its frames "
                     f"were resampled to {info.width}×{info.height} as players show them")  # fmt: skip
    if not kept.complete:
        (warnings if kept.kept < 0.5 * kept.total else notes).append(kept.describe())
    if check.message:
        (warnings if check.warns else notes).append(check.message)
    for text in notes:
        say(config, "note: " + text)
    for text in warnings:
        say(config, "warning: " + text)
    return notes, warnings
