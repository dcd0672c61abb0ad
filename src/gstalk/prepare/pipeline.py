"""``prepare()``: a talking-head video becomes a dataset folder, step by step, resumable.

The dataset is built in a work folder beside the output (``.NAME.partial``) and moved into place only when
complete, so a failed or interrupted run never leaves a half-written dataset where training looks. Each
finished step is recorded there; re-running the same command skips the finished steps. A problem with
the input (no face, no audio, too short, ...) removes the work folder and names the fix.
"""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import soundfile
from tqdm import tqdm

from .. import SCHEMA_VERSION, __version__
from ..config import PrepareConfig, config_hash, save_config
from ..data.dataset import FORMAT, frame_name
from ..errors import GstalkError
from ..fileio import write_json_atomic
from ..media import AUDIO_RATE
from ..media.audio import is_silent
from ..regions import Region
from .audio_features import audio_features
from .background import BackgroundAccumulator, sample_indices
from .crop import Crop, choose_crop
from .expression import EXPLICIT, expression_features
from .landmarks import N_LANDMARKS
from .pose import estimate_poses, known_poses, normalise_landmarks
from .regions import PersonSegmenter, segment_regions
from .sources import Source, VideoSource
from .track import N_BLENDSHAPES, FaceTracker


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
    out = config.out
    if out.exists() and not config.overwrite:
        raise GstalkError(f"{out} already exists", "pass --overwrite to replace it, or choose another --out")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = parent / f".{out.name}.write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise GstalkError(
            f"cannot write to {parent} ({err.strerror})", "choose an --out in a writable folder"
        ) from err


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
    if not config.overwrite and _is_complete(config, digest):
        _say(config, f"{config.out} is already prepared with this config; nothing to do")
        return config.out
    _check_output(config)
    source = source or VideoSource(config.video)
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
    work = _Work(config.out, digest)
    try:
        _run_steps(config, source, n_frames, work)
    except GstalkError:
        shutil.rmtree(work.dir, ignore_errors=True)
        raise
    if config.out.exists():
        shutil.rmtree(config.out)
    shutil.move(str(work.dir / "dataset"), str(config.out))
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
        json.dumps({"crop": crop.to_dict(), "jitter": poses.jitter, "focal_search": poses.focal_search})
    )


def _step_frames(config: PrepareConfig, source: Source, n_frames: int, wd: Path, ds: Path) -> None:
    crop = Crop(**json.loads((wd / "pose.json").read_text())["crop"])
    with np.load(wd / "pose.npz") as p:
        landmarks = p["landmarks"]
    with np.load(wd / "track.npz") as t:
        valid = t["valid"]
    (ds / "frames").mkdir(exist_ok=True)
    (ds / "regions").mkdir(exist_ok=True)
    samples = sample_indices(n_frames, config.background_samples)
    plate = BackgroundAccumulator()
    segmenter = PersonSegmenter()
    jpeg = [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality]
    counts = np.zeros(len(Region), np.int64)

    def label_and_write(i: int, rgb: np.ndarray, person: np.ndarray) -> np.ndarray:
        labels = segment_regions(rgb, landmarks[i] if valid[i] else None, person)
        cv2.imwrite(str(ds / "frames" / frame_name(i, "jpg")), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), jpeg)
        cv2.imwrite(str(ds / "regions" / frame_name(i, "png")), labels)
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
    cv2.imwrite(str(ds / "background.png"), cv2.cvtColor(background, cv2.COLOR_RGB2BGR))
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
    soundfile.write(ds / "audio.wav", audio, AUDIO_RATE, subtype="PCM_16")
    device = "cuda" if config.device == "cuda" else "cpu"
    if config.device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    with _bar(config, 1, "audio") as bar:
        feats = audio_features(
            audio, n_frames, config.fps, config.audio_features, config.speech_model, device=device
        )
        bar.update()
    np.save(ds / "audio_features.npy", feats.features)
    (wd / "audio.json").write_text(
        json.dumps(
            {
                "kind": feats.kind,
                "rate_hz": feats.rate_hz,
                "window": feats.features.shape[1],
                "dim": feats.features.shape[2],
            }
        )
    )


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
    arrays: dict[str, Any] = {
        "valid": valid,
        "landmarks2d": pose["landmarks"][..., :2],
        "landmarks3d": normalised,
        "world_to_cam": pose["world_to_cam"],
        "world_to_cam_raw": pose["world_to_cam_raw"],
        "reprojection_px": pose["reprojection_px"],
        "canonical_shape": pose["canonical"],
        "expression": expr.explicit,
        "expression_code": expr.code,
    }
    if expr.pca_basis is not None:
        arrays["pca_mean"], arrays["pca_basis"] = expr.pca_mean, expr.pca_basis
    np.savez_compressed(ds / "tracks.npz", **arrays)
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
    audio_info = json.loads((wd / "audio.json").read_text())
    expr_info = json.loads((wd / "expression.json").read_text())
    with np.load(wd / "track.npz") as t:
        n_faces = t["n_faces"]
    with np.load(ds / "tracks.npz") as t:
        tracks = {k: t[k] for k in t.files}
    with np.load(wd / "pose.npz") as p:
        intrinsics = p["intrinsics"]
    valid = tracks["valid"]
    several = float((n_faces > 1).mean())
    warnings = []
    if several > 0.05:
        warnings.append(
            f"several faces appear in {several:.0%} of the frames; the largest one at the start was "
            "followed. If that is the wrong person, crop the video to the one you want."
        )
    if pose_info["focal_search"]:
        fov = pose_info["focal_search"]["fov_deg"]
        best = int(np.argmin(pose_info["focal_search"]["rms_px"]))
        if best in (0, len(fov) - 1):
            warnings.append(
                f"the focal length is poorly constrained by the landmarks (best fit at the search "
                f"limit, {fov[best]:.0f}° field of view); pass --fov-deg if you know the lens"
            )
    for w in warnings:
        _say(config, "warning: " + w)
    summary = {
        "frames": n_frames,
        "tracked_fraction": float(valid.mean()),
        "lost_frames": int((~valid).sum()),
        "several_faces_fraction": several,
        "crop": pose_info["crop"],
        "intrinsics": intrinsics.tolist(),
        "fov_deg": float(np.degrees(2 * np.arctan(0.5 * config.size / intrinsics[0]))),
        "pose_jitter": pose_info["jitter"],
        "reprojection_px_median": (
            float(np.nanmedian(tracks["reprojection_px"]))
            if np.isfinite(tracks["reprojection_px"]).any()
            else "not computed: cameras came with the input"
        ),
        "background_seen_fraction": frames_info["background_seen_fraction"],
        "region_fractions": frames_info["region_fractions"],
        "warnings": warnings,
        "seconds_per_step": {},
    }
    manifest = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "gstalk_version": __version__,
        "config_hash": config_hash(config, ignore=("overwrite", "progress")),
        "n_frames": n_frames,
        "fps": config.fps,
        "size": config.size,
        "intrinsics": intrinsics.tolist(),
        "splits": {"train": expr_info["train"], "test": expr_info["test"]},
        "audio": {
            "rate": AUDIO_RATE,
            "features": audio_info["kind"],
            "feature_rate_hz": audio_info["rate_hz"],
            "window": audio_info["window"],
            "dim": audio_info["dim"],
        },
        "expression": {
            "explicit": list(EXPLICIT),
            "code_kind": expr_info["code_kind"],
            "code_dim": expr_info["code_dim"],
            "code_names": expr_info["code_names"],
        },
        "regions": {int(r): r.name.lower() for r in Region},
        "source": {
            "path": source.name,
            "width": source.info.width,
            "height": source.info.height,
            "fps": source.info.fps,
            "duration": source.info.duration,
            "codec": source.info.codec,
        },
    }
    with _bar(config, 2, "report") as bar:
        contact_sheet(ds, tracks, intrinsics, ds / "contact_sheet.png")
        bar.update()
        timeline(tracks, config.fps, ds / "timeline.png")
        bar.update()
    summary["seconds_per_step"] = json.loads((wd / "steps.json").read_text())["done"]
    write_json_atomic(ds / "summary.json", summary)
    save_config(config, ds)
    write_json_atomic(ds / "manifest.json", manifest)


#: The steps in order; each reads what earlier steps left in the work folder.
STEPS = {
    "track": _step_track,
    "pose": _step_pose,
    "frames": _step_frames,
    "audio": _step_audio,
    "expression": _step_expression,
    "report": _step_report,
}
