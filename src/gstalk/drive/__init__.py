"""Audio → frames → video, whole files or streamed."""

from .driver import Driver, PoseSource, pingpong
from .stream import stream_frames
from .video import render_video

__all__ = ["Driver", "PoseSource", "pingpong", "render_video", "stream_frames"]
