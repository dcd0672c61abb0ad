"""gstalk: audio-driven 3D Gaussian Splatting talking heads."""

__version__ = "0.1.0"

#: Bumped whenever an on-disk format (dataset manifest, run folder, checkpoint) changes incompatibly.
SCHEMA_VERSION = 2
