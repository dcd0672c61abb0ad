"""A corpus of many people talking, for the motion prior: each clip tracked once and kept as a typed record.

A corpus is a folder of talking clips, one person each, named ``<identity>_<language>_<seconds>s.<ext>``
as in ``../shared/data/corpus`` (the same person in two clips has the same identity, so folds split by
person, never by clip); other names count as their own identity with no language. Each clip is read as a
player shows it (``media.read_paired``: the frames with sound under them, and that sound), its face
tracked (``face.track``) and its 478 landmarks aligned to its own canonical head (``face.pose``): the
same head-frame mesh ``gstalk prepare`` stores, with no crop, regions or camera, which the prior does not
need. :class:`CorpusClip` is the record, stored as ``NAME.npz`` and ``NAME.json`` in a folder
(:func:`track_corpus`, which skips the clips already there, so an interrupted run resumes).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import GstalkError
from ..face.pose import canonical_shape, normalise_landmarks
from ..face.track import track_frames
from ..fileio import atomic_path, write_json_atomic
from ..media import read_paired
from ..media.audio import AUDIO_RATE

#: video files a corpus folder may hold
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
_NAME = re.compile(r"^(?P<identity>.+)_(?P<language>[a-z]{2,3})_\d+s$")


@dataclass
class CorpusClip:
    """One tracked corpus clip: frames at ``fps`` with sound under them, and that sound."""

    name: str
    """The file's stem."""
    identity: str
    language: str
    fps: float
    landmarks: np.ndarray
    """(T, 478, 3) float32 pixels of the video (x, y; z MediaPipe's relative depth); zeros where lost."""
    valid: np.ndarray
    """(T,) bool: the face was found."""
    mesh: np.ndarray
    """(T, 478, 3) float32 metres: the landmarks aligned to the canonical head on the rigid points."""
    audio: np.ndarray
    """(round(T · 16000 / fps),) float32 mono 16 kHz; sample 0 at frame 0's instant."""

    @property
    def seconds(self) -> float:
        return len(self.valid) / self.fps

    def save(self, folder: Path) -> None:
        """Write ``NAME.npz`` (arrays) and ``NAME.json`` (the rest) into ``folder``, each atomically, the
        JSON last (its presence says the clip is complete)."""
        with atomic_path(folder / f"{self.name}.npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, landmarks=self.landmarks, valid=self.valid, mesh=self.mesh, audio=self.audio)
        info = {k: v for k, v in asdict(self).items() if not isinstance(v, np.ndarray)}
        write_json_atomic(folder / f"{self.name}.json", info)

    @classmethod
    def load(cls, folder: Path, name: str) -> CorpusClip:
        """The record of clip ``name`` in ``folder``. Raises :class:`GstalkError` when it is damaged."""
        try:
            info = json.loads((folder / f"{name}.json").read_text())
            with np.load(folder / f"{name}.npz") as data:
                arrays = {k: data[k] for k in ("landmarks", "valid", "mesh", "audio")}
            return cls(**info, **arrays)
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise GstalkError(
                f"the tracked corpus clip {name} in {folder} is damaged ({err})",
                f"delete {folder / name}.json and run the same command again",
            ) from err


def identity_of(stem: str) -> tuple[str, str]:
    """(identity, language) of a corpus file's stem ``<identity>_<language>_<seconds>s``; a stem not named
    so is its own identity, with language ``""``."""
    m = _NAME.match(stem)
    return (m.group("identity"), m.group("language")) if m else (stem, "")


def corpus_videos(folder: Path) -> list[Path]:
    """The corpus's video files, sorted by name. Raises :class:`GstalkError` when ``folder`` is not a
    folder, holds none, or holds fewer than two people (folds need at least two)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GstalkError(
            f"no corpus folder at {folder}",
            "pass a folder of talking clips, one person each (e.g. ../shared/data/corpus)",
        )
    videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    people = {identity_of(p.stem)[0] for p in videos}
    if len(people) < 2:
        raise GstalkError(
            f"{folder} holds clips of {len(people)} people; a prior needs at least two",
            "add talking clips of more people, named <identity>_<language>_<seconds>s.mp4",
        )
    return videos


def track_clip(path: Path, fps: float = 25.0) -> CorpusClip:
    """Track one corpus clip (see the module docstring). Raises :class:`GstalkError` when it has no frame
    with sound under it, or the face is found in fewer than half of its frames."""
    clip = read_paired(path, fps)
    landmarks, valid = track_frames(clip.frames, fps)
    if valid.mean() < 0.5:
        raise GstalkError(f"the face is found in only {valid.mean():.0%} of {path.name}'s frames",
                          "leave this clip out of the corpus (one frontal face per clip)")  # fmt: skip
    canonical = canonical_shape(landmarks, valid)
    mesh = normalise_landmarks(landmarks, canonical, valid)
    identity, language = identity_of(path.stem)
    audio = np.asarray(clip.audio, np.float32)
    if clip.rate != AUDIO_RATE:
        raise GstalkError(f"{path.name}'s sound came at {clip.rate} Hz", "report this as a bug")
    return CorpusClip(path.stem, identity, language, fps, landmarks, valid, mesh, audio)


def track_corpus(videos: list[Path], folder: Path, fps: float = 25.0, say=print) -> list[CorpusClip]:
    """Every clip of ``videos`` tracked, from ``folder`` where an earlier run left it, else tracked now and
    saved there. ``say``: where progress lines go."""
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for k, path in enumerate(videos):
        if (folder / f"{path.stem}.json").is_file():
            clip = CorpusClip.load(folder, path.stem)
        else:
            clip = track_clip(path, fps)
            clip.save(folder)
            say(f"tracked {path.name} ({k + 1}/{len(videos)}): {len(clip.valid)} frames, "
                f"face found in {clip.valid.mean():.0%}")  # fmt: skip
        clips.append(clip)
    return clips


__all__ = ["CorpusClip", "corpus_videos", "identity_of", "track_clip", "track_corpus"]
