"""``gstalk render``: a whole audio file to an mp4 with that audio muxed in.

Cheap checks come first, then the work, in chunks:

1. the output (``outputs.claim_output``): never an input; an existing video or config at the output is
   replaced only with ``--overwrite``, and only when gstalk render made it (:func:`made_by_render`: the
   video's container carries the comment :data:`MARKER`; the config beside it is a ``RenderConfig``);
   gstalk's own temporary files of a killed render are removed, with a note;
2. the audio's header (its declared duration against ``--max-audio-seconds``, before decoding);
3. one pass over the audio, holding none of it (``media.audio.scan_audio``): its length, silence, NaN
   samples, and where a truncated or damaged file stops decoding (a warning: what decodes is rendered);
4. the run is loaded and a few frames rendered to estimate the time (``--yes`` beyond
   ``--confirm-minutes``), with features of zeros: no speech model is loaded for a render that is refused;
5. the render: the audio is decoded again as it is needed, in chunks; with Whisper features the frames come
   from ``FrameStream`` (exactly the whole file's features, block by block) and the sound is muxed beside
   them, so memory stays bounded however long the audio. The video is written to a file without a name
   (``fileio.atomic_path(unnamed=True)``) that appears at ``--out`` only when complete: a render killed at
   any moment leaves nothing behind.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from ..config import RenderConfig, save_config
from ..data.layout import MANIFEST
from ..data.run_layout import META_FILE, model_dir
from ..errors import GstalkError
from ..fileio import atomic_path
from ..media.audio import AUDIO_RATE, SILENT_DB, AudioReader, probe_audio, scan_audio
from ..media.encode import container_comment, write_video
from ..outputs import check_free_space, check_replaceable_file, claim_output

if TYPE_CHECKING:  # imported where used: the checks before the work need no PyTorch
    from .driver import Driver, PoseSource

MUX_RATE = 48_000


#: output extensions and the container each gets (all carry H.264 video and AAC audio)
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
#: disk per output pixel and frame at CRF 18 (measured below 0.1 bit on talking heads; with a margin),
#: plus the AAC track's 128 kbit/s
VIDEO_BITS_PER_PIXEL, AUDIO_BITS_PER_SECOND = 0.3, 128_000
#: frames rendered to estimate the speed before committing to a long render
PROBE_FRAMES = 4
#: the comment gstalk render writes into the video's container: what makes it gstalk's own
MARKER = "made by gstalk render"
#: a header claiming this much more sound than decodes (seconds, or this share) means a truncated file
TRUNCATED_SECONDS, TRUNCATED_SHARE = 0.1, 0.01
#: seconds of audio decoded at a time while rendering
CHUNK_SECONDS = 2.0


def container_for(out: Path) -> str:
    """The container format an output path asks for; an unsupported extension is an error up front."""
    fmt = CONTAINERS.get(Path(out).suffix.lower())
    if fmt is None:
        raise GstalkError(
            f"cannot write {out}: gstalk writes {', '.join(CONTAINERS)} videos (H.264 + AAC)",
            f"name the output {Path(out).with_suffix('.mp4').name}",
        )
    return fmt


def config_path(out: Path) -> Path:
    """The config saved beside a render's video: ``NAME.config.json``."""
    return Path(out).with_name(Path(out).stem + ".config.json")


def made_by_render(path: Path) -> bool:
    """Whether the video at ``path`` is one gstalk render wrote (its container's comment is
    :data:`MARKER`). Videos of gstalk before this mark, and every other file, are not."""
    comment = container_comment(path)
    return comment is not None and comment.startswith(MARKER)


def is_render_config(path: Path) -> bool:
    """Whether ``path`` is a config gstalk render saved (JSON of kind ``RenderConfig``)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("kind") == RenderConfig.__name__


def render_video(config: RenderConfig) -> dict:
    """Render ``config.audio`` through the run; returns figures (frames, seconds, frames/s, and the
    process's CPU seconds over the same span: rendering and encoding, not loading).

    Raises GstalkError for an output that is not gstalk render's to replace (see the module docstring),
    audio that is missing, a folder, unreadable, too long, silent or holds NaN samples, a damaged run or
    dataset, and a render estimated to take longer than ``confirm_minutes`` without ``yes``."""
    out = Path(config.out)
    if (config.audio is None) == (config.drive_video is None):
        raise GstalkError("give the speech (--audio) or a face to follow (--drive-video), one of them",
                          "pass --audio SPEECH, or --drive-video VIDEO")  # fmt: skip
    with claim_output(out, [config.audio, config.drive_video, config.run, config.dataset], folder=False):
        fmt = container_for(out)
        check_replaceable_file(out, config.overwrite, made_by_render, "video gstalk render made")
        check_replaceable_file(config_path(out), config.overwrite, is_render_config,
                               "config gstalk render wrote")  # fmt: skip
        if config.drive_video is not None:
            from .reenact import render_reenactment

            return render_reenactment(config, out, fmt)
        return _render(config, out, fmt)


def _scan(config: RenderConfig):
    """The audio's header, then one bounded pass over it; refusals before anything is loaded."""
    header = probe_audio(config.audio)
    if header.seconds is not None and header.seconds > config.max_audio_seconds:
        raise GstalkError(
            f"{config.audio} is {header.seconds:.0f} s long (its header says), longer than the limit of "
            f"{config.max_audio_seconds:g} s",
            "cut the audio, or raise the limit (--max-audio-seconds)",
        )
    scan = scan_audio(config.audio, config.max_audio_seconds)
    if scan.loudest_db < SILENT_DB:
        raise GstalkError(f"{config.audio} is silent", "pass the speech you want the person to say")
    problem = None
    if scan.damaged_at is not None:
        problem = f"the audio stops decoding after {scan.damaged_at:.2f} s (the file is damaged or truncated)"
    elif header.seconds is not None and header.seconds - scan.decoded_seconds > max(
        TRUNCATED_SECONDS, TRUNCATED_SHARE * header.seconds
    ):
        problem = (f"its header says {header.seconds:.2f} s but only {scan.decoded_seconds:.2f} s of audio "
                   "are in it (the file looks truncated)")  # fmt: skip
    if problem is not None:
        print(f"gstalk render: warning: {config.audio}: {problem}; rendering the {scan.seconds:.2f} s that "
              "decode", file=sys.stderr, flush=True)  # fmt: skip
    return scan


#: an optimistic bound on render speed, megapixels a second (61 frames/s at 512², 244 at 256²; measured on
#: 2 cores: 36–41 and 61–70): a render longer than --confirm-minutes even at this speed is refused before
#: the run is loaded (timing a few frames needs the model: about 560 MB)
FASTEST_MEGAPIXELS_PER_S = 16.0


def _refuse_before_loading(config: RenderConfig, seconds: float) -> None:
    """Refuse, without loading the run, a render of ``seconds`` of audio that would take longer than
    ``confirm_minutes`` even at :data:`FASTEST_MEGAPIXELS_PER_S` (unless ``yes``). The run's size and
    frame rate come from its model's ``checkpoint.json`` and its dataset's manifest; when they cannot be
    read here, the timed estimate decides."""
    if config.yes:
        return
    try:
        meta = json.loads((model_dir(config.run) / META_FILE).read_text())
        size = int(config.size or meta["train_size"])
        fps = float(json.loads((Path(config.dataset or meta["dataset"]) / MANIFEST).read_text())["fps"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    fastest = seconds * fps * size * size / (FASTEST_MEGAPIXELS_PER_S * 1e6)
    if fastest > config.confirm_minutes * 60:
        raise GstalkError(
            f"rendering {seconds:.0f} s of audio at {size}² will take about {fastest / 60:.1f} minutes or "
            "more here",
            "pass --yes to go ahead, or --size with a smaller value, or a shorter audio file",
        )


def _render(config: RenderConfig, out: Path, fmt: str) -> dict:
    scan = _scan(config)
    _refuse_before_loading(config, scan.seconds)
    from ..speech.features import check_computable
    from .driver import Driver, PoseSource

    driver = Driver.for_config(config)
    n = math.floor(scan.samples / AUDIO_RATE * driver.fps + 1e-9)
    if n < 1:
        raise GstalkError(f"{config.audio} is shorter than one video frame", "pass a longer audio file")
    pose = PoseSource(config.pose, config.still_frame, config.yaw_deg, config.pitch_deg)
    check_viewpoint(driver, config)
    size = driver.size
    needed = (n * size * size * VIDEO_BITS_PER_PIXEL + n / driver.fps * AUDIO_BITS_PER_SECOND) / 8
    check_free_space(out.parent, needed, "the video")
    _confirm_duration(config, driver, pose, n)
    check_computable(driver.ds.audio_spec, driver.speech_model)
    bar = tqdm(total=n, desc="render", unit="frame", disable=not config.progress)

    def frames():
        for frame in itertools.islice(_frames(config, driver, pose), n):
            bar.update()
            yield frame

    sound = _take(AudioReader(config.audio, MUX_RATE, CHUNK_SECONDS), round(n / driver.fps * MUX_RATE))
    start, cpu = time.perf_counter(), time.process_time()
    with atomic_path(out, unnamed=True) as tmp:
        written = write_video(tmp, frames(), driver.fps, sound, MUX_RATE, container_format=fmt,
                              comment=f"{MARKER} from {Path(config.audio).name}")  # fmt: skip
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    bar.close()
    save_config(config, out.parent, name=config_path(out).name)
    figures = {
        "frames": written,
        "seconds": round(seconds, 2),
        "fps": round(written / seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),  # every thread's, over the same span (x264's included)
        "audio_seconds": round(scan.seconds, 2),
        "out": str(out),
    }
    print(
        f"gstalk render: {written} frames in {seconds:.1f} s ({figures['fps']} frames/s, "
        f"encoding included) -> {out}",
        flush=True,
    )
    return figures


def _frames(config: RenderConfig, driver: Driver, pose: PoseSource) -> Iterator[np.ndarray]:
    """Every frame of the audio as RGB uint8. Whisper features: through ``FrameStream`` over chunks of the
    decoded audio (the same frames as from the whole file, in bounded memory). Other kinds normalise over
    the whole file, so they are computed from all of it at once (their features are a few KB a frame)."""
    if driver.ds.audio_spec.features == "whisper":
        from .stream import FrameStream

        stream = FrameStream(driver, pose)
        for chunk in AudioReader(config.audio, AUDIO_RATE, CHUNK_SECONDS):
            for _, frame in stream.push(chunk):
                yield frame
        for _, frame in stream.finish():
            yield frame
        return
    reader = AudioReader(config.audio, AUDIO_RATE, CHUNK_SECONDS)
    chunks = list(reader)
    speech = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    yield from driver.render(driver.speech(speech), pose)


def _take(chunks: Iterable[np.ndarray], count: int) -> Iterator[np.ndarray]:
    """The first ``count`` samples of a stream of chunks."""
    left = count
    for chunk in chunks:
        if left <= 0:
            return
        yield chunk[:left]
        left -= min(left, chunk.size)


#: free-viewpoint margin the model is trusted with beyond the angles the clip covers, degrees
VIEW_MARGIN_DEG = 3.0


def check_viewpoint(driver: Driver, config: RenderConfig) -> None:
    """Warn when a free-viewpoint offset goes beyond the head turns the clip shows (plus a small margin),
    and refuse one more than twice that far unless --yes: the face falls apart there."""
    covered = driver.view_coverage()
    for name, asked, seen in (("yaw", config.yaw_deg, covered[0]), ("pitch", config.pitch_deg, covered[1])):
        trusted = seen + VIEW_MARGIN_DEG
        if abs(asked) <= trusted:
            continue
        message = (f"--{name}-deg {asked:g} turns the head beyond what the training clip shows "
                   f"(±{seen:.1f}° of {name}, trusted to ±{trusted:.0f}°)")  # fmt: skip
        if abs(asked) > 2 * trusted and not config.yes:
            raise GstalkError(message + "; the unseen side of the face renders broken",
                              f"use at most ±{trusted:.0f}°, train on a clip with more head turns, or pass "
                              "--yes to render it anyway")  # fmt: skip
        print(f"gstalk render: warning: {message}; expect blotches and seams", file=sys.stderr, flush=True)


def seconds_per_frame(frames: Iterator) -> float:
    """Seconds per frame of ``frames`` (:data:`PROBE_FRAMES` + 1 of them: the first is a warm-up)."""
    next(frames)
    start = time.perf_counter()
    for _ in frames:
        pass
    return (time.perf_counter() - start) / PROBE_FRAMES


def _confirm_duration(config: RenderConfig, driver: Driver, pose: PoseSource, n: int) -> None:
    """Time a few frames; a render estimated to take longer than ``confirm_minutes`` needs ``--yes``. The
    frames are driven by features of zeros (a frame's cost does not depend on them), so no speech model
    is loaded before the question is settled; the estimate is the frames' rendering time."""
    if n <= 10 * PROBE_FRAMES:
        return
    spec = driver.ds.audio_spec
    speech = driver.speech(features=np.zeros((PROBE_FRAMES + 1, spec.window, spec.dim), np.float16))
    estimate = n * seconds_per_frame(driver.render(speech, pose, stop=PROBE_FRAMES + 1))
    if estimate > config.confirm_minutes * 60 and not config.yes:
        raise GstalkError(
            f"rendering {n / driver.fps:.0f} s of audio will take about {estimate / 60:.0f} minutes here",
            "pass --yes to go ahead, or --size with a smaller value, or a shorter audio file",
        )
    if not config.progress:
        print(f"gstalk render: {n} frames, about {estimate:.0f} s", flush=True)
