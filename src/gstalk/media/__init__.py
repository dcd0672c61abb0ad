"""Decoding and encoding video and audio (PyAV), resampling in time, muxing; audio features."""

from .audio import AUDIO_RATE, read_audio
from .video import VideoInfo, probe_video, read_frames

__all__ = ["AUDIO_RATE", "VideoInfo", "probe_video", "read_audio", "read_frames"]
