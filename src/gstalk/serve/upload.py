"""Driving videos uploaded to ``gstalk serve``: received within the limits, kept briefly, their sound for
the page.

A visitor who drops a video (rather than an audio file) on the page has the avatar follow the face in it:

1. ``POST /drive`` (the page's ``fetch``, through the same Host, Origin, token and rate checks as every
   route): the body is the file, read in chunks and refused past ``--max-upload-mb`` (413). The front end
   probes it and decodes its sound with ``media`` (upright video, one timeline: sample 0 at the first shown
   frame), at most ``--max-session-seconds`` of it, and keeps the file's bytes in memory under a random
   id (never a path), for a few minutes, one use, at most :data:`KEPT_UPLOADS` at once (the oldest are
   dropped). Nothing is written to disk but a private temporary file while it is probed, removed at once.
2. ``GET /drive/ID.wav``: that sound, 16 kHz mono, which the page decodes and plays as it plays an audio
   file, sending it to the server as it plays: the frames stay in step with it as they do with speech.
3. The WebSocket's ``start`` names the upload (``"drive": ID``, and ``"drive_pose": true`` to follow the
   head too); the render worker tracks the video (``drive.reenact``) before it answers ``ready``.
"""

from __future__ import annotations

import io
import secrets
import tempfile
import time
import wave
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import GstalkError
from ..media import probe_video, read_audio
from ..media.audio import AUDIO_RATE

#: uploads kept at once (the oldest unused are dropped first)
KEPT_UPLOADS = 4
#: seconds an unused upload is kept
UPLOAD_TTL = 600.0
#: bytes read from the request at a time
CHUNK = 1 << 16


@dataclass
class Upload:
    """A driving video as received: its bytes, its sound as a WAV for the page, its length (seconds)."""

    video: bytes
    wav: bytes
    seconds: float
    has_sound: bool
    created: float


def upload_sound(video: bytes, max_seconds: float, folder: Path) -> tuple[bytes, float, bool]:
    """(WAV bytes, seconds, whether it has a sound track) of an uploaded video: its sound from its first
    shown frame, 16 kHz mono 16-bit, as long as its picture (silence where it has none) and at most
    ``max_seconds``. The bytes are probed through a private temporary file in ``folder``, removed before
    this returns. Raises GstalkError for a file that is not a video."""
    with tempfile.NamedTemporaryFile(dir=folder, prefix="upload-", suffix=".video") as tmp:
        tmp.write(video)
        tmp.flush()
        info = probe_video(tmp.name)
        seconds = min(info.duration, max_seconds)
        n = int(seconds * AUDIO_RATE)
        if seconds <= 0:
            raise GstalkError("the uploaded video holds no frame", "upload a video of a face talking")
        sound = read_audio(tmp.name, AUDIO_RATE) if info.has_audio else np.zeros(0, np.float32)
    samples = np.pad(sound[:n], (0, max(0, n - len(sound))))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(AUDIO_RATE)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue(), seconds, info.has_audio


class Uploads:
    """The uploads kept for their sessions: by random id, one use each (:meth:`take`), at most
    ``KEPT_UPLOADS``, each for ``UPLOAD_TTL`` seconds."""

    def __init__(self) -> None:
        self.kept: OrderedDict[str, Upload] = OrderedDict()

    def add(self, upload: Upload) -> str:
        self._expire()
        key = secrets.token_urlsafe(12)
        self.kept[key] = upload
        while len(self.kept) > KEPT_UPLOADS:
            self.kept.popitem(last=False)
        return key

    def get(self, key: object) -> Upload | None:
        self._expire()
        return self.kept.get(key) if isinstance(key, str) else None

    def take(self, key: object) -> Upload | None:
        """The upload, removed (a session uses it once)."""
        self._expire()
        return self.kept.pop(key, None) if isinstance(key, str) else None

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, u in self.kept.items() if now - u.created > UPLOAD_TTL]:
            del self.kept[key]
