"""The render-worker interface of ``gstalk serve``, and its in-process implementation.

The front end (``serve.app``: the page, the WebSocket, the checks and limits) talks to a render worker
through five calls, whatever runs it:

- ``open(avatar, drive=None) → Opened``: a new session, or :class:`Busy` when the worker is full; with a
  :class:`DriveRequest`, a session whose avatar follows the face in an uploaded video (tracked by the
  worker before it answers) instead of the audio;
- ``push(session, audio)``: 16 kHz mono float32 samples as they arrive;
- ``frames(session)``: every frame the session renders, as it is ready, ending after the last one (and
  any :class:`Notice` for the page on the way);
- ``finish(session)``: no more audio (the remaining frames are rendered, then ``frames`` ends);
- ``close(session)``: the page went away (stop, free the slot).

Frames come back as a stream rather than as ``push``'s answer because a frame completes on its own
clock (one frame's compute after the audio its lookahead needs), not on the 20 ms rhythm of the audio.
A session that cannot go on ends its ``frames`` with :class:`SessionLost` and a message for the page.

:class:`~gstalk.serve.local.LocalWorker` is today's single process: a speech thread and a render thread
shared fairly by its sessions (``serve.render``), a cap on sessions. The Ray Serve replicas
(``serve.replica``) each hold a ``LocalWorker``; ``serve.cluster.RayWorker`` is the front end's side of
them. This module holds only the interface and what crosses it, so the front end of a Ray cluster imports
no model code (no PyTorch).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Frame:
    """A rendered frame on its way to the page.

    ``audio_seconds``: audio the worker had received when it was ready; ``skipped``: frames this session
    has skipped so far to keep up; ``ready_at``: wall-clock time (``time.time()``, seconds) it was encoded,
    so the front end can measure the hop from the worker."""

    index: int
    jpeg: bytes
    audio_seconds: float
    skipped: int
    ready_at: float


@dataclass(frozen=True)
class Notice:
    """Something the page should show mid-session (e.g. its audio was dropped for arriving too fast)."""

    message: str


class SessionFailed(Exception):
    """Rendering failed for one session (the worker goes on)."""


#: what a render session hands out: a frame, a notice, None (the last frame was emitted), or its failure
Emitted = Frame | Notice | SessionFailed | None


class Busy(Exception):
    """Every session slot is taken; the message says so to the page."""


class SessionLost(Exception):
    """The session cannot go on (its worker stopped, or its render failed); the message is for the page."""


@dataclass(frozen=True)
class AvatarInfo:
    """What the front end tells the page about an avatar: frame size (pixels), frame rate (frames/s), and
    the stream's lookahead (seconds of audio a frame waits for)."""

    name: str
    size: int
    fps: float
    lookahead: float


@dataclass(frozen=True)
class DriveRequest:
    """An uploaded driving video for a session (``serve.app``'s ``POST /drive``): the file's bytes (at most
    ``--max-upload-mb``), and whether the avatar also follows the driving head's pose. The worker tracks
    it (``drive.reenact``); the page sends the video's sound as it plays it, which paces the frames."""

    video: bytes
    pose: bool = False


@dataclass(frozen=True)
class Opened:
    """A session the worker opened: its id and its avatar."""

    session: str
    avatar: AvatarInfo


class RenderWorker(Protocol):
    """The render side of ``gstalk serve`` (see the module docstring)."""

    avatars: dict[str, AvatarInfo]

    async def open(self, avatar: str, drive: DriveRequest | None = None) -> Opened: ...
    async def push(self, session: str, audio: np.ndarray) -> None: ...
    def frames(self, session: str) -> AsyncIterator[Frame | Notice]: ...
    async def finish(self, session: str) -> None: ...
    async def close(self, session: str) -> None: ...
    async def stop(self) -> None: ...
