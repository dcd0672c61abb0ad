"""``prepare()``: a talking-head video becomes a dataset folder, step by step, resumable.

The dataset is built in a work folder beside the output (``.NAME.partial``) and moved into place only when
complete, so a failed or interrupted run never leaves a half-written dataset where training looks. Each
finished step is recorded there; re-running the same command skips the finished steps. A problem with
the input (no face, no audio, too short, ...) removes the work folder and names the fix.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..config import PrepareConfig, config_hash, save_config
from ..data.manifest import AudioSpec, ExpressionSpec, Manifest, SourceInfo
from ..data.tracks import Tracks
from ..data.writer import DatasetWriter
from ..errors import GstalkError
from ..face.expression import EXPLICIT, expression_features
from ..face.landmarks import N_LANDMARKS
from ..face.mesh import face_triangles
from ..face.pose import estimate_poses, known_poses, normalise_landmarks
from ..face.track import N_BLENDSHAPES, FaceTracker
from ..fileio import write_json_atomic
from ..media.audio import AUDIO_RATE, is_silent
from ..outputs import check_free_space, claim_output
from ..regions import Region
from .background import BackgroundAccumulator, sample_indices
from .crop import Crop, choose_crop
from .regions import PersonSegmenter, segment_regions
from .sources import Source, VideoSource

#: audio window centred on each frame (ER-NeRF / TalkingGaussian use 16 frames of 10 ms)
AUDIO_WINDOW_MS = 160.0


#: disk a dataset takes per frame pixel (JPEG frames, PNG label maps, arrays): 0.26 measured on the
#: 71 s CNN clip at 512², with a margin
BYTES_PER_PIXEL = 0.35


class _Work:
    """The work folder: step outputs plus a record of which steps finished, for one config."""

    def __init__(self, out: Path, digest: str) -> None:
        self.dir = out.parent / f".{out.name}.partial"
        self.state_path = self.dir / "steps.json"
        state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        if state.get("config") != digest:
            shutil.rmtree(self.dir, ignore_errors=True)
            state = {"config": digest, "done": {}}
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state = state

    def done(self, step: str) -> bool:
        return step in self.state["done"]

    def finish(self, step: str, seconds: float) -> None:
        self.state["done"][step] = round(seconds, 2)
        write_json_atomic(self.state_path, self.state)

    def seconds(self) -> dict[str, float]:
        return dict(self.state["done"])


def _check_output(config: PrepareConfig) -> None:
    if config.out.exists() and not config.overwrite:
        raise GstalkError(
            f"{config.out} already exists", "pass --overwrite to replace it, or choose another --out"
        )


def _is_complete(config: PrepareConfig, digest: str) -> bool:
    manifest = config.out / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text()).get("config_hash") == digest
    except json.JSONDecodeError:
        return False


def prepare(config: PrepareConfig, source: Source | None = None) -> Path:
    """Build the dataset at ``config.out`` from ``config.video`` (or another ``source``); returns its path."""
    digest = config_hash(config, ignore=("overwrite", "progress"))
    inputs = [config.video]
    with claim_output(config.out, inputs, overwrite=config.overwrite, what="dataset"):
        if not config.overwrite and _is_complete(config, digest):
            _say(config, f"{config.out} is already prepared with this config; nothing to do")
            return config.out
        _check_output(config)
        return _prepare(config, source or VideoSource(config.video), digest)


def _prepare(config: PrepareConfig, source: Source, digest: str) -> Path:
    info = source.info
    if not info.has_audio:
        raise GstalkError(
            f"{source.name} has no audio track",
            "gstalk learns lip motion from the speech: use the clip with its sound",
        )
    n_frames = info.frames_at(config.fps)
    if n_frames < config.min_seconds * config.fps:
        raise GstalkError(
            f"{source.name} is {info.duration:.1f} s long; at least {config.min_seconds:g} s is needed "
            "(a few minutes trains best)",
            "use a longer clip of the person talking",
        )
    check_free_space(config.out.parent, n_frames * config.size**2 * BYTES_PER_PIXEL, "the dataset")
    work = _Work(config.out, digest)
    try:
        _run_steps(config, source, n_frames, work)
    except GstalkError:
        shutil.rmtree(work.dir, ignore_errors=True)
        raise
    except OSError as err:  # disk full, permissions: the partial folder stays so a re-run resumes
        raise GstalkError(
            f"prepare could not write {config.out} ({err.strerror or err}); the finished steps are kept",
            "free disk space or fix the folder's permissions, then run the same command to resume",
        ) from err
    if config.out.exists():  # --overwrite: move the old dataset aside, the new one in, then delete the old
        aside = config.out.parent / f".{config.out.name}.replaced"
        if aside.exists():
            shutil.rmtree(aside)
        os.replace(config.out, aside)
        os.replace(work.dir / "dataset", config.out)
        shutil.rmtree(aside)
    else:
        os.replace(work.dir / "dataset", config.out)
    shutil.rmtree(work.dir, ignore_errors=True)
    _say(config, f"dataset written to {config.out}")
    return config.out


def _say(config: PrepareConfig, text: str) -> None:
    if config.progress:
        tqdm.write(f"gstalk prepare: {text}")


def _bar(config: PrepareConfig, total: int, desc: str) -> tqdm:
    return tqdm(total=total, desc=f"{desc:<10}", unit="frame", disable=not config.progress, leave=True)


def _run_steps(config: PrepareConfig, source: Source, n_frames: int, work: _Work) -> None:
    ds = work.dir / "dataset"
    ds.mkdir(exist_ok=True)
    for step, run in STEPS.items():
        if work.done(step):
            _say(config, f"{step}: done in an earlier run, skipped")
            continue
        start = time.perf_counter()
        run(config, source, n_frames, work.dir, ds)
        work.finish(step, time.perf_counter() - start)


# --- steps ------------------------------------------------------------------------------------------
def _step_track(config: PrepareConfig, source: Source, n_frames: int, wd: Path, ds: Path) -> None:
    audio = source.audio()
    if is_silent(audio):
        raise GstalkError(
            f"the audio track of {source.name} is silent",
            "gstalk learns lip motion from the speech: use a clip where the person is heard",
        )
    landmarks = np.zeros((n_frames, N_LANDMARKS, 3), np.float32)
    valid = np.zeros(n_frames, bool)
    n_faces = np.zeros(n_frames, np.int16)
    blend = np.zeros((n_frames, N_BLENDSHAPES), np.float32) if config.landmarker else None
    with FaceTracker(config.landmarker, fps=config.fps) as tracker, _bar(config, n_frames, "track") as bar:
        for i, rgb in source.frames(config.fps):
            if i >= n_frames:
                break
            obs = tracker.track(rgb)
            if obs is not None:
                landmarks[i], valid[i], n_faces[i] = obs.landmarks, True, obs.n_faces
                if blend is not None and obs.blendshapes is not None:
                    blend[i] = obs.blendshapes
            bar.update()
        names = tracker.blendshape_names
    if source.cameras is not None:
        valid &= source.cameras.valid[:n_frames]
    _check_tracking(config, source.name, valid)
    extra = {"blendshapes": blend} if blend is not None else {}
    np.savez(wd / "track.npz", landmarks=landmarks, valid=valid, n_faces=n_faces, **extra)
    np.save(wd / "audio.npy", audio)
    (wd / "blendshape_names.json").write_text(json.dumps(names or []))


def _lost_runs(valid: np.ndarray) -> list[tuple[int, int]]:
    runs, start = [], None
    for i, v in enumerate(np.append(valid, True)):
        if not v and start is None:
            start = i
        elif v and start is not None:
            runs.append((start, i))
            start = None
    return runs


def _check_tracking(config: PrepareConfig, name: str, valid: np.ndarray) -> None:
    if not valid.any():
        raise GstalkError(
            f"no face was found in {name}",
            "use a video where the person's face is visible and turned toward the camera",
        )
    lost = 1 - valid.mean()
    runs = _lost_runs(valid)
    longest = max((b - a for a, b in runs), default=0) / config.fps
    if lost > config.max_lost_fraction or longest > config.max_lost_seconds:
        spans = ", ".join(
            f"{a / config.fps:.1f}–{b / config.fps:.1f} s"
            for a, b in sorted(runs, key=lambda r: r[0] - r[1])[:5]
        )
        raise GstalkError(
            f"the face is lost in {lost:.0%} of the frames of {name} "
            f"(longest stretch {longest:.1f} s; "
            f"lost at {spans})",
            "cut the video to the part where the face is visible, or raise --max-lost-fraction / "
            "--max-lost-seconds",
        )


def _step_pose(config: PrepareConfig, source: Source, n_frames: int, wd: Path, ds: Path) -> None:
    with np.load(wd / "track.npz") as t:
        landmarks, valid = t["landmarks"], t["valid"]
    width, height = source.info.width, source.info.height
    if source.cameras is not None:  # cameras come with the input: keep its framing and its poses
        crop = Crop(0, 0, width, config.size)
    else:
        crop = choose_crop(landmarks, valid, width, height, config.size, config.crop_scale)
    lm = crop.points(landmarks)
    principal = crop.points(np.array([[width / 2, height / 2]]))[0]
    focal = None
    if config.fov_deg is not None:
        focal = 0.5 * config.size / np.tan(np.radians(config.fov_deg) / 2)
    poses = estimate_poses(
        lm,
        valid,
        config.size,
        (float(principal[0]), float(principal[1])),
        smoothing_sigma=config.pose_smoothing,
        focal=focal,
    )
    if source.cameras is not None:
        known = source.cameras
        poses = known_poses(
            poses, known.world_to_cam[:n_frames], known.valid[:n_frames], known.intrinsics * crop.scale
        )
    np.savez(
        wd / "pose.npz",
        landmarks=lm,
        world_to_cam=poses.world_to_cam,
        world_to_cam_raw=poses.world_to_cam_raw,
        intrinsics=poses.intrinsics,
        canonical=poses.canonical,
        reprojection_px=poses.reprojection_px,
    )
    (wd / "pose.json").write_text(
        json.dumps({"crop": crop.to_dict(), "jitter": poses.jitter, "focal_fit": poses.focal_fit})
    )


def _step_frames(config: PrepareConfig, source: Source, n_frames: int, wd: Path, ds: Path) -> None:
    crop = Crop(**json.loads((wd / "pose.json").read_text())["crop"])
    with np.load(wd / "pose.npz") as p:
        landmarks = p["landmarks"]
    with np.load(wd / "track.npz") as t:
        valid = t["valid"]
    writer = DatasetWriter(ds, config.jpeg_quality)
    samples = sample_indices(n_frames, config.background_samples)
    plate = BackgroundAccumulator()
    segmenter = PersonSegmenter()
    counts = np.zeros(len(Region), np.int64)

    def label_and_write(i: int, rgb: np.ndarray, person: np.ndarray) -> np.ndarray:
        labels = segment_regions(rgb, landmarks[i] if valid[i] else None, person)
        writer.frame(i, rgb, labels)
        return labels

    # decoding and person segmentation here; region labelling and encoding on two worker threads
    # (OpenCV and most NumPy work release the GIL)
    with ThreadPoolExecutor(max_workers=2) as pool, _bar(config, n_frames, "regions") as bar:
        pending: list[tuple[int, np.ndarray, Any]] = []

        def collect(item) -> None:
            i, rgb, future = item
            labels = future.result()
            counts[:] += np.bincount(labels.ravel(), minlength=len(Region))
            if i in samples:
                plate.add(rgb, labels)
            bar.update()

        for i, full in source.frames(config.fps):
            if i >= n_frames:
                break
            rgb = crop.apply(full)
            pending.append((i, rgb, pool.submit(label_and_write, i, rgb, segmenter(rgb))))
            if len(pending) > 8:
                collect(pending.pop(0))
        for item in pending:
            collect(item)
    segmenter.close()
    background, seen = plate.plate()
    writer.background(background)
    (wd / "frames.json").write_text(
        json.dumps(
            {
                "background_seen_fraction": float(seen.mean()),
                "region_fractions": {r.name.lower(): float(counts[r] / max(counts.sum(), 1)) for r in Region},
            }
        )
    )


def _step_audio(config: PrepareConfig, source: Source, n_frames: int, wd: Path, ds: Path) -> None:
    audio = np.load(wd / "audio.npy")
    writer = DatasetWriter(ds)
    writer.audio(audio)
    device = "cuda" if config.device == "cuda" else "cpu"
    if config.device == "auto":
        from ..device import pick_device

        device = pick_device("auto").type
    seconds = len(audio) / AUDIO_RATE
    with tqdm(desc=f"{'audio':<10}", total=None, disable=not config.progress,
              bar_format=f"{{desc}}: features of {seconds:.0f} s of speech, {{elapsed}}") as bar:  # fmt: skip
        spec = AudioSpec.build(
            config.audio_features, config.whisper, config.speech_model, config.audio_normalisation,
            config.audio_deltas, device, AUDIO_WINDOW_MS,
        )  # fmt: skip
        feats = spec.compute(audio, n_frames, config.fps, config.speech_model, device)
        bar.update()
    writer.audio_features(feats)
    (wd / "audio.json").write_text(json.dumps(dataclasses.asdict(spec)))


def _splits(config: PrepareConfig, n_frames: int, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n_test = max(1, round(n_frames * config.test_fraction))
    ids = np.arange(n_frames)
    train, test = ids[: n_frames - n_test], ids[n_frames - n_test :]
    return train[valid[train]], test[valid[test]]


def _step_expression(config: PrepareConfig, source: Source, n_frames: int, wd: Path, ds: Path) -> None:
    with np.load(wd / "track.npz") as t:
        valid = t["valid"]
        blend = t["blendshapes"] if "blendshapes" in t.files else None
    with np.load(wd / "pose.npz") as p:
        pose = {k: p[k] for k in p.files}
    train, test = _splits(config, n_frames, valid)
    with _bar(config, 1, "expression") as bar:
        normalised = normalise_landmarks(pose["landmarks"], pose["canonical"], valid)
        expr = expression_features(normalised, valid, train, blend)
        bar.update()
    tracks = Tracks(
        valid=valid,
        landmarks2d=pose["landmarks"][..., :2],
        mesh=normalised,
        triangles=face_triangles(pose["canonical"]),
        world_to_cam=pose["world_to_cam"],
        world_to_cam_raw=pose["world_to_cam_raw"],
        reprojection_px=pose["reprojection_px"],
        canonical_shape=pose["canonical"],
        expression=expr.explicit,
        expression_code=expr.code,
        pca_mean=expr.pca_mean,
        pca_basis=expr.pca_basis,
    )
    DatasetWriter(ds).tracks(tracks)
    names = json.loads((wd / "blendshape_names.json").read_text())
    (wd / "expression.json").write_text(
        json.dumps(
            {
                "train": train.tolist(),
                "test": test.tolist(),
                "code_kind": expr.code_kind,
                "code_dim": int(expr.code.shape[1]),
                "code_names": names if expr.code_kind == "blendshapes" else None,
            }
        )
    )


def _step_report(config: PrepareConfig, source: Source, n_frames: int, wd: Path, ds: Path) -> None:
    from .report import contact_sheet, timeline

    pose_info = json.loads((wd / "pose.json").read_text())
    frames_info = json.loads((wd / "frames.json").read_text())
    audio_spec = AudioSpec.from_json(json.loads((wd / "audio.json").read_text()))
    expr_info = json.loads((wd / "expression.json").read_text())
    with np.load(wd / "track.npz") as t:
        n_faces = t["n_faces"]
    tracks = Tracks.load(ds / "tracks.npz", n_frames)
    with np.load(wd / "pose.npz") as p:
        intrinsics = p["intrinsics"]
    valid = tracks.valid
    several = float((n_faces > 1).mean())
    warnings = []
    if several > 0.05:
        warnings.append(
            f"several faces appear in {several:.0%} of the frames; the largest one at the start was "
            "followed. If that is the wrong person, crop the video to the one you want."
        )
    notes = []
    focal = pose_info["focal_fit"]
    if focal.get("constrained_by_clip") is False:
        notes.append(
            f"the head barely turns in this clip, so its lens is estimated mostly from the face's size "
            f"({focal['fov_deg']:.0f}° field of view of the crop); pass --fov-deg if you know it"
        )
    for w in warnings:
        _say(config, "warning: " + w)
    for n in notes:
        _say(config, "note: " + n)
    reprojection = tracks.reprojection_px
    summary = {
        "frames": n_frames,
        "tracked_fraction": float(valid.mean()),
        "lost_frames": int((~valid).sum()),
        "several_faces_fraction": several,
        "crop": pose_info["crop"],
        "intrinsics": intrinsics.tolist(),
        "fov_deg": float(np.degrees(2 * np.arctan(0.5 * config.size / intrinsics[0]))),
        "focal_fit": focal,
        "pose_jitter": pose_info["jitter"],
        "reprojection_px_median": (
            float(np.nanmedian(reprojection))
            if reprojection is not None and np.isfinite(reprojection).any()
            else "not computed: cameras came with the input"
        ),
        "background_seen_fraction": frames_info["background_seen_fraction"],
        "region_fractions": frames_info["region_fractions"],
        "warnings": warnings,
        "notes": notes,
        "seconds_per_step": {},
    }
    info = source.info
    manifest = Manifest(
        n_frames=n_frames,
        fps=config.fps,
        size=config.size,
        intrinsics=tuple(float(v) for v in intrinsics),
        train=tuple(expr_info["train"]),
        test=tuple(expr_info["test"]),
        audio=audio_spec,
        expression=ExpressionSpec(
            explicit=EXPLICIT,
            code_kind=expr_info["code_kind"],
            code_dim=expr_info["code_dim"],
            code_names=tuple(expr_info["code_names"]) if expr_info["code_names"] else None,
        ),
        source=SourceInfo(source.name, info.width, info.height, info.fps, info.duration, info.codec),
        config_hash=config_hash(config, ignore=("overwrite", "progress")),
        extra={"regions": {int(r): r.name.lower() for r in Region}},
    )
    with _bar(config, 2, "report") as bar:
        contact_sheet(ds, tracks, intrinsics, ds / "contact_sheet.png")
        bar.update()
        timeline(tracks, config.fps, ds / "timeline.png")
        bar.update()
    summary["seconds_per_step"] = json.loads((wd / "steps.json").read_text())["done"]
    write_json_atomic(ds / "summary.json", summary)
    save_config(config, ds)
    DatasetWriter(ds).manifest(manifest)


#: The steps in order; each reads what earlier steps left in the work folder.
STEPS = {
    "track": _step_track,
    "pose": _step_pose,
    "frames": _step_frames,
    "audio": _step_audio,
    "expression": _step_expression,
    "report": _step_report,
}
