"""Which audio representation makes lip motion hold for other speakers and languages? Prints JSON and a table.

For each representation (log-mel as prepared so far; per-utterance normalised; with deltas; each with and
without augmentation) the audio → motion model is trained on a prepared clip, with no rendering, and
measured two ways:

- same speaker, held-out frames: lip vertex error (mm) against the tracked mesh, and the correlation and
  range ratio (5th–95th percentile) of the predicted against the tracked inner-lip gap;
- other speakers (../shared/data/audio): the correlation of each file's per-frame audio energy with the
  predicted inner-lip gap at the best offset within ±5 frames (the weight-free lip-sync measure of
  ``gstalk evaluate``), and the predicted gap's range against the clip's own.

    python benchmarks/audio_representation.py --dataset DATASET [--audio FILE ...] [--steps 2500]
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import tyro

from gstalk.bench import hardware
from gstalk.config import AudioMotionConfig
from gstalk.data import load_dataset
from gstalk.eval.metrics import audio_energy, lip_sync
from gstalk.face.mesh import N_MESH, lower_face_weights, mouth_gap
from gstalk.media import read_audio
from gstalk.speech import feature_kind
from gstalk.speech.motion import AudioMotion, LowerFaceBasis
from gstalk.train.audio_motion import fit_audio_motion, predict_coefficients


@dataclasses.dataclass
class Args:
    dataset: Path
    audio: tuple[Path, ...] = tuple(sorted(Path("../shared/data/audio").glob("*")))
    steps: int = 2500
    seconds: float = 10.0
    variants: tuple[str, ...] = ("none", "none+aug", "utterance", "utterance+aug", "none+deltas+aug")


def main(args: Args) -> dict:
    base = load_dataset(args.dataset)
    displacement = base.tracks.mesh[:, :N_MESH] - base.tracks.canonical_shape[None, :N_MESH]
    weights = lower_face_weights(base.tracks.canonical_shape)
    ids = base.train_ids[base.valid[base.train_ids]]
    basis, _ = LowerFaceBasis.fit(displacement[ids], weights, 16)
    canonical = torch.from_numpy(base.tracks.canonical_shape[:N_MESH]).float()
    clip_gap = mouth_gap(base.tracks.mesh[ids])
    clip_range = np.percentile(clip_gap, 95) - np.percentile(clip_gap, 5)
    speeches = {p.name: read_audio(p)[: int(args.seconds * 16000)] for p in args.audio}
    rows = []
    for variant in args.variants:
        parts = set(variant.split("+"))
        spec = dataclasses.replace(
            base.audio_spec,
            normalisation="utterance" if "utterance" in parts else "none",
            deltas="deltas" in parts,
            dim=base.audio_spec.dim // (2 if base.audio_spec.deltas else 1) * (2 if "deltas" in parts else 1),
        )
        ds = load_dataset(args.dataset)
        audio = read_audio(ds.audio_path)
        ds.manifest = dataclasses.replace(ds.manifest, audio=spec)
        kind = feature_kind(spec)
        ds.audio_features = kind.compute(audio, ds.n_frames, ds.fps)
        model = AudioMotion(spec.window, spec.dim, basis.components)
        config = AudioMotionConfig(steps=args.steps, augmented_copies=6 if "aug" in parts else 0)
        start = time.perf_counter()
        held_out = fit_audio_motion(ds, basis, model, config)
        cross = {}
        for name, speech in speeches.items():
            n = int(len(speech) / 16000 * ds.fps)
            coeffs = predict_coefficients(model, kind.compute(speech, n, ds.fps).astype(np.float32))
            with torch.no_grad():
                gap = mouth_gap((canonical + basis.reconstruct(torch.from_numpy(coeffs))).numpy())
            energy = audio_energy(speech, n, ds.fps)
            cross[name] = {
                "energy_opening_correlation": round(lip_sync(energy, gap).correlation, 3),
                "gap_range_ratio": round(
                    float((np.percentile(gap, 95) - np.percentile(gap, 5)) / clip_range), 3
                ),
            }
        row = {
            "variant": variant,
            "seconds": round(time.perf_counter() - start, 1),
            **{k: round(v, 3) for k, v in held_out.items() if k != "seconds"},
            "cross_audio": cross,
            "cross_min_correlation": min(c["energy_opening_correlation"] for c in cross.values())
            if cross
            else None,
        }
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    result = {
        "benchmark": "audio_representation",
        "date": time.strftime("%Y-%m-%d"),
        "hardware": hardware(),
        "dataset": str(args.dataset),
        "steps": args.steps,
        "results": rows,
    }
    print(json.dumps(result, indent=2))
    print(
        "\n| variant | held-out lip error mm | gap corr | gap range | cross-audio corr (min) |",
        file=sys.stderr,
    )
    for r in rows:
        print(
            f"| {r['variant']} | {r['lip_error_mm']} | {r['gap_correlation']} | {r['gap_range_ratio']} | "
            f"{r['cross_min_correlation']} |",
            file=sys.stderr,
        )
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
