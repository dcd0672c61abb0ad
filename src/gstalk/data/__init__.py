"""The prepared dataset on disk: manifest, lazy loading, splits, ER-NeRF / TalkingGaussian interop."""

from .dataset import Dataset, Frame, load_dataset

__all__ = ["Dataset", "Frame", "load_dataset"]
