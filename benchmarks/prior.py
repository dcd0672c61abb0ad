"""The speaker-independent motion prior, measured: leave-identity-out on the corpus, then lip sync across
speakers for the shared clips' models with and without it, in one run.

1. **Corpus**, leave-person-out: ``gstalk prior train`` on ``--corpus`` (into ``--work``; it resumes
   from the tracked clips and features there) folds the corpus by person; each clip's lip gap predicted
   by the fold that never saw its speaker is compared with the gap tracked in its video, at lag 0 and at
   the peak within ±3 frames (positive: the prediction comes late), per person.
2. **Shared clips' models**: for every prepared dataset A, A's audio → motion is fitted without rendering
   twice: without a prior (the per-person network ``gstalk train --prior none`` fits: 2 500 steps, 6
   augmented copies) and from the prior (``train.person``: the readout moved toward A's clip, the
   geometric retarget). Measured as ``benchmarks/lipsync.py`` measures:
   - **own**: A's held-out frames driven by A's own held-out speech (correlation of the predicted and
     tracked inner-lip gap);
   - **cross**: every other clip B's speech (``--cross-seconds``) drives A's model; the predicted gap is
     compared with the gap tracked in B's video while B said it, both z-scored, at lag 0 and at the peak
     lag in ±3 frames. The prior used for a pair is the corpus fold that never saw B's speaker (B's
     voice and mouth are never in the prior that drives it); for B outside the corpus, the whole prior.
   - **pauses**: speech with digital silence inside (``--pause-audio``): does the mouth close there?

Prints JSON on stdout and tables on stderr; run it alone on the machine (it uses both cores).

    python benchmarks/prior.py --corpus ../shared/data/corpus --work /tmp/prior \\
        --datasets DS_CNN DS_GERMAN DS_LIEU DS_TRUMP DS_MAY DS_KATIE
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
from gstalk.config import AudioMotionConfig, ModelConfig, PriorTrainConfig, resolve_model
from gstalk.data import load_dataset
from gstalk.face.mesh import N_MESH, mouth_gap
from gstalk.face.sync import lagged_correlation
from gstalk.media import read_audio
from gstalk.media.audio import silent_frames
from gstalk.model.init import fit_motion_basis, person_motion
from gstalk.speech import feature_kind
from gstalk.speech.motion import AudioMotion
from gstalk.speech.prior import PRIOR_FILE, load_prior
from gstalk.train.audio_motion import fit_audio_motion
from gstalk.train.person import fit_person_motion, person_motion_data
from gstalk.train.prior import FIGURES, train_prior


@dataclasses.dataclass
class Args:
    corpus: Path = Path("../shared/data/corpus")
    """The corpus the prior is trained on (leave-person-out)."""
    work: Path = Path("/tmp/gstalk-prior")
    """Where `gstalk prior train` writes (and resumes from)."""
    datasets: tuple[Path, ...] = ()
    """Prepared datasets of the shared clips (their models are measured with and without the prior)."""
    steps: int = 2500
    """Steps of the per-person network (without the prior)."""
    cross_seconds: float = 20.0
    """Seconds of each other clip's speech."""
    pause_audio: Path | None = Path("../shared/data/cases/speech_with_2s_digital_silence.wav")
    """Speech with digital silence inside: the mouth must close there (None: skip)."""
    max_lag: int = 3
    variants: tuple[str, ...] = ("without_prior", "with_prior")
    """Which models to measure (the per-person network takes minutes per clip)."""


@dataclasses.dataclass
class Clip:
    name: str
    identity: str | None
    ds: object
    audio: np.ndarray
    gap: np.ndarray  # (T,) tracked inner-lip gap, NaN where untracked


def identity_of_dataset(ds, people: set[str]) -> str | None:
    """The corpus person a dataset shows: the longest corpus identity its source video's name starts with."""
    stem = Path(ds.manifest.source.path).stem if ds.manifest.source else ""
    found = [p for p in people if stem == p or stem.startswith(p + "_")]
    return max(found, key=len) if found else None


def load_clip(path: Path, people: set[str]) -> Clip:
    ds = load_dataset(path)
    gap = mouth_gap(ds.tracks.mesh[:, :N_MESH]).astype(np.float64)
    gap[~ds.valid] = np.nan
    return Clip(path.name, identity_of_dataset(ds, people), ds, read_audio(ds.audio_path), gap)


def predicted_gap(clip: Clip, basis, model, audio: np.ndarray, n: int) -> np.ndarray:
    feats = feature_kind(clip.ds.audio_spec).compute(audio, n, clip.ds.fps).astype(np.float32)
    model.eval()
    codes = model.predict(feats)
    canonical = torch.from_numpy(clip.ds.tracks.canonical_shape[:N_MESH]).float()
    with torch.no_grad():
        return mouth_gap((canonical + basis.reconstruct(codes)).numpy())


def pause_figures(clip: Clip, basis, model, args: Args) -> dict:
    if args.pause_audio is None or not Path(args.pause_audio).is_file():
        return {}
    ds = clip.ds
    audio = read_audio(args.pause_audio)
    n = int(len(audio) / 16_000 * ds.fps)
    gap = predicted_gap(clip, basis, model, audio, n)
    silent = silent_frames(audio, n, ds.fps)
    settled = silent & np.roll(silent, 3)
    train = ds.train_ids[ds.valid[ds.train_ids]]
    p10 = float(np.nanpercentile(clip.gap[train], 10))
    closed = float(np.median(gap[settled]))
    return {"pause_gap_mm": round(1000 * closed, 3), "clip_p10_gap_mm": round(1000 * p10, 3),
            "pause_closes": bool(closed < p10)}  # fmt: skip


def own_and_cross(clip: Clip, basis, model, others: list[Clip], args: Args) -> tuple[dict, list[dict]]:
    ds = clip.ds
    test = ds.test_ids[ds.valid[ds.test_ids]]
    pred = predicted_gap(clip, basis, model, clip.audio, ds.n_frames)
    own = lagged_correlation(pred[test], clip.gap[test], args.max_lag)
    cross = []
    for other in others:
        n = min(len(other.gap), int(args.cross_seconds * other.ds.fps))
        audio = other.audio[: round(n / other.ds.fps * 16_000)]
        gap = predicted_gap(clip, basis, model, audio, n)
        cross.append(
            {"model": clip.name, "speech": other.name, **lagged_correlation(gap, other.gap[:n], args.max_lag)}
        )
    return {"own_correlation": own["correlation"], "own_peak_lag": own["peak_lag"],
            **pause_figures(clip, basis, model, args)}, cross  # fmt: skip


def without_prior(clip: Clip, others: list[Clip], args: Args) -> tuple[dict, list[dict]]:
    ds = clip.ds
    basis = fit_motion_basis(ds, 8)
    config = resolve_model(ModelConfig(), ds.audio_spec.features)
    model = AudioMotion(ds.audio_spec.window, ds.audio_spec.dim, basis.components, past=config.context_past,
                        future=config.context_future)  # fmt: skip
    fit_audio_motion(ds, basis, model, AudioMotionConfig(steps=args.steps, augmented_copies=6))
    return own_and_cross(clip, basis, model, others, args)


def with_prior(clip: Clip, others: list[Clip], priors: dict, whole, args: Args) -> tuple[dict, list[dict]]:
    """The clip's model from each fold's prior: own figures from the fold that never saw this person,
    each cross pair from the fold that never saw the speaker of its speech."""
    ds = clip.ds
    basis = fit_motion_basis(ds, 8)
    config = AudioMotionConfig()
    built = person_motion_data(ds, basis, config.augmented_copies, config.seed)  # one build for every fold
    models = {}

    def model_for(identity: str | None):
        prior = priors.get(identity, whole)
        key = id(prior)
        if key not in models:
            person = person_motion(prior.info.shape, basis, ModelConfig())
            fit_person_motion(ds, basis, person, prior, config, built=built)
            models[key] = person
        return models[key]

    own, _ = own_and_cross(clip, basis, model_for(clip.identity), [], args)
    cross = []
    for other in others:
        cross += own_and_cross(clip, basis, model_for(other.identity), [other], args)[1]
    return own, cross


def summary(rows: list[dict], cross: list[dict]) -> dict:
    r0 = [c["correlation"] for c in cross if c["correlation"] is not None]
    lags = [c["peak_lag"] for c in cross if c["peak_lag"] is not None]
    return {
        "own": rows,
        "cross": cross,
        "cross_mean_correlation": round(float(np.mean(r0)), 3) if r0 else None,
        "cross_min_correlation": round(float(np.min(r0)), 3) if r0 else None,
        "cross_pairs_below_0.2": sum(r < 0.2 for r in r0),
        "cross_peak_lags": {str(k): lags.count(k) for k in sorted(set(lags))},
        "cross_pairs_peak_outside_1": sum(abs(k) > 1 for k in lags),
        "pauses_closed": sum(r.get("pause_closes", False) for r in rows),
    }


def main(args: Args) -> dict:
    start = time.perf_counter()
    train_prior(PriorTrainConfig(corpus=args.corpus, out=args.work))
    figures = json.loads((args.work / FIGURES).read_text())
    corpus_seconds = round(time.perf_counter() - start, 1)
    folds = figures["folds"]
    fold_priors = {
        k: load_prior(args.work / "work" / "folds" / f"fold{k}.safetensors") for k in set(folds.values())
    }
    priors = {person: fold_priors[k] for person, k in folds.items()}
    whole = load_prior(args.work / PRIOR_FILE)
    clips = [load_clip(p, set(folds)) for p in args.datasets]
    variants = {name: ([], []) for name in args.variants}
    for clip in clips:
        others = [c for c in clips if c is not clip]
        for name, (rows, cross) in variants.items():
            t = time.perf_counter()
            own, pairs = without_prior(clip, others, args) if name == "without_prior" else with_prior(
                clip, others, priors, whole, args)  # fmt: skip
            rows.append(
                {
                    "clip": clip.name,
                    "person": clip.identity,
                    **own,
                    "seconds": round(time.perf_counter() - t, 1),
                }
            )
            cross += pairs
            print(json.dumps({"variant": name, **rows[-1]}), file=sys.stderr, flush=True)
    out = {
        "benchmark": "prior",
        "date": time.strftime("%Y-%m-%d"),
        "hardware": hardware(),
        "corpus": {"summary": figures["summary"], "clips": figures["clips"], "seconds": corpus_seconds},
        "datasets": [c.name for c in clips],
        "variants": {name: summary(rows, cross) for name, (rows, cross) in variants.items()},
    }
    print(json.dumps(out, indent=2))
    s = figures["summary"]
    print(f"\ncorpus, leave-person-out: mean {s['mean_correlation']}, least {s['min_correlation']}, "
          f"{s['people_below_0.3']} below 0.3, peaks {s['peak_lags']}", file=sys.stderr)  # fmt: skip
    head = (
        "variant",
        "own (per clip)",
        "cross mean",
        "cross min",
        "pairs < 0.2",
        "peak ∉ ±1",
        "pauses closed",
    )
    print("| " + " | ".join(head) + " |", file=sys.stderr)
    for name, v in out["variants"].items():
        own = ", ".join(str(r["own_correlation"]) for r in v["own"])
        cells = (name, own, v["cross_mean_correlation"], v["cross_min_correlation"],
                 v["cross_pairs_below_0.2"], v["cross_pairs_peak_outside_1"], v["pauses_closed"])  # fmt: skip
        print("| " + " | ".join(str(c) for c in cells) + " |", file=sys.stderr)
    return out


if __name__ == "__main__":
    main(tyro.cli(Args))
