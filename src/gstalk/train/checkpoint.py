"""Training checkpoints: a model checkpoint plus the optimizer's moments and the sampler's RNG state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..fileio import atomic_folder
from ..model.checkpoint import META_FILE, write_model_files
from ..model.talking_head import TalkingHead

OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"


def save_training_checkpoint(
    folder: Path,
    model: TalkingHead,
    state: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    rng: torch.Tensor | None = None,
) -> Path:
    """Write model, optimizer and RNG state to ``folder`` atomically."""
    folder = Path(folder)
    with atomic_folder(folder, overwrite=True) as tmp:
        meta = write_model_files(tmp, model, state)
        if optimizer is not None:
            save_file(_optimizer_tensors(optimizer), str(tmp / OPTIMIZER_FILE))
            meta["optimizer_groups"] = [
                {k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups
            ]
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
        if rng is not None:
            save_file({"rng": rng.contiguous()}, str(tmp / RNG_FILE))
    return folder


def load_training_state(folder: Path, optimizer: torch.optim.Optimizer) -> torch.Tensor | None:
    """Restore Adam moments into ``optimizer`` (built over the same parameters); returns the RNG state."""
    folder = Path(folder)
    if (folder / OPTIMIZER_FILE).is_file():
        tensors = load_file(str(folder / OPTIMIZER_FILE))
        for gi, group in enumerate(optimizer.param_groups):
            for pi, p in enumerate(group["params"]):
                prefix = f"{gi}.{pi}."
                state = {k[len(prefix) :]: v.to(p.device) for k, v in tensors.items() if k.startswith(prefix)}
                if state:
                    optimizer.state[p] = state
    rng_path = folder / RNG_FILE
    return load_file(str(rng_path))["rng"] if rng_path.is_file() else None


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for gi, group in enumerate(optimizer.param_groups):
        for pi, p in enumerate(group["params"]):
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value):
                    out[f"{gi}.{pi}.{key}"] = value.detach().contiguous().cpu()
    return out
