"""Video → dataset: the prepare pipeline's steps (tracking, pose, crop, regions, background, audio and
expression features), written through ``data``."""

from .pipeline import import_ernerf, prepare

__all__ = ["import_ernerf", "prepare"]
