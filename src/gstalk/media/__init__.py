"""Decoding and encoding video and audio (PyAV) as a player shows them, on one timeline; resampling in
time, muxing; audio features."""

from .audio import AUDIO_RATE, TimedAudio, decode_audio, read_audio
from .clip import Coverage, PairedClip, coverage, read_paired
from .video import VideoInfo, probe_video, read_frames

__all__ = [
    "AUDIO_RATE",
    "Coverage",
    "PairedClip",
    "TimedAudio",
    "VideoInfo",
    "coverage",
    "decode_audio",
    "probe_video",
    "read_audio",
    "read_frames",
    "read_paired",
]
