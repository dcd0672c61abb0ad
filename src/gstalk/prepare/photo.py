"""One photo as ``prepare``'s input (``gstalk prepare --image photo.jpg``): the one-shot path.

A photo is a dataset of one frame: its tracked mesh, pose, regions and real-pixel layer are made by the
same steps as a clip's; what differs is here:

- :class:`PhotoSource`: the image, upright (its EXIF orientation applied), as the one frame of a source
  with no sound;
- :func:`photo_track_step`: exactly one face, large enough, or an error that names the problem and the
  fix (no face; two or more faces; a face under :data:`MIN_FACE_PX` pixels from forehead to chin);
- :func:`silent_speech`: a photo has no speech, so the dataset's sound is one frame of digital silence,
  whose features record the ``AudioSpec`` that new speech will be computed with.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..config import PrepareConfig
from ..errors import GstalkError
from ..face.landmarks import CHIN, FOREHEAD
from ..face.track import FaceTracker
from ..media import AUDIO_RATE, TimedAudio
from ..media.video import VideoInfo
from .sources import Source
from .work import Timing, Tracked

#: a face smaller than this, forehead to chin in the photo's pixels, is refused: the dataset's 512² crop
#: spans 2.6 face heights, so such a face would be enlarged more than 2.5× (prepare warns past 2×)
MIN_FACE_PX = 80

#: the field of view of a photo's crop, unless --fov-deg says otherwise: one view cannot separate the lens
#: from the distance (prepare's fit of a still head falls to about 9°, nearly orthographic); 30° is a
#: face about a metre from the lens, and what the CNN clip's 71 s gave (34°)
PHOTO_FOV_DEG = 30.0

#: what a dataset made from a photo records in its manifest's ``extra``
PHOTO_KIND = "photo"


class PhotoSource(Source):
    """One photo (JPEG, PNG, WebP, ...) as a source of one frame and no sound."""

    def __init__(self, path: str | Path, fps: float = 25.0) -> None:
        self.path = Path(path)
        self.name = str(path)
        self.rgb = read_photo(self.path)
        h, w = self.rgb.shape[:2]
        self.info = VideoInfo(self.name, w, h, fps, 1.0 / fps, "image", False, None, None, w, h)

    def frames(self, fps: float, first: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        if first <= 0 and (stop is None or stop > 0):
            yield 0, self.rgb

    def audio(self) -> TimedAudio:
        return TimedAudio(np.zeros(0, np.float32), 0.0)


def read_photo(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of the image at ``path``, turned upright by its EXIF orientation; GstalkError
    for a missing or unreadable file."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not path.is_file():
        raise GstalkError(f"no such image: {path}", "check the path given to --image")
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            rgb = np.asarray(image.convert("RGB"), np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise GstalkError(
            f"{path} is not an image gstalk can read ({err})", "give a JPEG, PNG or WebP photo to --image"
        ) from err
    if min(rgb.shape[:2]) < 32:
        raise GstalkError(f"{path} is only {rgb.shape[1]}×{rgb.shape[0]} pixels", "use a larger photo")
    return np.ascontiguousarray(rgb)


def face_height_px(landmarks: np.ndarray) -> float:
    """Forehead-to-chin distance of (478, >=2) landmarks, in their pixels."""
    return float(np.linalg.norm(landmarks[FOREHEAD, :2] - landmarks[CHIN, :2]))


def photo_track_step(config: PrepareConfig, source: PhotoSource) -> tuple[Tracked, Timing]:
    """The photo's one face (or an error naming what is wrong with the photo), as the ``track`` step's
    records of a one-frame dataset with one frame of silence."""
    with FaceTracker(config.landmarker, fps=config.fps) as tracker:
        faces = len(tracker._detect(source.rgb))
        obs = tracker.track(source.rgb) if faces else None
        names = list(tracker.blendshape_names or [])
    if obs is None:
        raise GstalkError(
            f"no face was found in {source.name}",
            "use a photo where the person's face is visible, turned toward the camera and well lit",
        )
    if faces > 1:
        raise GstalkError(
            f"{faces} faces were found in {source.name}; a one-shot avatar is made from one person",
            "crop the photo to the one person you want",
        )
    height = face_height_px(obs.landmarks)
    if height < MIN_FACE_PX:
        raise GstalkError(
            f"the face in {source.name} is {height:.0f} px from forehead to chin; at least {MIN_FACE_PX} "
            f"px is needed (about {round(config.size / config.crop_scale)} px for a sharp {config.size}² "
            "avatar)",
            "use a closer or larger photo of the face (or crop the photo around the face without "
            "shrinking it)",
        )
    blend = None if obs.blendshapes is None else obs.blendshapes[None]
    speech = silent_speech(config)
    n_faces = np.array([faces], np.int16)
    tracked = Tracked(obs.landmarks[None], np.ones(1, bool), n_faces, speech, names, blend)
    cover = {"first_frame": 0, "frames_kept": 1, "frames_in_video": 1, "photo": True}
    sync = {"verdict": "a photo: no sound to check", "offset_s": None}
    shown = {"shown_size": [source.info.width, source.info.height], "photo": True}
    note = f"one photo, the face {height:.0f} px from forehead to chin"
    return tracked, Timing(0, 1, cover, sync, shown, [note], [])


def silent_speech(config: PrepareConfig) -> np.ndarray:
    """One frame of digital silence at 16 kHz: a photo's sound."""
    return np.zeros(round(AUDIO_RATE / config.fps), np.float32)


__all__ = [
    "MIN_FACE_PX",
    "PHOTO_FOV_DEG",
    "PHOTO_KIND",
    "PhotoSource",
    "face_height_px",
    "photo_track_step",
    "read_photo",
]
