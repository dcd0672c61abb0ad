"""Dataclass configs: every CLI subcommand is generated from one of these, and saved beside its output."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from . import SCHEMA_VERSION, __version__
from .fileio import write_json_atomic

Device = Literal["auto", "cpu", "cuda"]


@dataclass
class BenchConfig:
    """Measure rendering speed (and, as they land, training and preparation speed); prints JSON."""

    sizes: tuple[int, ...] = (256, 512)
    """Square image sizes in pixels."""
    gaussians: tuple[int, ...] = (5_000, 20_000, 50_000)
    """Numbers of Gaussians in the synthetic head scene."""
    backends: tuple[Literal["torch", "gsplat"], ...] = ("torch", "gsplat")
    """Backends to measure; ones not usable on this machine are reported as skipped."""
    device: Device = "auto"
    """Where the torch backend runs: auto picks CUDA when present."""
    camera_batch: int = 1
    """Cameras rendered per call (frames/s counts every camera)."""
    repeats: int = 5
    """Timed repetitions after one warm-up; the median is reported."""
    backward: bool = True
    """Also time forward+backward."""
    out: Path | None = None
    """Also write the JSON here (its config is saved beside it)."""


@dataclass
class PrepareConfig:
    """Turn a talking-head video into a training dataset (offline: every model ships with the packages)."""

    video: Path
    """The input video (mp4, mov, mkv, webm; any frame rate or resolution) with the person's speech."""
    out: Path
    """The dataset folder to write. Built under a temporary name and moved into place when complete."""
    fps: float = 25.0
    """Frame rate of the dataset; the video is resampled by timestamps (variable frame rate is fine)."""
    size: int = 512
    """Side of the square crop around the head, in pixels."""
    landmarker: Path | None = None
    """A MediaPipe face_landmarker.task bundle: also records 52 blendshapes as the expression code."""
    audio_features: Literal["logmel", "hubert", "wav2vec2"] = "logmel"
    """Audio features: built-in log-mel (no weights), or a local HuBERT / wav2vec 2.0 model."""
    speech_model: Path | None = None
    """Folder of the HuBERT / wav2vec 2.0 model (transformers save_pretrained layout)."""
    test_fraction: float = 1 / 11
    """The last part of the clip held out for testing (the papers use 1/11)."""
    crop_scale: float = 2.6
    """Crop side in face heights (forehead to chin): room for hair, neck and shoulders."""
    fov_deg: float | None = None
    """Horizontal field of view of the crop in degrees; estimated from the landmarks when not given."""
    pose_smoothing: float = 1.5
    """Sigma, in frames, of the zero-phase Gaussian smoothing of head poses (0: none)."""
    min_seconds: float = 3.0
    """Shortest clip accepted."""
    max_lost_fraction: float = 0.25
    """Refuse the clip when the face is lost in more than this fraction of frames."""
    max_lost_seconds: float = 3.0
    """Refuse the clip when the face is lost for longer than this in one stretch."""
    background_samples: int = 60
    """Frames sampled for the static background plate."""
    jpeg_quality: int = 95
    """Quality of the stored frames."""
    device: Device = "auto"
    """Where a speech model runs."""
    overwrite: bool = False
    """Replace an existing dataset at --out."""
    progress: bool = True
    """Show a progress bar for each step."""


def config_to_dict(config: Any) -> dict[str, Any]:
    return {
        "kind": type(config).__name__,
        "gstalk_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "config": json.loads(json.dumps(dataclasses.asdict(config), default=str)),
    }


def config_hash(config: Any, ignore: tuple[str, ...] = ()) -> str:
    """A short hash of the config's values (minus ``ignore``): same hash, same output."""
    import hashlib

    values = {k: v for k, v in config_to_dict(config)["config"].items() if k not in ignore}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def save_config(config: Any, folder: str | Path, name: str = "config.json") -> Path:
    """Write ``config`` (a dataclass) as JSON into ``folder`` atomically; returns the file's path."""
    path = Path(folder) / name
    write_json_atomic(path, config_to_dict(config))
    return path


__all__ = ["BenchConfig", "PrepareConfig", "config_hash", "config_to_dict", "save_config"]
