"""File names inside a run folder (what ``gstalk train`` writes, and ``evaluate`` beside it): one place, as
``data.layout`` is for a dataset.

config.json                  the TrainConfig that made the run (``config.save_config``)
log.csv, loss.png            the training log and its plot (``train.log``)
audio_motion.json            how the audio → motion model fitted (``train.audio_motion``)
model/                       the final model: a model checkpoint folder (below)
stages/NAME/                 each finished stage's model, e.g. the static baseline of evaluate
checkpoints/SS-NNNNNNN/      training checkpoints (``train.checkpoint``), ``checkpoints/latest`` names the
                             newest; ``checkpoint/`` is the single folder of gstalk ≤ 0.2
eval/                        evaluate's default output: metrics.json, report.html, mouth_sheet.png,
                             side_by_side.mp4, config.json

A model checkpoint folder holds model.safetensors and checkpoint.json (``model.checkpoint``); a training
checkpoint adds optimizer.safetensors and rng.safetensors.

No other module spells these names: they import them from here (``tests/test_layers.py`` checks).
"""

from __future__ import annotations

from pathlib import Path

CONFIG = "config.json"
LOG = "log.csv"
LOSS_PLOT = "loss.png"
AUDIO_MOTION = "audio_motion.json"
MODEL = "model"
STAGES = "stages"
CHECKPOINTS = "checkpoints"
LATEST = "latest"
LEGACY_CHECKPOINT = "checkpoint"
EVAL = "eval"
#: where `gstalk evaluate --reference-video` writes by default, beside the held-out evaluation
EVAL_REFERENCE = "eval-reference"

# inside a checkpoint folder
MODEL_FILE = "model.safetensors"
META_FILE = "checkpoint.json"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"

# inside an evaluation folder
METRICS = "metrics.json"
REPORT = "report.html"
MOUTH_SHEET = "mouth_sheet.png"
SIDE_BY_SIDE = "side_by_side.mp4"
EVALUATION_FILES = frozenset({METRICS, REPORT, MOUTH_SHEET, SIDE_BY_SIDE, CONFIG})
"""Every file an evaluation folder holds (replacing the folder replaces exactly these)."""

#: what marks a folder as a run (``outputs.made_by_gstalk``): any of these beside its config
RUN_MARKERS = (CHECKPOINTS, MODEL, LEGACY_CHECKPOINT)


def model_dir(run: str | Path) -> Path:
    """The run's final model checkpoint folder."""
    return Path(run) / MODEL


def stage_dir(run: str | Path, stage: str) -> Path:
    """The model checkpoint folder of the run's finished stage ``stage`` (e.g. ``static``)."""
    return Path(run) / STAGES / stage


def eval_dir(run: str | Path, reference: bool = False) -> Path:
    """Where ``gstalk evaluate`` writes by default (``reference``: with ``--reference-video``)."""
    return Path(run) / (EVAL_REFERENCE if reference else EVAL)


def is_run(path: str | Path) -> bool:
    """Whether ``path`` looks like a run folder: its config and a model or checkpoints."""
    path = Path(path)
    return (path / CONFIG).is_file() and any((path / m).exists() for m in RUN_MARKERS)
