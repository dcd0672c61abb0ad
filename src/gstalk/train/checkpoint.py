"""Checkpoints: tensors in safetensors, everything else in JSON, the folder written atomically.

A checkpoint folder holds ``model.safetensors`` (all model parameters and buffers), ``optimizer.safetensors``
(Adam moments, when training state is saved) and ``checkpoint.json`` (versions, shapes, model config,
stage and step, the sampler's RNG state). Loading never unpickles anything.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .. import SCHEMA_VERSION, __version__
from ..errors import GstalkError
from ..model.gaussians import GaussianSet
from ..model.talking_head import ModelConfig, TalkingHead

FORMAT = "gstalk-checkpoint"


def model_meta(model: TalkingHead) -> dict[str, Any]:
    return {
        "config": dataclasses.asdict(model.config),
        "n_head": len(model.head),
        "n_mouth": len(model.mouth),
        "audio_window": model.audio_encoder.window,
        "audio_channels": model.audio_encoder.channels,
        "expression_channels": model.expression_encoder.channels,
    }


def empty_model(meta: dict[str, Any]) -> TalkingHead:
    """A model of the right shapes, to load a state dict into."""
    config = ModelConfig(**meta["config"])

    def gaussians(n: int) -> GaussianSet:
        return GaussianSet(
            torch.zeros(n, 3),
            torch.full((n, 3), 0.5),
            torch.ones(n, 3),
            torch.zeros(n, dtype=torch.uint8),
            config.embedding_dim,
        )

    return TalkingHead(
        gaussians(meta["n_head"]),
        gaussians(meta["n_mouth"]),
        torch.zeros(2, 3),
        meta["audio_window"],
        meta["audio_channels"],
        meta["expression_channels"],
        config,
    )


def save_checkpoint(
    folder: Path,
    model: TalkingHead,
    state: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    rng: torch.Tensor | None = None,
) -> Path:
    """Write the checkpoint to a temporary folder beside ``folder``, then swap it into place."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    tmp.chmod(0o755)
    try:
        tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(tensors, str(tmp / "model.safetensors"))
        meta = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "gstalk_version": __version__,
            "model": model_meta(model),
            **state,
        }
        if optimizer is not None:
            save_file(_optimizer_tensors(optimizer), str(tmp / "optimizer.safetensors"))
            meta["optimizer_groups"] = [
                {k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups
            ]
        if rng is not None:
            save_file({"rng": rng.contiguous()}, str(tmp / "rng.safetensors"))
        (tmp / "checkpoint.json").write_text(json.dumps(meta, indent=2, default=str))
        old = folder.parent / f".{folder.name}.old"
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def read_meta(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "checkpoint.json"
    if not path.is_file():
        raise GstalkError(
            f"no checkpoint at {folder} (checkpoint.json missing)",
            "pass a run folder written by `gstalk train`, or train one first",
        )
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise GstalkError(
            f"the checkpoint at {folder} is corrupt ({err})", "retrain, or resume from a copy"
        ) from err
    if meta.get("format") != FORMAT:
        raise GstalkError(
            f"{folder} is not a gstalk checkpoint", "pass a run folder written by `gstalk train`"
        )
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise GstalkError(
            f"the checkpoint at {folder} was written by gstalk {meta.get('gstalk_version')} with schema "
            f"{meta.get('schema_version')}; this gstalk {__version__} reads schema {SCHEMA_VERSION}",
            "retrain the model with this version, or use the gstalk version that trained it",
        )
    return meta


def load_model(folder: Path, device: str | torch.device = "cpu") -> tuple[TalkingHead, dict[str, Any]]:
    """The model stored in a checkpoint folder, and its metadata."""
    meta = read_meta(folder)
    model = empty_model(meta["model"])
    try:
        tensors = load_file(str(Path(folder) / "model.safetensors"))
    except (SafetensorError, OSError, RuntimeError) as err:
        raise GstalkError(
            f"the model weights at {folder} are corrupt or unreadable ({err})",
            "retrain, or resume from an earlier copy of the run",
        ) from err
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise GstalkError(
            f"the model weights at {folder} do not match their metadata ({err})",
            "the checkpoint is damaged: retrain",
        ) from err
    return model.to(device), meta


def load_training_state(folder: Path, optimizer: torch.optim.Optimizer) -> torch.Tensor | None:
    """Restore Adam moments into ``optimizer`` (built over the same parameters); returns the RNG state."""
    folder = Path(folder)
    if (folder / "optimizer.safetensors").is_file():
        tensors = load_file(str(folder / "optimizer.safetensors"))
        for gi, group in enumerate(optimizer.param_groups):
            for pi, p in enumerate(group["params"]):
                prefix = f"{gi}.{pi}."
                state = {k[len(prefix) :]: v.to(p.device) for k, v in tensors.items() if k.startswith(prefix)}
                if state:
                    optimizer.state[p] = state
    rng_path = folder / "rng.safetensors"
    return load_file(str(rng_path))["rng"] if rng_path.is_file() else None


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for gi, group in enumerate(optimizer.param_groups):
        for pi, p in enumerate(group["params"]):
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value):
                    out[f"{gi}.{pi}.{key}"] = value.detach().contiguous().cpu()
    return out
