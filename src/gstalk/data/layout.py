"""File names inside a dataset folder: one place, read by the reader and the writer alike.

manifest.json        what is here (``data.manifest``)
config.json          the PrepareConfig that made it
summary.json         tracking, pose, coverage and sync figures, warnings (``data.summary``)
frames/000000.jpg    the cropped frames (size × size, RGB)
regions/000000.png   uint8 Region label maps
background.png       the static background plate
audio.wav            16 kHz mono speech
audio_features.npy   (T, W, C) float16, audio windows aligned to frames
tracks.npz           per-frame tracking, pose and expression (``data.tracks``)
contact_sheet.png, timeline.png   visual checks

No other module spells these names: they import them from here.
"""

from __future__ import annotations

from pathlib import Path

MANIFEST = "manifest.json"
CONFIG = "config.json"
SUMMARY = "summary.json"
FRAMES = "frames"
REGIONS = "regions"
BACKGROUND = "background.png"
AUDIO = "audio.wav"
AUDIO_FEATURES = "audio_features.npy"
TRACKS = "tracks.npz"
CONTACT_SHEET = "contact_sheet.png"
TIMELINE = "timeline.png"


def frame_name(index: int, ext: str) -> str:
    return f"{index:06d}.{ext}"


def frame_path(root: Path, index: int) -> Path:
    return Path(root) / FRAMES / frame_name(index, "jpg")


def region_path(root: Path, index: int) -> Path:
    return Path(root) / REGIONS / frame_name(index, "png")
