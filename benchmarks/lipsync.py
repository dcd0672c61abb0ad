"""Cross-speaker lip sync with ground truth: does speech move the mouth the way a real mouth moved?

For every clip A (a prepared dataset), A's audio → motion model is trained on A's training frames (no
rendering), once per audio representation, and measured against *tracked* mouths:

- **own**: A's held-out frames, driven by A's own held-out speech: the correlation of the predicted with
  the tracked inner-lip gap, and the lip-vertex error of the prediction against that of the mean mouth;
- **cross**: every other clip B's speech drives A's model; the predicted inner-lip gap is compared with the
  gap tracked in B's own video while B said it. Both are z-scored per clip, so the measure is about timing
  and shape, not about how wide each person opens their mouth. The correlation at lag 0 and the lag in
  ±3 frames where it peaks (positive: the prediction comes late) are reported.

Representations: ``logmel`` (the dataset's own log-mel features, or log-mel's defaults) and ``whisper``
(Whisper base's encoder states in streaming blocks, ``speech.whisper``), side by side in one run. Prints JSON
on stdout and a table on stderr.

    python benchmarks/lipsync.py --videos ../shared/data/video/*.mp4 --work /tmp/lipsync
    python benchmarks/lipsync.py --datasets DS1 DS2 ... [--variants logmel whisper] [--steps 2500]
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
from gstalk.config import AudioMotionConfig, ModelConfig, PrepareConfig, WhisperConfig, resolve_model
from gstalk.data import load_dataset
from gstalk.data.manifest import AudioSpec
from gstalk.face.mesh import N_MESH, mouth_gap
from gstalk.face.sync import lagged_correlation
from gstalk.media import read_audio
from gstalk.media.audio import silent_frames
from gstalk.model.init import fit_motion_basis
from gstalk.speech import build_spec, feature_kind
from gstalk.speech.motion import AudioMotion
from gstalk.train.audio_motion import fit_audio_motion, predict_coefficients


@dataclasses.dataclass
class Args:
    datasets: tuple[Path, ...] = ()
    """Prepared datasets, one per clip."""
    videos: tuple[Path, ...] = ()
    """Or videos: each is prepared (once) into --work."""
    work: Path = Path("/tmp/gstalk-lipsync")
    """Where prepared datasets are kept."""
    variants: tuple[str, ...] = ("logmel", "whisper")
    """Audio representations to compare."""
    whisper: WhisperConfig = dataclasses.field(default_factory=WhisperConfig)
    """The Whisper encoder and its blocks."""
    steps: int = 2500
    """Audio → motion optimisation steps."""
    augmented_copies: int = 6
    """Augmented copies of each clip's speech."""
    context_future: int | None = None
    """Frames of future context of the audio → motion model (default: 3 for logmel, 0 for whisper)."""
    cross_seconds: float = 20.0
    """Seconds of each other clip's speech used."""
    pause_audio: Path | None = Path("../shared/data/cases/speech_with_2s_digital_silence.wav")
    """Speech with digital silence inside: the mouth must close there (None: skip)."""
    max_lag: int = 3


def prepared(args: Args) -> list[Path]:
    from gstalk.prepare import prepare

    paths = list(args.datasets)
    for video in args.videos:
        out = args.work / Path(video).stem
        prepare(PrepareConfig(video=video, out=out, progress=False))
        paths.append(out)
    return paths


def spec_for(variant: str, ds, args: Args) -> AudioSpec:
    if variant == "logmel":  # the dataset's own when it was prepared with log-mel, else the default
        return ds.audio_spec if ds.audio_spec.features == "logmel" else build_spec("logmel")
    if variant == "whisper":
        return build_spec("whisper", args.whisper)
    raise SystemExit(f"unknown variant {variant}")


@dataclasses.dataclass
class Clip:
    name: str
    path: Path
    audio: np.ndarray
    gap: np.ndarray  # (T,) tracked inner-lip gap, NaN where untracked
    fps: float


def load_clip(path: Path) -> Clip:
    ds = load_dataset(path)
    gap = mouth_gap(ds.tracks.mesh[:, :N_MESH]).astype(np.float64)
    gap[~ds.valid] = np.nan
    return Clip(path.name, path, read_audio(ds.audio_path), gap, ds.fps)


def train_one(path: Path, spec: AudioSpec, args: Args, future: int):
    """A's basis and audio → motion model on representation ``spec``; the held-out figures."""
    ds = load_dataset(path)
    audio = read_audio(ds.audio_path)
    ds.manifest = dataclasses.replace(ds.manifest, audio=spec)
    ds.audio_features = feature_kind(spec).compute(audio, ds.n_frames, ds.fps)
    basis = fit_motion_basis(ds, 8)
    model = AudioMotion(spec.window, spec.dim, basis.components, past=6, future=future)
    config = AudioMotionConfig(steps=args.steps, augmented_copies=args.augmented_copies)
    own = fit_audio_motion(ds, basis, model, config)
    return ds, basis, model, own


def predicted_gap(ds, basis, model, spec: AudioSpec, audio: np.ndarray, n: int) -> np.ndarray:
    feats = feature_kind(spec).compute(audio, n, ds.fps).astype(np.float32)
    coeffs = predict_coefficients(model, feats)
    canonical = torch.from_numpy(ds.tracks.canonical_shape[:N_MESH]).float()
    with torch.no_grad():
        return mouth_gap((canonical + basis.reconstruct(torch.from_numpy(coeffs))).numpy())


def pause_figures(ds, basis, model, spec: AudioSpec, clip: Clip, args: Args) -> dict:
    """The median predicted lip gap inside the digital silence of ``--pause-audio`` (from 0.1 s after it
    starts), against the clip's own 10th percentile: below 1 means the mouth closes."""
    if args.pause_audio is None or not Path(args.pause_audio).is_file():
        return {}
    audio = read_audio(args.pause_audio)
    n = int(len(audio) / 16_000 * ds.fps)
    gap = predicted_gap(ds, basis, model, spec, audio, n)
    silent = silent_frames(audio, n, ds.fps)
    settled = silent & np.roll(silent, 3)  # 3 frames (0.12 s) into the silence
    train = ds.train_ids[ds.valid[ds.train_ids]]
    p10 = float(np.nanpercentile(clip.gap[train], 10))
    return {
        "pause_gap_mm": round(1000 * float(np.median(gap[settled])), 3),
        "clip_p10_gap_mm": round(1000 * p10, 3),
        "pause_closes": bool(np.median(gap[settled]) < p10),
    }


def run_variant(variant: str, paths: list[Path], clips: dict[str, Clip], args: Args) -> dict:
    rows, cross = [], []
    for path in paths:
        ds0 = load_dataset(path)
        spec = spec_for(variant, ds0, args)
        future = resolve_model(ModelConfig(context_future=args.context_future), variant).context_future
        start = time.perf_counter()
        ds, basis, model, own = train_one(path, spec, args, future)
        test = ds.test_ids[ds.valid[ds.test_ids]]
        pred = predicted_gap(ds, basis, model, spec, clips[path.name].audio, ds.n_frames)
        own_lag = lagged_correlation(pred[test], clips[path.name].gap[test], args.max_lag)
        row = {
            "clip": path.name,
            **pause_figures(ds, basis, model, spec, clips[path.name], args),
            "lip_error_mm": round(own["lip_error_mm"], 3),
            "mean_mouth_lip_error_mm": round(own["mean_mouth_lip_error_mm"], 3),
            "gap_correlation": round(own["gap_correlation"], 3),
            "own_peak_lag": own_lag["peak_lag"],
            "seconds": round(time.perf_counter() - start, 1),
        }
        for other in paths:
            if other == path:
                continue
            clip = clips[other.name]
            n = min(len(clip.gap), int(args.cross_seconds * clip.fps))
            audio = clip.audio[: round(n / clip.fps * 16_000)]
            gap = predicted_gap(ds, basis, model, spec, audio, n)
            measure = lagged_correlation(gap, clip.gap[:n], args.max_lag)
            cross.append({"model": path.name, "speech": other.name, **measure})
        rows.append(row)
        print(json.dumps({"variant": variant, **row}), file=sys.stderr, flush=True)
    r0 = [c["correlation"] for c in cross if c["correlation"] is not None]
    return {
        "variant": variant,
        "own": rows,
        "own_mean_gap_correlation": round(float(np.mean([r["gap_correlation"] for r in rows])), 3),
        "cross": cross,
        "cross_mean_correlation": round(float(np.mean(r0)), 3) if r0 else None,
        "cross_min_correlation": round(float(np.min(r0)), 3) if r0 else None,
        "cross_pairs_below_0.2": sum(r < 0.2 for r in r0),
        "cross_peak_lags": sorted({c["peak_lag"] for c in cross if c["peak_lag"] is not None}),
        "cross_pairs_peak_outside_1": sum(abs(c["peak_lag"]) > 1 for c in cross if c["peak_lag"] is not None),
        "pauses_closed": sum(r.get("pause_closes", False) for r in rows),
    }


def main(args: Args) -> dict:
    paths = prepared(args)
    clips = {p.name: load_clip(p) for p in paths}
    results = [run_variant(v, paths, clips, args) for v in args.variants]
    out = {
        "benchmark": "lipsync",
        "date": time.strftime("%Y-%m-%d"),
        "hardware": hardware(),
        "clips": [p.name for p in paths],
        "steps": args.steps,
        "whisper": dataclasses.asdict(args.whisper),
        "results": results,
    }
    print(json.dumps(out, indent=2))
    head = ("variant", "own gap corr", "cross corr mean", "cross min", "pairs < 0.2", "peak lag ∉ ±1",
            "pauses closed")  # fmt: skip
    print("\n| " + " | ".join(head) + " |", file=sys.stderr)
    for r in results:
        keys = ("variant", "own_mean_gap_correlation", "cross_mean_correlation", "cross_min_correlation",
                "cross_pairs_below_0.2", "cross_pairs_peak_outside_1", "pauses_closed")  # fmt: skip
        cells = [r[k] for k in keys]
        print("| " + " | ".join(str(c) for c in cells) + " |", file=sys.stderr)
    return out


if __name__ == "__main__":
    main(tyro.cli(Args))
