"""Shared fixtures: small generated clips (a real face, known motion) and the optional ../shared data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_DATA = SHARED / "data"


def shared_file(*parts: str) -> Path:
    """A file under ../shared, or skip the test when it is absent (fresh machines, CI without data)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (../shared is absent)")
    return path


@pytest.fixture(scope="session")
def demo_clip(tmp_path_factory) -> Path:
    """4 s of the animated astronaut: a real face whose mouth opening follows generated speech."""
    from gstalk.demo import make_demo_subject

    return make_demo_subject(tmp_path_factory.mktemp("clips") / "astronaut.mp4", seconds=4.0, seed=3)


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory, demo_clip) -> Path:
    """The demo clip prepared at 128² (the whole pipeline, about 15 s on 2 cores)."""
    from gstalk.config import PrepareConfig
    from gstalk.prepare import prepare

    out = tmp_path_factory.mktemp("datasets") / "astronaut"
    return prepare(PrepareConfig(video=demo_clip, out=out, size=128, progress=False))


def solid_frames(n: int, size: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield np.full((size, size, 3), rng.integers(0, 255, 3), np.uint8)
