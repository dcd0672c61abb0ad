"""A dataset's validation pass (``gstalk check``, and the start of ``train``): every problem at once.

Loading a dataset already checks its manifest (format, schema version), the tracks (lengths, finite values,
triangle indices) and the audio features' shape. This adds what loading leaves to first use: every frame
and label map exists, is complete and decodes at the dataset's size, label values are regions, the audio
features are finite, and the audio and background are readable. Files are decoded on a few threads; a
five-minute dataset takes seconds.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import soundfile

from ..errors import GstalkError
from ..regions import Region
from .dataset import Dataset
from .layout import BACKGROUND, frame_path, region_path

JPEG_END = b"\xff\xd9"


def dataset_problems(root: str | Path, threads: int = 4) -> list[str]:
    """Everything wrong with the dataset at ``root`` (empty when it is sound)."""
    try:
        ds = Dataset(root)
    except GstalkError as err:
        return [err.problem]
    problems = []
    if not np.isfinite(np.asarray(ds.audio_features)).all():
        problems.append("audio_features.npy holds NaN or Inf")
    if ds.audio_path.exists():  # (datasets written from features alone have none)
        try:
            soundfile.info(str(ds.audio_path))
        except Exception as err:  # soundfile raises its own error types
            problems.append(f"{ds.audio_path.name} is unreadable ({err})")
    background = cv2.imread(str(ds.root / BACKGROUND))
    if background is None or background.shape[:2] != (ds.size, ds.size):
        problems.append(f"{BACKGROUND} is missing, unreadable or not {ds.size}×{ds.size}")
    with ThreadPoolExecutor(threads) as pool:
        for found in pool.map(lambda i: _frame_problems(ds, i), range(ds.n_frames)):
            problems.extend(found)
    ids = np.concatenate([ds.train_ids, ds.test_ids])
    if len(ids) and (ids.min() < 0 or ids.max() >= ds.n_frames):
        problems.append("the manifest's train/test split names frames that do not exist")
    return problems


def check_dataset(root: str | Path, shown: int = 12) -> None:
    """Raise one error listing the dataset's problems (the first ``shown`` of them), if it has any."""
    problems = dataset_problems(root)
    if problems:
        more = f"\n  … and {len(problems) - shown} more" if len(problems) > shown else ""
        listed = "\n  ".join(problems[:shown])
        raise GstalkError(
            f"the dataset {root} has {len(problems)} problem(s):\n  {listed}{more}",
            "prepare the dataset again (`gstalk prepare ... --overwrite`)",
        )


def _frame_problems(ds: Dataset, i: int) -> list[str]:
    found = []
    path = frame_path(ds.root, i)
    try:
        data = path.read_bytes()
    except OSError:
        return [f"frame {path.name} is missing"]
    if not data.rstrip(b"\0").endswith(JPEG_END):
        found.append(f"frame {path.name} is truncated")
    else:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None or image.shape[:2] != (ds.size, ds.size):
            found.append(f"frame {path.name} does not decode at {ds.size}×{ds.size}")
    rpath = region_path(ds.root, i)
    labels = cv2.imread(str(rpath), cv2.IMREAD_UNCHANGED)
    if labels is None:
        found.append(f"region map {rpath.name} is missing or unreadable")
    elif labels.shape != (ds.size, ds.size) or labels.dtype != np.uint8:
        found.append(
            f"region map {rpath.name} is {labels.dtype} {labels.shape}, not uint8 {ds.size}×{ds.size}"
        )
    elif int(labels.max()) >= len(Region):
        found.append(f"region map {rpath.name} holds labels that are not regions")
    return found
