"""gstalk: audio-driven 3D Gaussian Splatting talking heads."""

import os

# OpenMP threads (PyTorch's) that wait passively for work instead of spinning: with spinning, two
# processes on 2 cores ran at a fifth of their solo speed each. Read once, when PyTorch loads, so it is
# set here, before anything imports torch; an explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

#: Bumped whenever an on-disk format (dataset manifest, run folder, checkpoint) changes incompatibly.
SCHEMA_VERSION = 2
