"""``gstalk prior train``: the speaker-independent motion prior from a corpus of many people talking.

1. **Track** every clip once (``prepare.corpus``; kept in ``OUT/work/clips``, so a rerun resumes).
2. **Normalise** each person's lower face (``speech.space``: rest and amplitude), so the targets say how a
   mouth moves, not whose it is.
3. **Features**: Whisper's states of each clip's speech as it plays, and of ``augmented_copies`` copies
   (other speeds, vocal tracts, gains, rooms, noises, and pauses whose target is the rest), exactly as
   ``train.audio_motion`` makes a person's (kept in ``OUT/work/features``).
4. **Folds by identity**: the corpus's people are split into ``folds`` groups of about equal speech; each
   fold's readout is fitted on the others (:func:`fit_readout`: ridge regression, from sums of the
   features and targets accumulated once per fold, so every fit costs one solve).
5. **Offsets**: each clip's lip gap predicted by the fold that never saw its speaker is compared with its
   tracked lip gap (``face.sync.estimate_offset``, with prepare's rule: ``prepare.sync``); a clear offset
   up to ``max_sync_correction`` is corrected by moving the clip's sound, and its features are made
   again. The folds are fitted once more: their held-out predictions give the **figures** (per person:
   the correlation of the predicted and tracked lip gap at lag 0 and where it peaks) and the output
   **gain** (the median ratio of the tracked to the predicted gap's spread).
6. The final readout is fitted on every clip and written with its figures, config and model card.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..config import PriorTrainConfig, config_hash, config_to_dict, save_config
from ..data.manifest import AudioSpec
from ..errors import GstalkError
from ..face.mesh import N_MESH, mouth_gap
from ..face.sync import lagged_correlation
from ..fileio import atomic_path, strict_json, write_json_atomic, write_text_atomic
from ..media.audio import TimedAudio
from ..media.augment import apply, random_augmentation
from ..outputs import claim_output
from ..prepare.corpus import CorpusClip, corpus_videos, track_corpus
from ..prepare.sync import PRIOR_IN_SYNC_S, check_sync
from ..speech import FeatureKind, build_spec, feature_kind
from ..speech.prior import CARD_FILE, PRIOR_FILE, MotionPrior, PriorInfo, PriorShape, save_prior
from ..speech.space import Normalisation, PriorSpace, canonical_weights, motion_of, normalisation
from .audio_motion import add_pauses

WORK = "work"
FIGURES = "figures.json"
#: lags (frames) over which the held-out figures look for the peak
FIGURE_LAGS = 3
#: rounds of offset corrections (each refits the folds on the corrected clips)
SYNC_ROUNDS = 3


@dataclass
class Sequence:
    """One clip's speech (or an augmented copy of it) as training rows: features and motion targets."""

    features: np.ndarray  # (T, W, C) float16
    motion: np.ndarray  # (T, 468, 3) float32 targets (identity-free motion)
    usable: np.ndarray  # (T,) bool


@dataclass
class Prepared:
    """A clip ready to fit on: its record, normalisation, targets, and its sequences at its offset."""

    clip: CorpusClip
    motion: np.ndarray  # (T, 468, 3) float32, the clip's own frames
    norm: Normalisation
    offset: int  # frames the sound is delayed by (negative: advanced)
    sequences: list[Sequence]  # the clip's own speech first, then its augmented copies


# --- the readout fitted from sums ----------------------------------------------------------------------
class Sums:
    """Sums over training rows that a ridge fit needs: N, Σx, Σxxᵀ, Σm, Σxmᵀ (x: the W·C features,
    shifted by a reference ``ref`` against cancellation; m: the 1404 motion values), in float64."""

    def __init__(self, dim: int, ref: np.ndarray) -> None:
        self.ref = ref.astype(np.float64)
        self.n = 0
        self.sx = np.zeros(dim)
        self.sxx = np.zeros((dim, dim))
        self.sm = np.zeros(N_MESH * 3)
        self.sxm = np.zeros((dim, N_MESH * 3))

    def add(self, features: np.ndarray, motion: np.ndarray, usable: np.ndarray, chunk: int = 2048) -> None:
        """Add the usable rows of (T, W, C) ``features`` and (T, 468, 3) ``motion``."""
        idx = np.flatnonzero(usable)
        for start in range(0, len(idx), chunk):
            rows = idx[start : start + chunk]
            x = (features[rows].reshape(len(rows), -1).astype(np.float64) - self.ref).astype(np.float32)
            m = motion[rows].reshape(len(rows), -1).astype(np.float32)
            self.n += len(rows)
            self.sx += x.sum(0, dtype=np.float64)
            self.sxx += (x.T @ x).astype(np.float64)
            self.sm += m.sum(0, dtype=np.float64)
            self.sxm += (x.T @ m).astype(np.float64)

    def __add__(self, other: Sums) -> Sums:
        out = Sums(len(self.sx), self.ref)
        out.n = self.n + other.n
        for name in ("sx", "sxx", "sm", "sxm"):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        return out


def fit_readout(sums: Sums, space: PriorSpace, ridge: float, window: int, channels: int) -> MotionPrior:
    """The ridge readout of ``space``'s coefficients from the standardised features whose ``sums`` are
    given: W = (X̃ᵀX̃ + λI)⁻¹ X̃ᵀ(Z − Z̄), X̃ each feature standardised over the rows, Z the rows' motion
    projected on ``space`` (linear, so X̃ᵀZ follows from Σxmᵀ). Returns an untrained-gain prior whose
    ``info`` the caller fills in."""
    n = max(sums.n, 1)
    mean = sums.sx / n
    cov = sums.sxx / n - np.outer(mean, mean)
    std = np.sqrt(np.maximum(np.diag(cov), 1e-6))
    gram = n * cov / np.outer(std, std)  # Σ x̃ x̃ᵀ
    cross = (sums.sxm - np.outer(sums.sx, sums.sm) / n) / std[:, None]  # Σ x̃ (m − m̄)ᵀ
    # z = P (m − μ_space): P = diag(1 / var_k) · basisᵀ weighted by ω (PriorSpace.project)
    basis = space.basis.double().numpy().reshape(space.components, -1)
    weights = np.repeat(space.vertex_weights.double().numpy(), 3)
    norms = (basis**2 * weights).sum(1)
    proj = basis * weights / norms[:, None]  # (K, 1404)
    rhs = cross @ proj.T  # Σ x̃ (z − z̄)ᵀ, (D, K)
    zbar = proj @ (sums.sm / n - space.mean.double().numpy().reshape(-1))
    weight = np.linalg.solve(gram + ridge * np.eye(len(gram)), rhs)
    info = PriorInfo(PriorShape(window, channels, space.components), _placeholder_spec())
    prior = MotionPrior(info)
    prior.space.load_state_dict(space.state_dict())
    with torch.no_grad():
        prior.readout.mean.copy_(torch.from_numpy((mean + sums.ref).reshape(window, channels)))
        prior.readout.std.copy_(torch.from_numpy(std.reshape(window, channels)))
        prior.readout.weight.copy_(torch.from_numpy(weight.T))
        prior.readout.bias.copy_(torch.from_numpy(zbar))
        # the rest (motion zero), about which the gain scales: every prior made here has it, the folds' too
        prior.origin.copy_(prior.space.project(torch.zeros(N_MESH, 3).to(prior.space.mean)))
    return prior


def _placeholder_spec() -> AudioSpec:
    return AudioSpec("whisper", 50.0, 1, 1)


# --- the corpus as sequences ------------------------------------------------------------------------------
def delayed_audio(clip: CorpusClip, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """The clip's sound delayed by ``offset`` frames (advanced when negative), from frame 0 for all its
    frames, and (T,) bool: the frames with sound under them."""
    n = len(clip.valid)
    timed = TimedAudio(clip.audio, offset / clip.fps)
    heard = np.zeros(n, bool)
    first, stop = max(0, offset), min(n, n + offset)
    heard[first:stop] = True
    return timed.between(0.0, n / clip.fps), heard


def clip_sequences(clip: CorpusClip, motion: np.ndarray, offset: int, kind: FeatureKind, copies: int,
                   seed: int, cache: Path) -> list[Sequence]:  # fmt: skip
    """The clip's speech delayed by ``offset`` frames and ``copies`` augmented copies of it, with their
    targets, from ``cache`` when an earlier run made them."""
    path = cache / f"{clip.name}_{offset:+d}_{copies}_{seed}.npz"
    audio, heard = delayed_audio(clip, offset)
    usable = clip.valid & heard
    n = len(usable)
    if path.is_file():
        with np.load(path) as data:
            stored = {k: data[k] for k in data.files}
    else:
        rng = np.random.default_rng([seed, *clip.name.encode()])
        stored = {"f0": kind.compute(audio, n, clip.fps)}
        for c in range(copies):
            aug = random_augmentation(rng)
            noisy = apply(audio, aug, rng)
            m = int(len(noisy) / kind.spec.rate * clip.fps)
            t = np.arange(m) * aug.speed
            pause = np.zeros((m, 1), np.float32)
            if c % 2 == 0:  # the targets' "rest" is 0 in motion space: add_pauses ramps a marker to 1
                noisy, pause = add_pauses(noisy, pause, np.ones(1, np.float32), clip.fps, kind.spec.rate, rng)
            stored[f"f{c + 1}"] = kind.compute(noisy, m, clip.fps, warp=aug.warp)
            stored[f"t{c + 1}"], stored[f"p{c + 1}"] = t, pause[:, 0]
        cache.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **stored)
    out = [Sequence(stored["f0"], motion, usable)]
    for c in range(copies):
        t, pause = stored[f"t{c + 1}"], stored[f"p{c + 1}"]
        lo = np.clip(np.floor(t).astype(int), 0, n - 2)
        frac = np.clip(t - lo, 0, 1)[:, None, None]
        target = (1 - frac) * motion[lo] + frac * motion[lo + 1]
        target = (1 - pause[:, None, None]) * target  # toward the rest (0) in the pauses
        ok = (t <= n - 1) & usable[lo] & usable[lo + 1] | (pause >= 1)
        out.append(Sequence(stored[f"f{c + 1}"], target.astype(np.float32), ok))
    return out


def fold_of_people(clips: list[CorpusClip], folds: int) -> dict[str, int]:
    """Identity → fold: people sorted by their seconds of speech, each given to the fold with the least so
    far (about equal folds; deterministic)."""
    seconds: dict[str, float] = {}
    for c in clips:
        seconds[c.identity] = seconds.get(c.identity, 0.0) + c.seconds
    load = [0.0] * folds
    out = {}
    for person in sorted(seconds, key=lambda p: (-seconds[p], p)):
        k = int(np.argmin(load))
        out[person] = k
        load[k] += seconds[person]
    return out


# --- figures ----------------------------------------------------------------------------------------------


def held_out_gap(prior: MotionPrior, prepared: Prepared) -> np.ndarray:
    """(T,) the lip gap (metres, the clip's own face) that ``prior`` predicts from the clip's own speech:
    the predicted motion placed at the clip's rest with its amplitude (``face.mesh.mouth_gap``)."""
    with torch.no_grad():
        z = prior.predict(prepared.sequences[0].features)
        motion = prior.space.reconstruct(z).double().numpy()
    return mouth_gap(prepared.norm.rest + prepared.norm.amplitude * motion)


def tracked_gap(clip: CorpusClip) -> np.ndarray:
    """(T,) the tracked inner-lip gap (metres), NaN where the face was lost."""
    gap = mouth_gap(clip.mesh[:, :N_MESH].astype(np.float64))
    return np.where(clip.valid, gap, np.nan)


def figure_of(prepared: Prepared, predicted: np.ndarray) -> dict:
    """The held-out figures of one clip: its predicted and tracked lip gap compared at lag 0 and at the
    peak within ±3 frames (``face.sync.lagged_correlation``), and the ratio of their spreads (5th to 95th
    percentile)."""
    true = tracked_gap(prepared.clip)
    _, heard = delayed_audio(prepared.clip, prepared.offset)
    pred = np.where(heard, predicted, np.nan)
    lag = lagged_correlation(pred, true, FIGURE_LAGS)
    ok = np.isfinite(pred) & np.isfinite(true)
    spread = lambda g: float(np.percentile(g, 95) - np.percentile(g, 5))  # noqa: E731
    return {
        "clip": prepared.clip.name,
        "person": prepared.clip.identity,
        "language": prepared.clip.language,
        "seconds": round(prepared.clip.seconds, 1),
        "offset_frames": prepared.offset,
        "correlation": lag["correlation"],
        "peak_lag": lag["peak_lag"],
        "peak_correlation": lag["peak_correlation"],
        "range_ratio": round(spread(pred[ok]) / max(spread(true[ok]), 1e-9), 3) if ok.sum() > 10 else None,
    }


def summarise_figures(rows: list[dict]) -> dict:
    """Per person (the mean over their clips) and over people: the mean and least lag-0 correlation, how
    many people fall below 0.3, and how the peaks lie."""
    people: dict[str, list[float]] = {}
    for r in rows:
        if r["correlation"] is not None:
            people.setdefault(r["person"], []).append(r["correlation"])
    per_person = {p: round(float(np.mean(v)), 3) for p, v in sorted(people.items())}
    values = list(per_person.values())
    lags = [r["peak_lag"] for r in rows if r["peak_lag"] is not None]
    return {
        "people": len(per_person),
        "mean_correlation": round(float(np.mean(values)), 3) if values else None,
        "min_correlation": round(float(np.min(values)), 3) if values else None,
        "people_below_0.3": sum(v < 0.3 for v in values),
        "peak_lags": {str(k): lags.count(k) for k in sorted(set(lags))},
        "clips_peak_outside_1": sum(abs(k) > 1 for k in lags),
        "median_range_ratio": round(
            float(np.median([r["range_ratio"] for r in rows if r["range_ratio"]])), 3
        ),
        "per_person": per_person,
    }


class PriorTrainer:
    """One ``gstalk prior train`` run (see the module docstring); :meth:`run` returns the output folder."""

    def __init__(self, config: PriorTrainConfig) -> None:
        self.config = config
        self.out = Path(config.out)
        self.work = self.out / WORK
        self.start = time.perf_counter()
        #: each fold's prior of the last round (fold → prior), kept in work/folds for benchmarks
        self.fold_priors: dict[int, MotionPrior] = {}
        self.folds: dict[str, int] = {}

    def say(self, text: str) -> None:
        if self.config.progress:
            print(f"gstalk prior train [{time.perf_counter() - self.start:5.0f} s]: {text}", file=sys.stderr,
                  flush=True)  # fmt: skip

    def run(self) -> Path:
        config = self.config
        videos = corpus_videos(config.corpus)
        digest = config_hash(config, ignore=("overwrite", "progress", "out"))
        with claim_output(self.out, [config.corpus], overwrite=config.overwrite, what="motion prior",
                          markers=(PRIOR_FILE,)):  # fmt: skip
            state = self.work / "state.json"
            done = json.loads(state.read_text()).get("config_hash") if state.is_file() else None
            if (self.out / PRIOR_FILE).is_file():
                if done == digest and not config.overwrite:
                    self.say(f"{self.out} already holds a prior made with this config; nothing to do")
                    return self.out
                if not config.overwrite:
                    raise GstalkError(f"{self.out} already holds a motion prior made with another config",
                                      "pass --overwrite to replace it, or choose another --out")  # fmt: skip
            self.work.mkdir(parents=True, exist_ok=True)
            save_config(config, self.out)
            # the tracked clips and features are kept by what makes them (fps; Whisper, copies, seed,
            # offset), so any config resumes from them
            clips = track_corpus(videos, self.work / f"clips-{config.fps:g}fps", config.fps, self.say)
            out = self._fit(clips)
            write_json_atomic(state, {"config_hash": digest})
            return out

    def _fit(self, clips: list[CorpusClip]) -> Path:
        config = self.config
        spec = build_spec("whisper", config.whisper)
        kind = feature_kind(spec)
        weights = canonical_weights(np.mean([c.mesh[c.valid][:, :N_MESH].mean(0) for c in clips], 0))
        folds = fold_of_people(clips, max(2, min(config.folds, len({c.identity for c in clips}))))
        self.folds = folds
        norms = {c.name: normalisation(c.mesh, c.valid, weights) for c in clips}
        offsets = {c.name: 0 for c in clips}
        prepared = self._prepare(clips, norms, offsets, kind)
        minutes = sum(c.seconds for c in clips) / 60
        self.say(f"{len(clips)} clips of {len(folds)} people, {minutes:.1f} min; {config.augmented_copies} "
                 f"augmented copies each; {max(folds.values()) + 1} folds")  # fmt: skip
        rows, gains = self._folds(prepared, folds, weights, spec)
        for _ in range(SYNC_ROUNDS):
            corrections = self._offsets(prepared, rows)
            if not corrections:
                break
            offsets.update(corrections)
            prepared = self._prepare(clips, norms, offsets, kind)
            rows, gains = self._folds(prepared, folds, weights, spec)
        gain = float(np.clip(np.median(gains), 1.0, 4.0)) if gains else 1.0
        summary = summarise_figures(rows)
        self.say(f"held out by person: mean correlation {summary['mean_correlation']}, least "
                 f"{summary['min_correlation']}, {summary['people_below_0.3']} below 0.3, peaks "
                 f"{summary['peak_lags']}; output gain {gain:.2f}")  # fmt: skip
        prior = self._final(prepared, weights, spec, gain, clips, summary, rows, offsets)
        for fold_prior in self.fold_priors.values():  # saved for benchmarks: each as the final one is made
            fold_prior.gain.fill_(gain)
        return self._write(prior, summary, rows, offsets, clips)

    def _prepare(self, clips, norms, offsets, kind) -> list[Prepared]:
        out = []
        for k, c in enumerate(clips):
            motion = motion_of(c.mesh, norms[c.name])
            seqs = clip_sequences(c, motion, offsets[c.name], kind, self.config.augmented_copies,
                                  self.config.seed, self._features_cache())  # fmt: skip
            out.append(Prepared(c, motion, norms[c.name], offsets[c.name], seqs))
            self.say(f"features of {c.name} ({k + 1}/{len(clips)}), sound moved {offsets[c.name]:+d} frames")
        return out

    def _features_cache(self) -> Path:
        """The folder of cached features, named by what makes them besides the clip: the frame rate and
        the Whisper settings."""
        made = config_hash(self.config.whisper) + f"-{self.config.fps:g}fps"
        return self.work / f"features-{made}"

    def _sums(self, prepared: list[Prepared], folds: dict[str, int]) -> list[Sums]:
        first = prepared[0].sequences[0].features
        ref = first.reshape(len(first), -1).astype(np.float64).mean(0)
        sums = [Sums(ref.size, ref) for _ in range(max(folds.values()) + 1)]
        for p in prepared:
            for seq in p.sequences:
                sums[folds[p.clip.identity]].add(seq.features, seq.motion, seq.usable)
        return sums

    def _space(self, prepared: list[Prepared], weights: np.ndarray) -> PriorSpace:
        motions = [p.motion[p.clip.valid] for p in prepared]
        amplitudes = [p.norm.amplitude for p in prepared]
        return PriorSpace.fit(motions, weights, amplitudes, self.config.components)

    def _folds(self, prepared, folds, weights, spec) -> tuple[list[dict], list[float]]:
        """Each fold's readout fitted on the others; the held-out figures of every clip (with the ratio of
        tracked to predicted spread as ``_gain``)."""
        config = self.config
        sums = self._sums(prepared, folds)
        rows, gains = [], []
        window, channels = spec.window, spec.dim
        for k in range(len(sums)):
            train = [p for p in prepared if folds[p.clip.identity] != k]
            held = [p for p in prepared if folds[p.clip.identity] == k]
            if not held:
                continue
            total = sum((s for j, s in enumerate(sums) if j != k), Sums(len(sums[0].sx), sums[0].ref))
            prior = fit_readout(total, self._space(train, weights), config.ridge, window, channels)
            held_out = {"held_out": sorted({p.clip.identity for p in held})}
            prior.info = dataclasses.replace(prior.info, features=spec, corpus=held_out)
            self.fold_priors[k] = prior
            for p in held:
                pred = held_out_gap(prior, p)
                row = figure_of(p, pred)
                row["_predicted"] = pred
                if row["range_ratio"]:
                    row["_gain"] = 1.0 / row["range_ratio"]
                    gains.append(row["_gain"])
                rows.append(row)
            people = ", ".join(sorted({p.clip.identity for p in held}))
            self.say(f"fold {k + 1}/{len(sums)}: held out {people}")
        return rows, gains

    def _offsets(self, prepared: list[Prepared], rows: list[dict]) -> dict[str, int]:
        """Clip → corrected offset (frames), for the clips whose held-out prediction clearly peaks away from
        their tracked lip gap (prepare's rule, ``prepare.sync.check_sync`` with the prediction), away from
        where the median clip peaks: the folds' own lag, which the clips that are off pull with them,
        counts as in sync."""
        by_clip = {r["clip"]: r for r in rows}
        lead = int(np.median([r["peak_lag"] for r in rows if r["peak_lag"] is not None]))
        out = {}
        for p in prepared:
            clip = p.clip
            n = len(clip.valid)
            _, heard = delayed_audio(clip, p.offset)
            predicted = np.where(heard, by_clip[clip.name]["_predicted"], np.nan)
            check = check_sync(TimedAudio(clip.audio, 0.0), clip.landmarks, clip.valid, 0, (0, n), clip.fps,
                               self.config.max_sync_correction, predicted=predicted,
                               lead_frames=-lead, in_sync_s=PRIOR_IN_SYNC_S,
                               fallback=False)  # fmt: skip
            if check.verdict == "corrected":
                frames = round(check.shift_s * clip.fps)
                if frames:
                    out[clip.name] = p.offset + frames
                    self.say(f"{clip.name}: {check.message}")
        return out

    def _final(self, prepared, weights, spec, gain, clips, summary, rows, offsets) -> MotionPrior:
        folds = {p.clip.identity: 0 for p in prepared}
        sums = self._sums(prepared, folds)
        prior = fit_readout(sums[0], self._space(prepared, weights), self.config.ridge, spec.window, spec.dim)
        languages = sorted({c.language for c in clips if c.language})
        corpus = {
            "clips": len(clips),
            "people": len({c.identity for c in clips}),
            "minutes": round(sum(c.seconds for c in clips) / 60, 2),
            "languages": languages,
            "offsets_frames": {k: v for k, v in offsets.items() if v},
        }
        info = PriorInfo(
            PriorShape(spec.window, spec.dim, self.config.components),
            spec,
            corpus=corpus,
            figures={k: v for k, v in summary.items() if k != "per_person"},
            config=config_to_dict(self.config)["config"],
        )
        final = MotionPrior(info)
        final.load_state_dict(prior.state_dict())
        final.gain.fill_(gain)
        return final

    def _write(self, prior: MotionPrior, summary: dict, rows: list[dict], offsets: dict, clips) -> Path:
        for k, fold_prior in self.fold_priors.items():  # the held-out folds' priors, for benchmarks/prior.py
            save_prior(self.work / "folds" / f"fold{k}.safetensors", fold_prior)
        clip_rows = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
        figures = {"summary": summary, "folds": self.folds, "clips": clip_rows}
        write_json_atomic(self.out / FIGURES, strict_json(figures))
        write_text_atomic(self.out / CARD_FILE, model_card(prior, summary, rows, clips, self.config))
        save_prior(self.out / PRIOR_FILE, prior)  # last: its presence says the prior is complete
        size = (self.out / PRIOR_FILE).stat().st_size / 1e6
        self.say(f"done: {self.out / PRIOR_FILE} ({size:.1f} MB), {self.out / CARD_FILE}")
        return self.out


def model_card(prior: MotionPrior, summary: dict, rows: list[dict], clips: list[CorpusClip],
               config: PriorTrainConfig) -> str:  # fmt: skip
    """The prior's model card (Markdown): what it is, the data, the command, the held-out figures, the
    intended use and its limits."""
    info = prior.info
    w = info.features.whisper
    people: dict[str, list[CorpusClip]] = {}
    for c in clips:
        people.setdefault(c.identity, []).append(c)
    corpus_rows = "\n".join(
        f"| {p} | {', '.join(sorted({c.language or '?' for c in cs}))} | {len(cs)} | "
        f"{sum(c.seconds for c in cs):.1f} | {summary['per_person'].get(p, '–')} |"
        for p, cs in sorted(people.items())
    )
    offsets = info.corpus.get("offsets_frames") or {}
    moved = ", ".join(f"{k} {v:+d}" for k, v in sorted(offsets.items())) or "none"
    return f"""# Model card: gstalk's motion prior

Made {dt.date.today().isoformat()} by gstalk {__version__} with

    gstalk prior train --corpus {config.corpus} --out {config.out}

(ridge {config.ridge:g}, {config.components} components, {config.augmented_copies} augmented copies,
{config.folds} folds by person; the full config is in `config.json` beside the weights).

## What it is
A speaker-independent map from speech to how a lower face moves: each video frame's {info.shape.window}
states of Whisper's encoder ({w.model if w else "?"}, SHA-256 {w.sha256[:16] if w else "?"}…, blocks of
{w.block if w else "?"} s with {w.history if w else "?"} s of history and {w.lookahead if w else "?"} s
of lookahead, first state {w.first_state if w else "?"}) → {info.shape.components} coefficients of the
lower face's motion about its own rest, in units of its own amplitude (identity-free: shape, scale and
head pose removed). A linear readout (ridge regression), then a gain of {float(prior.gain[0]):.2f} that
restores the spread a least-squares fit loses. {prior.readout.weight.numel():,} weights.

## Data
{info.corpus["clips"]} clips of {info.corpus["people"]} people, {info.corpus["minutes"]} minutes,
languages: {", ".join(info.corpus["languages"]) or "not named"}. Sources and licences: the corpus's own
README. No footage is stored in the weights or beside them; the tracked clips and features stay in
`work/` of the output folder.

| person | language | clips | seconds | held-out correlation |
|---|---|---|---|---|
{corpus_rows}

Audio–video offsets corrected before training (frames at {config.fps:g} fps, the sound moved later when
positive), where a held-out prediction peaked clearly away from the tracked mouth: {moved}.

## Held-out figures (leave-person-out, {config.folds} folds)
The predicted lip gap of each clip, from the folds that never saw its speaker, against the gap tracked in
its video: mean correlation over people **{summary["mean_correlation"]}** at lag 0, least
{summary["min_correlation"]}, {summary["people_below_0.3"]} people below 0.3; peaks at lags
{summary["peak_lags"]} (frames; positive: the prediction comes late); median spread ratio
{summary["median_range_ratio"]} before the gain.

## Intended use
The starting point of every gstalk avatar's audio → motion (`gstalk train --prior`), which a person's
clip then adjusts; the sync check of `gstalk prepare`. Any voice and language Whisper hears, but it was
fitted on few people and mostly English: expect less on voices, languages and speaking styles far from
these. It predicts the lips and jaw only (no blinks, brows or head motion), and is not a lip reader or a
speaker verifier.
"""


def train_prior(config: PriorTrainConfig) -> Path:
    """Run ``gstalk prior train``; returns the prior's folder. Raises :class:`GstalkError` for a corpus or
    output that cannot be used (see ``prepare.corpus`` and ``outputs``)."""
    return PriorTrainer(config).run()


__all__ = ["PriorTrainer", "Sums", "fit_readout", "fold_of_people", "model_card", "train_prior"]
