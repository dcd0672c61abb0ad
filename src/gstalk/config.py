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


def config_to_dict(config: Any) -> dict[str, Any]:
    return {
        "kind": type(config).__name__,
        "gstalk_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "config": json.loads(json.dumps(dataclasses.asdict(config), default=str)),
    }


def save_config(config: Any, folder: str | Path, name: str = "config.json") -> Path:
    """Write ``config`` (a dataclass) as JSON into ``folder`` atomically; returns the file's path."""
    path = Path(folder) / name
    write_json_atomic(path, config_to_dict(config))
    return path


__all__ = ["BenchConfig", "config_to_dict", "save_config"]
