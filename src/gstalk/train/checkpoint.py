"""Training checkpoints that survive a crash at any instruction.

A run keeps its checkpoints as versioned folders, ``RUN/checkpoints/SS-NNNNNNN`` (stage index, step), each
a model checkpoint plus the optimizer's moments and the sampler's RNG state, and a pointer file
``RUN/checkpoints/latest`` naming the newest. A save:

1. removes what an earlier crashed save left: ``.*.partial`` and ``.*.trash`` folders (no complete
   checkpoint is ever under those names);
2. writes the new version into ``.NAME.partial``;
3. renames it to ``NAME`` (one atomic rename: a ``NAME`` folder is always complete);
4. replaces ``latest`` atomically (a temporary file renamed over it);
5. retires the older versions: each is renamed to ``.OLD.trash`` (atomic) and then deleted.

Killed before step 3, the previous version is untouched and still newest. Killed between 3 and 4, the
new folder is complete and newest though the pointer still names the previous one. Killed during 5, a
version being deleted already has a ``.trash`` name and is never mistaken for a checkpoint. So
:func:`latest_checkpoint`, the newest ``NAME`` folder, is always complete; ``latest`` is for people and
tools that want one name to read. (A crash of the process, not of the machine: the files are not fsynced.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..data.run_layout import CHECKPOINTS as FOLDER
from ..data.run_layout import LATEST as POINTER
from ..data.run_layout import LEGACY_CHECKPOINT as LEGACY
from ..data.run_layout import META_FILE, OPTIMIZER_FILE, RNG_FILE
from ..errors import GstalkError
from ..fileio import usual_mode, write_text_atomic
from ..model.checkpoint import write_model_files
from ..model.talking_head import TalkingHead

VERSION = re.compile(r"\d{2}-\d{7}")


def fault_point(name: str) -> None:
    """Where a test kills the process (``GSTALK_FAULT_AT=name``) to prove a save survives it."""
    if os.environ.get("GSTALK_FAULT_AT") == name:
        os._exit(86)


def version_name(state: dict[str, Any]) -> str:
    return f"{int(state['stage_index']):02d}-{int(state['step']):07d}"


def save_training_checkpoint(
    run: Path,
    model: TalkingHead,
    state: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    rng: torch.Tensor | None = None,
) -> Path:
    """Write model, optimizer and RNG state as the run's newest checkpoint; returns its folder."""
    root = Path(run) / FOLDER
    root.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(root)
    name = version_name(state)
    partial = root / f".{name}.partial"
    partial.mkdir()
    fault_point("partial-created")
    meta = write_model_files(partial, model, state)
    fault_point("model-written")
    if optimizer is not None:
        save_file(_optimizer_tensors(optimizer), str(partial / OPTIMIZER_FILE))
        usual_mode(partial / OPTIMIZER_FILE)
        meta["optimizer_groups"] = [
            {k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups
        ]
        (partial / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    if rng is not None:
        save_file({"rng": rng.contiguous()}, str(partial / RNG_FILE))
        usual_mode(partial / RNG_FILE)
    fault_point("partial-complete")
    final = root / name
    if final.exists():  # this very state is already saved, complete: keep that copy
        shutil.rmtree(partial)
    else:
        fault_point("before-rename")
        os.replace(partial, final)
    fault_point("renamed")
    write_text_atomic(root / POINTER, name + "\n")
    fault_point("pointer-written")
    for old in _versions(root):
        if old.name != name:
            _retire(old)
            fault_point("retired-one")
    return final


def latest_checkpoint(run: Path) -> Path | None:
    """The newest complete checkpoint of a run, whatever a crash left behind; None when there is none.

    That is the newest version folder (``latest`` names it too, except in the instant after a crash
    between steps 3 and 4, when the folder is already complete and newer)."""
    root = Path(run) / FOLDER
    versions = _versions(root) if root.is_dir() else []
    if versions:
        return versions[-1]
    legacy = Path(run) / LEGACY
    return legacy if (legacy / META_FILE).is_file() else None


def load_training_state(folder: Path, optimizer: torch.optim.Optimizer) -> torch.Tensor | None:
    """Restore Adam moments into ``optimizer`` (built over the same parameters); returns the RNG state."""
    folder = Path(folder)
    try:
        if (folder / OPTIMIZER_FILE).is_file():
            tensors = load_file(str(folder / OPTIMIZER_FILE))
            for gi, group in enumerate(optimizer.param_groups):
                for pi, p in enumerate(group["params"]):
                    prefix = f"{gi}.{pi}."
                    state = {
                        k[len(prefix) :]: v.to(p.device) for k, v in tensors.items() if k.startswith(prefix)
                    }
                    for key, value in state.items():
                        if key != "step" and (
                            value.shape != p.shape or not bool(torch.isfinite(value).all())
                        ):
                            raise ValueError(f"optimizer state {prefix}{key} does not fit its parameter")
                    if state:
                        optimizer.state[p] = state
        rng_path = folder / RNG_FILE
        return load_file(str(rng_path))["rng"] if rng_path.is_file() else None
    except Exception as err:  # safetensors raises its own error types; all mean the same here
        raise GstalkError(
            f"the optimizer state in {folder} is damaged ({err})",
            "delete that checkpoint folder to resume from the one before it, or retrain",
        ) from err


def _versions(root: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first (names sort by stage, then step)."""
    return sorted(p for p in root.iterdir() if p.is_dir() and VERSION.fullmatch(p.name))


def _retire(folder: Path) -> None:
    trash = folder.parent / f".{folder.name}.trash"
    if trash.exists():
        shutil.rmtree(trash)
    os.replace(folder, trash)
    shutil.rmtree(trash)


def _remove_leftovers(root: Path) -> None:
    for p in root.iterdir():
        if p.name.startswith(".") and p.name.endswith((".partial", ".trash")):
            shutil.rmtree(p, ignore_errors=True)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for gi, group in enumerate(optimizer.param_groups):
        for pi, p in enumerate(group["params"]):
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value):
                    out[f"{gi}.{pi}.{key}"] = value.detach().contiguous().cpu()
    return out
