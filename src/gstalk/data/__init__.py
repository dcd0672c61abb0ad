"""The typed dataset contract: manifest, tracks, file layout, the reader and the writer, per-frame inputs,
and ER-NeRF / TalkingGaussian interop."""

from .dataset import Dataset, load_dataset
from .manifest import AudioSpec, ExpressionSpec, Manifest, SourceInfo
from .tracks import Tracks
from .writer import DatasetWriter

__all__ = [
    "AudioSpec",
    "Dataset",
    "DatasetWriter",
    "ExpressionSpec",
    "Manifest",
    "SourceInfo",
    "Tracks",
    "load_dataset",
]
