"""``prepare()``: a talking-head video becomes a dataset folder, step by step, resumable.

The dataset is built in a work folder beside the output (``.NAME.partial``) and moved into place only when
complete, so a failed or interrupted run never leaves a half-written dataset where training looks. Each
finished step is recorded there; re-running the same command skips the finished steps. A problem with
the input (no face, no audio, too short, ...) removes the work folder and names the fix.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..config import PrepareConfig, config_hash
from ..data.dataset import prepared_config_hash
from ..data.layout import MANIFEST
from ..data.manifest import ExpressionSpec, Manifest, SourceInfo
from ..data.summary import Summary, summarise
from ..data.tracks import Tracks
from ..data.writer import DatasetWriter
from ..errors import GstalkError
from ..face.expression import EXPLICIT, expression_features
from ..face.mesh import face_triangles
from ..face.pose import estimate_poses, known_poses, normalise_landmarks
from ..fileio import TAG
from ..media.audio import AUDIO_RATE
from ..outputs import check_free_space, claim_output
from ..regions import Region
from ..speech import build_spec, feature_kind
from .background import BackgroundAccumulator, sample_indices
from .crop import Crop, choose_crop
from .photo import PHOTO_FOV_DEG, PHOTO_KIND, PhotoSource, photo_track_step
from .progress import bar, say
from .regions import PersonSegmenter, segment_regions
from .report import contact_sheet, sheet_ids, timeline
from .sources import ErnerfSource, Source, VideoSource
from .sync import sync_caption
from .track import track_step
from .work import Expressed, Featured, Framed, Posed, Timing, Tracked, WorkFolder

#: audio window centred on each frame (ER-NeRF / TalkingGaussian use 16 frames of 10 ms)
AUDIO_WINDOW_MS = 160.0


#: enlarging the face crop more than this makes soft renders: prepare warns
MAX_UPSCALE = 2.0

#: disk a dataset takes per frame pixel (JPEG frames, PNG label maps, arrays): 0.26 measured on the
#: 71 s CNN clip at 512², with a margin
BYTES_PER_PIXEL = 0.35


def _check_output(config: PrepareConfig) -> None:
    if config.out.exists() and not config.overwrite:
        raise GstalkError(
            f"{config.out} already exists", "pass --overwrite to replace it, or choose another --out"
        )


def _digest(config: PrepareConfig) -> str:
    # a video's config hashes as it did before --image existed, so its datasets stay "already prepared"
    return config_hash(
        config, ignore=("overwrite", "progress") + (("image",) if config.image is None else ())
    )


def _check_input(config: PrepareConfig, source: Source | None) -> None:
    if source is not None:
        return
    if (config.video is None) == (config.image is None):
        raise GstalkError(
            "prepare needs one input: " + ("--video or --image" if config.video is None else
                                           "--video and --image were both given"),
            "pass --video clip.mp4 (a clip of the person talking) or --image photo.jpg (one photo: a "
            "one-shot avatar)",
        )  # fmt: skip
    if config.image is not None and config.seconds is not None:
        raise GstalkError("--seconds applies to a video, not to --image", "leave out --seconds")


def prepare(config: PrepareConfig, source: Source | None = None) -> Path:
    """Build the dataset at ``config.out`` from ``config.video`` or ``config.image`` (one photo: a dataset
    of one frame, ``prepare.photo``), or another ``source``; returns its path."""
    _check_input(config, source)
    if config.audio_features == "whisper":  # the blocks' numbers are checked before any work
        from ..speech.whisper import BlockScheme

        BlockScheme.of(config.whisper)
    digest = _digest(config)
    inputs = [config.image if config.image is not None else config.video]
    with claim_output(config.out, inputs, overwrite=config.overwrite, what="dataset", markers=(MANIFEST,)):
        if not config.overwrite and prepared_config_hash(config.out) == digest:
            say(config, f"{config.out} is already prepared with this config; nothing to do")
            return config.out
        _check_output(config)
        if source is None:
            source = (
                PhotoSource(config.image, config.fps)
                if config.image is not None
                else VideoSource(config.video)
            )
        return _prepare(config, source, digest)


def import_ernerf(folder: str | Path, out: str | Path, fps: float = 25.0, **prepare_options) -> Path:
    """Prepare a gstalk dataset from an ER-NeRF / TalkingGaussian folder, keeping its frames and cameras.

    Landmarks, regions, background, audio features and expression are computed the gstalk way from its
    images and ``aud.wav``. ``prepare_options`` are PrepareConfig fields; returns the dataset's path.
    """
    source = ErnerfSource(folder, fps)
    options = {"size": source.info.width, "min_seconds": 1.0, "fps": fps, **prepare_options}
    return prepare(PrepareConfig(video=Path(folder), out=Path(out), **options), source=source)


def _prepare(config: PrepareConfig, source: Source, digest: str) -> Path:
    info = source.info
    if isinstance(source, PhotoSource):
        pass  # a photo has no sound: the avatar's motion comes from the motion prior
    elif not info.has_audio:
        raise GstalkError(
            f"{source.name} has no audio track",
            "gstalk learns lip motion from the speech: use the clip with its sound",
        )
    n_frames = info.frames_at(config.fps)
    if not isinstance(source, PhotoSource) and n_frames < config.min_seconds * config.fps:
        raise GstalkError(
            f"{source.name} is {info.duration:.1f} s long; at least {config.min_seconds:g} s is needed "
            "(a few minutes trains best)",
            "use a longer clip of the person talking",
        )
    check_free_space(config.out.parent, n_frames * config.size**2 * BYTES_PER_PIXEL, "the dataset")
    work = WorkFolder(config.out, digest)
    try:
        _run_steps(_Job(config, source, n_frames, work))
    except GstalkError:
        shutil.rmtree(work.dir, ignore_errors=True)
        raise
    except OSError as err:  # disk full, permissions: the partial folder stays so a re-run resumes
        raise GstalkError(
            f"prepare could not write {config.out} ({err.strerror or err}); the finished steps are kept",
            "free disk space or fix the folder's permissions, then run the same command to resume",
        ) from err
    if config.out.exists():  # --overwrite: move the old dataset aside, the new one in, then delete the old
        aside = config.out.parent / f".{config.out.name}.{TAG}{secrets.token_hex(4)}.old"  # a new name
        os.replace(config.out, aside)
        os.replace(work.dataset, config.out)
        shutil.rmtree(aside)
    else:
        os.replace(work.dataset, config.out)
    shutil.rmtree(work.dir, ignore_errors=True)
    say(config, f"dataset written to {config.out}")
    return config.out


@dataclass
class _Job:
    """What every step is given: the config, the input, its frame count and the work folder."""

    config: PrepareConfig
    source: Source
    n_video: int
    """Frames of the input at the dataset's fps."""
    work: WorkFolder

    @property
    def photo(self) -> bool:
        return isinstance(self.source, PhotoSource)

    def writer(self) -> DatasetWriter:
        return DatasetWriter(self.work.dataset, self.config.jpeg_quality)

    def frames(self) -> tuple[int, int]:
        """(the input frame that is the dataset's frame 0, frames in the dataset), once tracked."""
        timing = self.work.load(Timing)
        return timing.first_frame, timing.n_frames


def _run_steps(job: _Job) -> None:
    for step, run in STEPS.items():
        if job.work.done(step):
            say(job.config, f"{step}: done in an earlier run, skipped")
            continue
        start = time.perf_counter()
        run(job)
        job.work.finish(step, time.perf_counter() - start)


# --- steps ------------------------------------------------------------------------------------------
def _step_track(job: _Job) -> None:
    if job.photo:
        tracked, timing = photo_track_step(job.config, job.source)
    else:
        tracked, timing = track_step(job.config, job.source, job.n_video)
    job.work.save(tracked)
    job.work.save(timing)


def _step_pose(job: _Job) -> None:
    config, source = job.config, job.source
    tracked = job.work.load(Tracked)
    landmarks, valid = tracked.landmarks, tracked.valid
    width, height = source.info.width, source.info.height
    if source.cameras is not None:  # cameras come with the input: keep its framing and its poses
        crop = Crop(0, 0, width, config.size)
    else:
        crop = choose_crop(landmarks, valid, width, height, config.size, config.crop_scale)
    lm = crop.points(landmarks)
    principal = crop.points(np.array([[width / 2, height / 2]]))[0]
    focal = None
    if config.fov_deg is not None or job.photo:  # one photo cannot tell its lens: PHOTO_FOV_DEG
        fov = config.fov_deg if config.fov_deg is not None else PHOTO_FOV_DEG
        focal = 0.5 * config.size / np.tan(np.radians(fov) / 2)
    poses = estimate_poses(
        lm,
        valid,
        config.size,
        (float(principal[0]), float(principal[1])),
        smoothing_sigma=config.pose_smoothing,
        focal=focal,
    )
    if source.cameras is not None:
        first, n = job.frames()
        known, kept = source.cameras, slice(first, first + n)
        poses = known_poses(poses, known.world_to_cam[kept], known.valid[kept], known.intrinsics * crop.scale)
    job.work.save(
        Posed(
            landmarks=lm,
            world_to_cam=poses.world_to_cam,
            world_to_cam_raw=poses.world_to_cam_raw,
            intrinsics=poses.intrinsics,
            canonical=poses.canonical,
            reprojection_px=poses.reprojection_px,
            crop=crop,
            jitter=poses.jitter,
            focal_fit=poses.focal_fit
            if not (job.photo and config.fov_deg is None)
            else {"method": f"one photo: a {PHOTO_FOV_DEG:g}° field of view assumed (--fov-deg sets it)"},
        )
    )


def _step_frames(job: _Job) -> None:
    config = job.config
    first, n_frames = job.frames()
    posed = job.work.load(Posed)
    crop, landmarks, valid = posed.crop, posed.landmarks, job.work.load(Tracked).valid
    writer = job.writer()
    samples = sample_indices(n_frames, config.background_samples)
    sheet = {int(i): k for k, i in enumerate(sheet_ids(n_frames))}
    sheet_frames = np.zeros((len(sheet), config.size, config.size, 3), np.uint8)
    sheet_labels = np.zeros((len(sheet), config.size, config.size), np.uint8)
    plate = BackgroundAccumulator()
    segmenter = PersonSegmenter()
    counts = np.zeros(len(Region), np.int64)

    def label_and_write(i: int, rgb: np.ndarray, person: np.ndarray) -> np.ndarray:
        labels = segment_regions(rgb, landmarks[i] if valid[i] else None, person)
        writer.frame(i, rgb, labels)
        return labels

    def collect(item: tuple[int, np.ndarray, Any]) -> None:
        i, rgb, future = item
        labels = future.result()
        counts[:] += np.bincount(labels.ravel(), minlength=len(Region))
        if i in samples:
            plate.add(rgb, labels)
        if i in sheet:
            sheet_frames[sheet[i]], sheet_labels[sheet[i]] = rgb, labels
        progress.update()

    # decoding and person segmentation here; region labelling and encoding on two worker threads
    # (OpenCV and most NumPy work release the GIL)
    with ThreadPoolExecutor(max_workers=2) as pool, bar(config, n_frames, "regions") as progress:
        pending: list[tuple[int, np.ndarray, Any]] = []
        for k, full in job.source.frames(config.fps, first, first + n_frames):
            i = k - first
            rgb = crop.apply(full)
            pending.append((i, rgb, pool.submit(label_and_write, i, rgb, segmenter(rgb))))
            if len(pending) > 8:
                collect(pending.pop(0))
        for item in pending:
            collect(item)
    segmenter.close()
    background, seen = plate.plate()
    writer.background(background)
    fractions = {r.name.lower(): float(counts[r] / max(counts.sum(), 1)) for r in Region}
    ids = np.array(sorted(sheet), np.int64)
    job.work.save(Framed(float(seen.mean()), fractions, ids, sheet_frames, sheet_labels))


def _step_audio(job: _Job) -> None:
    config = job.config
    audio = job.work.load(Tracked).audio
    writer = job.writer()
    writer.audio(audio)
    device = "cuda" if config.device == "cuda" else "cpu"
    if config.device == "auto":
        from ..device import pick_device

        device = pick_device("auto").type
    seconds = len(audio) / AUDIO_RATE
    with tqdm(desc=f"{'audio':<10}", total=None, disable=not config.progress,
              bar_format=f"{{desc}}: features of {seconds:.0f} s of speech, {{elapsed}}") as bar:  # fmt: skip
        spec = build_spec(
            config.audio_features, config.whisper, config.speech_model, config.audio_normalisation,
            config.audio_deltas, device, AUDIO_WINDOW_MS,
        )  # fmt: skip
        feats = feature_kind(spec, config.speech_model, device).compute(audio, job.frames()[1], config.fps)
        bar.update()
    writer.audio_features(feats)
    job.work.save(Featured(spec))


def _splits(config: PrepareConfig, n_frames: int, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tracked training frames (the clip before its held-out tail; with ``--seconds``, only its first
    seconds) and tracked held-out frames (the last ``test_fraction``). A photo's one frame is both."""
    if config.image is not None:
        return np.zeros(1, np.int64), np.zeros(1, np.int64)
    n_test = max(1, round(n_frames * config.test_fraction))
    ids = np.arange(n_frames)
    train, test = ids[: n_frames - n_test], ids[n_frames - n_test :]
    if config.seconds is not None:
        train = train[: max(1, round(config.seconds * config.fps))]
    return train[valid[train]], test[valid[test]]


def _step_expression(job: _Job) -> None:
    tracked, pose = job.work.load(Tracked), job.work.load(Posed)
    valid = tracked.valid
    train, test = _splits(job.config, len(valid), valid)
    with bar(job.config, 1, "expression") as progress:
        normalised = normalise_landmarks(pose.landmarks, pose.canonical, valid)
        expr = expression_features(normalised, valid, train, tracked.blendshapes)
        progress.update()
    tracks = Tracks(
        valid=valid,
        landmarks2d=pose.landmarks[..., :2],
        mesh=normalised,
        triangles=face_triangles(pose.canonical),
        world_to_cam=pose.world_to_cam,
        world_to_cam_raw=pose.world_to_cam_raw,
        reprojection_px=pose.reprojection_px,
        canonical_shape=pose.canonical,
        expression=expr.explicit,
        expression_code=expr.code,
        pca_mean=expr.pca_mean,
        pca_basis=expr.pca_basis,
    )
    job.writer().tracks(tracks)
    names = tracked.blendshape_names if expr.code_kind == "blendshapes" else None
    job.work.save(Expressed(train.tolist(), test.tolist(), expr.code_kind, int(expr.code.shape[1]), names))


def _advice(summary: Summary, size: int) -> tuple[list[str], list[str]]:
    """Warnings (the data may be wrong, or renders poor) and notes (worth knowing) about a prepared clip."""
    warnings, notes = [], []
    if summary.several_faces_fraction > 0.05:
        warnings.append(
            f"several faces appear in {summary.several_faces_fraction:.0%} of the frames; the largest one "
            "at the start was followed. If that is the wrong person, crop the video to the one you want."
        )
    focal = summary.focal_fit
    if focal.get("constrained_by_clip") is False:
        notes.append(
            f"the head barely turns in this clip, so its lens is estimated mostly from the face's size "
            f"({focal['fov_deg']:.0f}° field of view of the crop); pass --fov-deg if you know it"
        )
    side, upscale = summary.crop["side"], summary.face_upscale or 1.0
    if upscale > MAX_UPSCALE:
        warnings.append(
            f"the face crop is {side} px of the video, enlarged {upscale:.1f}× to {size}²: renders will be "
            f"soft. A closer or sharper video avoids it, or prepare at a smaller --size (about {2 * side} "
            "at most)"
        )
    else:
        how = f"enlarged {upscale:.1f}×" if upscale > 1.05 else f"scaled {upscale:.2f}×"
        notes.append(f"the face crop is {side} px of the video, {how} to {size}²")
    return warnings, notes


def _manifest(job: _Job, posed: Posed, featured: Featured, expressed: Expressed) -> Manifest:
    config, info = job.config, job.source.info
    return Manifest(
        n_frames=job.frames()[1],
        fps=config.fps,
        size=config.size,
        intrinsics=tuple(float(v) for v in posed.intrinsics),
        train=tuple(expressed.train),
        test=tuple(expressed.test),
        audio=featured.spec,
        expression=ExpressionSpec(
            explicit=EXPLICIT,
            code_kind=expressed.code_kind,
            code_dim=expressed.code_dim,
            code_names=tuple(expressed.code_names) if expressed.code_names else None,
        ),
        source=SourceInfo(job.source.name, info.width, info.height, info.fps, info.duration, info.codec),
        config_hash=_digest(config),
        extra={
            "regions": {int(r): r.name.lower() for r in Region},
            **({"kind": PHOTO_KIND} if job.photo else {}),
        },
    )


def _step_report(job: _Job) -> None:
    work, writer, config = job.work, job.writer(), job.config
    tracked, posed, framed, timing = (
        work.load(Tracked),
        work.load(Posed),
        work.load(Framed),
        work.load(Timing),
    )
    tracks = writer.written_tracks(timing.n_frames)
    summary = summarise(
        tracks,
        tracked.n_faces,
        config.size,
        posed.intrinsics,
        crop=posed.crop.to_dict(),
        focal_fit=posed.focal_fit,
        pose_jitter=posed.jitter,
        background_seen_fraction=framed.background_seen_fraction,
        region_fractions=framed.region_fractions,
        source=timing.source,
        coverage=timing.coverage,
        sync=timing.sync,
        face_upscale=round(config.size / posed.crop.side, 3),
    )
    warnings, notes = _advice(summary, config.size)
    for text in warnings:
        say(config, "warning: " + text)
    for text in notes:
        say(config, "note: " + text)
    summary.warnings, summary.notes = timing.warnings + warnings, timing.notes + notes
    with bar(config, 2, "report") as progress:
        caption = _caption(summary, timing)
        sheet = contact_sheet(
            framed.sheet_frames, framed.sheet_labels, framed.sheet_ids, tracks, posed.intrinsics, caption
        )
        writer.contact_sheet(sheet)
        progress.update()
        writer.timeline(timeline(tracks, config.fps))
        progress.update()
    summary.seconds_per_step = work.seconds()
    manifest = _manifest(job, posed, work.load(Featured), work.load(Expressed))
    writer.finish(manifest, summary, config)


def _caption(summary: Summary, timing: Timing) -> str:
    """The contact sheet's line: the sync check, which video frames were kept, the crop's scale."""
    parts = [sync_caption(timing.sync)]
    cover = timing.coverage
    if cover["frames_kept"] != cover["frames_in_video"]:
        last = cover["first_frame"] + cover["frames_kept"] - 1
        parts.append(f"video frames {cover['first_frame']}-{last} of {cover['frames_in_video']} have sound")
    parts.append(f"face crop scaled {summary.face_upscale:.2f}x")
    return "  |  ".join(parts)


#: The steps in order; each reads the records earlier steps left in the work folder.
STEPS = {
    "track": _step_track,
    "pose": _step_pose,
    "frames": _step_frames,
    "audio": _step_audio,
    "expression": _step_expression,
    "report": _step_report,
}
