"""Where computation runs: the one place that turns ``--device auto|cpu|cuda`` into a torch device."""

from __future__ import annotations

import torch

from .errors import GstalkError


def pick_device(name: str | torch.device) -> torch.device:
    """``auto`` picks CUDA when a GPU is usable; asking for CUDA without one is a clear error."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GstalkError("--device cuda was asked for, but no CUDA GPU is available", "use --device cpu")
    if name not in ("cpu", "cuda"):
        raise GstalkError(f"unknown device {name!r}", "use --device auto, cpu or cuda")
    return torch.device(name)
