"""Video → dataset: the prepare pipeline's steps (tracking, pose, crop, regions, background, audio and
expression features), written through ``data``."""

from .pipeline import prepare
from .sources import import_ernerf

__all__ = ["import_ernerf", "prepare"]
