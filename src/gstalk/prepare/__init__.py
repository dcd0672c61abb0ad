"""Video → dataset: tracking, pose, crop, regions, background, audio and expression features."""

from .pipeline import prepare

__all__ = ["prepare"]
