"""Model checkpoints: tensors in safetensors, everything else in JSON, the folder written atomically.

A checkpoint folder holds ``model.safetensors`` (all model parameters and buffers) and ``checkpoint.json``
(versions, the model config and shapes that rebuild the model, and the caller's state: stage, step,
dataset, training size). Training adds its optimizer and RNG state beside them (``train.checkpoint``).
Loading never unpickles anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .. import SCHEMA_VERSION, __version__
from ..config import ModelConfig
from ..data.run_layout import META_FILE, MODEL_FILE
from ..errors import GstalkError
from ..face.mesh import N_MESH
from ..fileio import atomic_folder, read_json, usual_mode
from ..speech.motion import LowerFaceBasis
from ..speech.person import PersonMotion
from ..speech.prior import PriorShape
from .binding import Binding
from .gaussians import GaussianSet, ModelRegion
from .init import person_motion
from .talking_head import TalkingHead

FORMAT = "gstalk-checkpoint"


def model_meta(model: TalkingHead) -> dict[str, Any]:
    """What rebuilds the model's shapes: its config and the sizes of its inputs, mesh and Gaussian sets."""
    return {
        "config": dataclasses.asdict(model.config),
        "n_head": len(model.head),
        "n_mouth": len(model.mouth),
        "n_triangles": int(model.triangles.shape[0]),
        "motion_components": model.basis.components,
        "audio_window": model.audio_encoder.window,
        "audio_channels": model.audio_encoder.channels,
        "expression_channels": model.expression_encoder.channels,
        # the motion prior's shape when the audio → motion model starts from one (None: learnt from the
        # clip alone, as every run before the prior)
        "motion_prior": dataclasses.asdict(model.motion.shape)
        if isinstance(model.motion, PersonMotion)
        else None,
    }


def empty_model(meta: dict[str, Any]) -> TalkingHead:
    """A model of the right shapes, to load a state dict into."""
    # runs from before motion_norm existed normalised over the sequence
    config = ModelConfig(**{"motion_norm": "sequence", "motion_bands": 32, **meta["config"]})

    def gaussians(n: int) -> GaussianSet:
        return GaussianSet(
            torch.zeros(n, 3),
            torch.full((n, 3), 0.5),
            torch.ones(n, 3),
            torch.zeros(n, dtype=torch.uint8),
            config.embedding_dim,
        )

    basis = LowerFaceBasis(meta["motion_components"])
    prior = meta.get("motion_prior")
    motion = None if prior is None else person_motion(PriorShape(**prior), basis, config)
    return TalkingHead(
        gaussians(meta["n_head"]),
        gaussians(meta["n_mouth"]),
        torch.zeros(2, 3),
        torch.zeros(N_MESH, 3),
        torch.zeros(meta["n_triangles"], 3, dtype=torch.long),
        basis,
        meta["audio_window"],
        meta["audio_channels"],
        meta["expression_channels"],
        config,
        motion,
    )


def write_model_files(folder: Path, model: TalkingHead, state: dict[str, Any]) -> dict[str, Any]:
    """Write the model's tensors and metadata into an existing ``folder``; returns the metadata."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(folder / MODEL_FILE))
    usual_mode(folder / MODEL_FILE)
    meta = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "gstalk_version": __version__,
        "model_sha256": file_digest(folder / MODEL_FILE),
        "model": model_meta(model),
        **state,
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    return meta


def file_digest(path: Path) -> str:
    """SHA-256 of a file: flipped bits in the weights are found at load, not rendered."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def save_model(folder: str | Path, model: TalkingHead, state: dict[str, Any]) -> Path:
    """Write a model checkpoint to ``folder`` atomically (replacing one that is there)."""
    folder = Path(folder)
    with atomic_folder(folder, overwrite=True) as tmp:
        write_model_files(tmp, model, state)
    return folder


def read_meta(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / META_FILE
    missing = (f"no checkpoint at {folder} ({META_FILE} missing)",
               "pass a run folder written by `gstalk train`, or train one first")  # fmt: skip
    meta = read_json(path, missing, "retrain, or resume from a copy")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
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


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> tuple[TalkingHead, dict[str, Any]]:
    """The model stored in a checkpoint folder, and its metadata."""
    meta = read_meta(folder)
    try:
        model = empty_model(meta["model"])
    except (KeyError, TypeError, ValueError) as err:
        raise GstalkError(
            f"the checkpoint metadata at {folder} is incomplete ({type(err).__name__}: {err})",
            "the checkpoint is damaged: retrain, or resume from an earlier copy",
        ) from err
    expected, weights = meta.get("model_sha256"), Path(folder) / MODEL_FILE
    if expected is not None and weights.is_file() and file_digest(weights) != expected:
        raise GstalkError(
            f"the model weights at {folder} are damaged (their checksum does not match {META_FILE})",
            "retrain, or resume from an earlier copy of the run",
        )
    try:
        tensors = load_file(str(Path(folder) / MODEL_FILE))
    except (SafetensorError, OSError, RuntimeError) as err:
        raise GstalkError(
            f"the model weights at {folder} are corrupt or unreadable ({err})",
            "retrain, or resume from an earlier copy of the run",
        ) from err
    problem = tensor_problem(model, tensors)
    if problem is not None:
        raise GstalkError(
            f"the model weights at {folder} are damaged: {problem}",
            "retrain, or resume from an earlier copy of the run",
        )
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise GstalkError(
            f"the model weights at {folder} do not match their metadata ({err})",
            "the checkpoint is damaged: retrain",
        ) from err
    return model.to(device), meta


def tensor_problem(model: TalkingHead, tensors: dict[str, torch.Tensor]) -> str | None:
    """What is wrong with ``tensors`` as ``model``'s state (names, shapes, dtypes, finite values, indices in
    range), or None. Checked before loading, so damaged weights give a message and never an IndexError."""
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        return f"tensors missing {missing[:3]} or unexpected {extra[:3]}"
    for name, want in expected.items():
        got = tensors[name]
        if got.shape != want.shape or got.dtype != want.dtype:
            return f"{name} is {got.dtype} {tuple(got.shape)}, expected {want.dtype} {tuple(want.shape)}"
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            return f"{name} holds NaN or Inf"
    n_triangles = len(tensors["triangles"])
    bounds = {"triangles": N_MESH}
    for part in ("head", "mouth"):
        bounds[f"{part}.parent"] = max(n_triangles, 1)
        bounds[f"{part}.binding"] = len(Binding)
        bounds[f"{part}.region"] = len(ModelRegion)
    for name, limit in bounds.items():
        values = tensors[name]
        if len(values) and (int(values.min()) < 0 or int(values.max()) >= limit):
            return f"{name} holds indices outside [0, {limit})"
    return None
