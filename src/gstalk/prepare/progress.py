"""What ``prepare`` shows while it works: one line per note, one progress bar per step."""

from __future__ import annotations

from tqdm import tqdm

from ..config import PrepareConfig


def say(config: PrepareConfig, text: str) -> None:
    """Print ``gstalk prepare: text`` above the bars (nothing with ``--no-progress``)."""
    if config.progress:
        tqdm.write(f"gstalk prepare: {text}")


def bar(config: PrepareConfig, total: int, desc: str) -> tqdm:
    """A progress bar of ``total`` frames (disabled with ``--no-progress``)."""
    return tqdm(total=total, desc=f"{desc:<10}", unit="frame", disable=not config.progress, leave=True)
