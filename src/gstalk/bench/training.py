"""A training step of each stage, part by part, and the training time of the preset it implies.

Parts of ``Trainer.step``, in milliseconds per step (``wall`` clock time and this thread's ``cpu`` time):
``target`` (the frame, its labels, layer and masks), ``forward`` (the model), ``render`` (the two passes),
``loss`` (the stage's terms), ``backward``, ``optimizer`` (Adam), ``figures`` (the logged values).
Outside the step: ``densify`` (one densification round, which runs every ``densify.every`` steps) and
``checkpoint`` (one training checkpoint, every ``checkpoint_every`` steps), both also given per step.

``estimated_minutes`` is the stages' iterations times their all-core step time, with densification and
checkpoints spread over the steps; the audio → motion stage (no rendering) is not included.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import BenchConfig, StageConfig, TrainConfig
from ..splat import threads
from ..timing import Laps
from . import hardware
from .pipeline import generated_subject, thread_count


def train_profile(config: BenchConfig, subject: dict[str, Any], tmp: str) -> dict[str, Any]:
    """Profile a training step of every stage of the cpu preset on ``--dataset`` (default: ``--run``'s
    dataset, else the generated subject), starting from ``--run``'s Gaussians when given, else from a
    new model."""
    from ..data.run_layout import model_dir
    from ..device import pick_device
    from ..model.checkpoint import load_model
    from ..train.trainer import Trainer

    device = pick_device(config.device)
    work = Path(tmp)
    dataset = config.dataset
    model = None
    if config.run is not None:
        model, meta = load_model(model_dir(config.run), device)
        dataset = dataset or Path(meta["dataset"])
    dataset = dataset or generated_subject(subject, work)
    trainer = Trainer(TrainConfig(dataset=dataset, out=work / "train_profile", progress=False,
                                  device=device.type))  # fmt: skip
    trainer.attach(model if model is not None else trainer.init_model())
    rng = np.random.default_rng(0)
    cores = threads.available_cores()
    rows, minutes = {}, 0.0
    for stage in trainer.stages:
        optimizer = trainer.optimizer(stage)
        row: dict[str, Any] = {"iterations": stage.iterations}
        for label, count in (("one_thread", 1), ("all_cores", cores)):
            with thread_count(count):
                row[label], renders = _steps(trainer, stage, optimizer, rng, config.train_steps)
        row["gaussians"] = len(trainer.model.head) + len(trainer.model.mouth)
        per_step = row["all_cores"]["step_ms"]
        if stage.densify:
            row["densify_ms"] = _densify_ms(trainer, stage, optimizer, renders)
            per_step += row["densify_ms"] / trainer.config.densify.every
        row["checkpoint_ms"] = _checkpoint_ms(trainer, optimizer, work)
        per_step += row["checkpoint_ms"] / trainer.config.checkpoint_every
        row["per_step_ms"] = round(per_step, 2)
        minutes += stage.iterations * per_step / 60_000
        rows[stage.name] = row
    return {
        "benchmark": "train_profile",
        "date": dt.date.today().isoformat(),
        "hardware": hardware(),
        "dataset": str(dataset),
        "run": str(config.run) if config.run else "new model (cpu preset's cap)",
        "size": trainer.config.size,
        "cores": cores,
        "stages": rows,
        "estimated_minutes": round(minutes, 2),
        "audio_motion_steps": trainer.config.audio_motion.steps,
    }


def _steps(trainer, stage: StageConfig, optimizer, rng: np.random.Generator, n: int):
    """Median milliseconds of each part of ``n`` training steps (after two warm-up steps) on random
    training frames, PyTorch's operations on one thread as ``Trainer`` runs them, and the last step's
    renders."""
    ids = trainer.ds.train_ids
    runs, renders = [], None
    with threads.serial_torch():  # as Trainer runs its stages
        frames = [int(f) for f in rng.choice(ids, n + 3)]  # each step reads the next ahead, as in training
        for k in range(2):
            trainer.step(stage, frames[k], optimizer, read_ahead=frames[k + 1])
        for k in range(2, n + 2):
            laps = Laps()
            start = time.perf_counter()
            _, renders = trainer.step(stage, frames[k], optimizer, laps, read_ahead=frames[k + 1])
            runs.append((time.perf_counter() - start, laps))

    def median(values) -> float:
        return round(1000 * statistics.median(values), 3)

    parts = runs[0][1].wall.keys()
    return {
        "threads": threads.threads(),
        "step_ms": median(r[0] for r in runs),
        "part_ms": {
            k: {"wall": median(r[1].wall[k] for r in runs), "cpu": median(r[1].cpu[k] for r in runs)}
            for k in parts
        },
    }, renders


def _densify_ms(trainer, stage: StageConfig, optimizer, renders) -> float:
    """Milliseconds of one densification round (clone, split, prune, the optimizer's state moved)."""
    from ..train.strategy import DensifyStrategy, scene_extent

    model = trainer.model
    sets = {"head": model.head, "mouth": model.mouth}
    strategy = DensifyStrategy(trainer.config.densify, sets, scene_extent(model), stage.iterations,
                               trainer.config.max_gaussians)  # fmt: skip
    start = time.perf_counter()
    with torch.no_grad(), threads.serial_torch():
        strategy.step_post_backward(trainer.config.densify.start, renders, optimizer)
    return round(1000 * (time.perf_counter() - start), 2)


def _checkpoint_ms(trainer, optimizer, work: Path) -> float:
    """Milliseconds of writing one training checkpoint (model, optimizer state and RNG)."""
    from ..train.checkpoint import save_training_checkpoint

    state = {"stage_index": 1, "step": 1, "dataset": str(trainer.config.dataset), "train_size": 0}
    start = time.perf_counter()
    save_training_checkpoint(work / "checkpoint_profile", trainer.model, state, optimizer,
                             torch.Generator().get_state())  # fmt: skip
    return round(1000 * (time.perf_counter() - start), 1)


__all__ = ["train_profile"]
