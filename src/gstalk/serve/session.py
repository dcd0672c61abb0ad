"""One visitor's session, on the front end: what was sent, what came back, and what the page takes.

The render worker (``serve.worker``) hands every frame it renders to the front end; the session records
it (for the download) and offers it to the page's sender through a one-frame outbox: a frame the page
has not taken when the next is ready is replaced (a slow client gets fewer frames, never a growing queue).
The session keeps its audio and frames, bounded by its maximum duration, so the page can download it as
an mp4.
"""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

import cv2
import numpy as np

from ..media.audio import AUDIO_RATE
from ..media.encode import write_video
from .worker import AvatarInfo, Frame

#: hops from the worker kept for the session's statistics (the newest)
KEPT_TRANSITS = 500


class Session:
    """Audio in (:meth:`add_audio`), frames out (:meth:`offer` → ``outbox``), on one asyncio loop."""

    def __init__(self, session: str, avatar: AvatarInfo, max_seconds: float) -> None:
        self.id = session
        self.avatar = avatar
        self.max_seconds = max_seconds
        self.outbox: asyncio.Queue[Frame | None] = asyncio.Queue()  # at most one frame, then the end
        self.audio: list[np.ndarray] = []
        self.frames: dict[int, bytes] = {}  # frame index → JPEG, as rendered (skipped frames absent)
        self.received = 0  # samples
        self.rendered = 0
        self.skipped = 0  # by the worker, to keep up with the audio
        self.replaced = 0  # in the outbox, for a page slower than the frames
        # seconds from the worker's encoding to the front end, per frame (the newest)
        self.transit: collections.deque[float] = collections.deque(maxlen=KEPT_TRANSITS)
        self.started = time.perf_counter()
        self.opened_at = time.monotonic()  # for the session's time limit and audio rate (serve.app)
        self.closed = False
        self.complete = False  # every frame was rendered and offered to the page
        self.ending = False  # the audio has ended (the page said so, or the length limit was reached)

    @property
    def seconds(self) -> float:
        return self.received / AUDIO_RATE

    @property
    def dropped(self) -> int:
        return self.skipped + self.replaced

    def add_audio(self, samples: np.ndarray) -> np.ndarray:
        """Record 16 kHz mono float32 samples; returns those within the session's length (to render)."""
        room = int(self.max_seconds * AUDIO_RATE) - self.received
        samples = samples[: max(room, 0)]
        if not len(samples) or self.closed or self.ending:
            return samples[:0]
        self.received += len(samples)
        self.audio.append(samples)
        return samples

    def record(self, frame: Frame) -> None:
        """Keep a frame the worker rendered (for the download and the statistics)."""
        if self.closed:
            return
        self.frames[frame.index] = frame.jpeg
        self.rendered += 1
        self.skipped = frame.skipped
        self.transit.append(time.time() - frame.ready_at)

    def offer(self, item: Frame | None) -> None:
        """Hand the newest frame to the page's sender, replacing one it has not taken yet. The end marker
        (None) always goes after the last frame, which it never replaces."""
        if item is not None and not self.outbox.empty():
            self.outbox.get_nowait()  # an unsent frame (the end marker is only ever offered last)
            self.replaced += 1
        self.outbox.put_nowait(item)

    def close(self) -> None:
        """The page went away, or the session was dropped: free what it held."""
        self.closed = True
        self.audio, self.frames = [], {}

    def write_mp4(self, path: Path) -> Path:
        """The session so far as an H.264 + AAC mp4: every frame index up to the last rendered one, a
        skipped frame showing the one before it, so the video stays in step with its audio."""
        frames, fps = dict(self.frames), self.avatar.fps
        n = max(frames) + 1 if frames else 0

        def images():
            last = None
            for k in range(n):
                last = frames.get(k, last)
                if last is not None:
                    yield cv2.imdecode(np.frombuffer(last, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]

        audio = np.concatenate(self.audio) if self.audio else np.zeros(0, np.float32)
        first = min(frames) if frames else 0  # frames before the first rendered one are not in the video
        write_video(path, images(), fps, audio[round(first / fps * AUDIO_RATE) : round(n / fps * AUDIO_RATE)])
        return path

    def stats(self) -> dict:
        """What the page shows: audio received (s), frames rendered and dropped, frames/s, and the hop
        from the worker to the front end (median, ms)."""
        transit = float(np.median(self.transit)) * 1000 if self.transit else None
        return {
            "type": "stats",
            "audio_seconds": round(self.seconds, 2),
            "rendered": self.rendered,
            "dropped": self.dropped,
            "render_fps": round(self.rendered / max(time.perf_counter() - self.started, 1e-6), 1),
            "worker_hop_ms": None if transit is None else round(transit, 2),
        }
