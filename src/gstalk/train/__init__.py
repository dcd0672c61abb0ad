"""Losses, the staged training loop, densification and checkpoints."""

from .trainer import Trainer, train

__all__ = ["Trainer", "train"]
