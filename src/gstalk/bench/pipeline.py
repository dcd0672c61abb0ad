"""The render pipeline: ``gstalk render`` end to end (frames/s, H.264 + AAC encoding included), and the
same frames stage by stage, with one thread and with every core.

Stages, in milliseconds per frame (``wall`` clock time and this thread's ``cpu`` time):

- ``features``: the speech's audio features and the audio → motion model, once per render;
- ``layer``: what the render loop waits for the source frame's real-pixel layer (read ahead on a thread);
- ``layer_work``: producing one layer from a source frame not yet read (decode, resize, fill, convert),
  the reading thread's work, counted per frame for the share of frames whose source frame is new;
- ``networks``: the mesh, the binding frames, the colour network and the activations;
- ``rasterize``: face and mouth interior in one pass over the layer (its own stages under
  ``rasterizer``: ``project``, ``bin``, ``forward``);
- ``convert``: the image to 8 bits;
- ``encode``: H.264 + AAC of the rendered frames on their own; ``cpu`` is the whole process's CPU time
  (x264's threads included).

``work_ms`` sums the one-thread ``cpu`` figures: the CPU time a frame costs. ``cpu_bound_fps`` is what
every core of the machine could deliver if none ever waited: cores × 1000 / work_ms. End to end,
``end_to_end_core_use`` is the share of the cores the render kept busy (its CPU time over cores × wall
time): alone on the machine, well below 1 with frames/s below ``cpu_bound_fps`` means threads waiting on
each other (where pipelining frames would help); near 1, the CPU time per frame is what limits.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import BenchConfig, PrepareConfig
from ..splat import numba_backend, threads
from ..timing import Laps
from . import hardware


def process_cpu() -> float:
    """This process's CPU seconds so far (every thread, user and system)."""
    return time.process_time()


@contextlib.contextmanager
def thread_count(count: int):
    """gstalk's worker threads and PyTorch's set to ``count`` within the block, then back to the default."""
    threads.configure(count)
    try:
        yield
    finally:
        threads.configure()


def generated_subject(subject: dict[str, Any], work: Path) -> Path:
    """The generated subject (8 s) prepared at 512², once per benchmark run (``subject`` keeps it, with
    the figures of its preparation)."""
    if "dataset" not in subject:
        from ..demo.subject import make_demo_subject
        from ..prepare import prepare

        clip = make_demo_subject(work / "subject.mp4", seconds=8.0)
        start = time.perf_counter()
        config = PrepareConfig(video=clip, out=work / "dataset", size=512, progress=False)
        subject["dataset"] = prepare(config)
        seconds = time.perf_counter() - start
        subject["prepare"] = {
            "input": "512² generated subject, 8 s",
            "frames": 200,
            "seconds": round(seconds, 1),
            "frames_per_s": round(200 / seconds, 1),
        }
    return subject["dataset"]


def untrained_run(subject: dict[str, Any], work: Path, device: torch.device) -> Path:
    """A run folder holding an untrained cpu-preset-sized model (a 10 000-Gaussian cap) of the subject."""
    if "run" not in subject:
        from ..config import TrainConfig
        from ..data.run_layout import model_dir
        from ..model.checkpoint import save_model
        from ..train.trainer import Trainer

        dataset = generated_subject(subject, work)
        trainer = Trainer(TrainConfig(dataset=dataset, out=work / "t", max_gaussians=10_000, progress=False,
                                      device=device.type))  # fmt: skip
        model = trainer.init_model()
        subject["run"] = work / "run"
        state = {"stage_index": 3, "step": 0, "dataset": str(dataset), "train_size": trainer.config.size}
        save_model(model_dir(subject["run"]), model, state)
    return subject["run"]


def pipeline_speed(config: BenchConfig, subject: dict[str, Any], tmp: str) -> dict[str, Any]:
    """Prepare throughput (of the generated subject, when no --run is given) and, per size, the render
    pipeline end to end and stage by stage (:func:`render_profile`)."""
    from ..demo.subject import speech_like_audio
    from ..device import pick_device

    device = pick_device(config.device)
    work = Path(tmp)
    rows: dict[str, Any] = {"device": str(device)}
    run = config.run if config.run is not None else untrained_run(subject, work, device)
    if "prepare" in subject:
        rows["prepare"] = subject["prepare"]
    speech = speech_like_audio(config.render_seconds, seed=11).audio
    rows["render"] = []
    for size in config.sizes:
        row = render_profile(run, speech, size, device, work)
        rows["render"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return {
        "benchmark": "pipeline_speed",
        "date": dt.date.today().isoformat(),
        "hardware": hardware(),
        "run": str(config.run) if config.run else "untrained model, 10k Gaussians, on the generated subject",
        "results": rows,
    }


def render_profile(
    run: Path, speech: np.ndarray, size: int, device: torch.device, work: Path
) -> dict[str, Any]:
    """``gstalk render`` of ``speech`` (16 kHz) at ``size``² end to end (every core), then the same frames
    stage by stage with one thread and with every core (see the module docstring)."""
    from ..drive import Driver
    from ..drive.stream import lookahead_seconds

    end_to_end = _end_to_end(run, speech, size, device, work)
    cores = threads.available_cores()
    profiles = {}
    for label, count in (("one_thread", 1), ("all_cores", cores)):
        with thread_count(count):
            driver = Driver(run, size=size, device=device)
            profiles[label] = stage_profile(driver, speech, work)
    work_ms = sum(v["cpu"] for k, v in profiles["one_thread"]["stage_ms"].items() if k not in ("layer",))
    all_cores = profiles["all_cores"]["stage_ms"]
    compute = sum(v["wall"] for k, v in all_cores.items() if k not in ("encode", "features", "layer_work"))
    lookahead = lookahead_seconds(driver)
    return {
        "size": size,
        "gaussians": len(driver.model.head) + len(driver.model.mouth),
        "cores": cores,
        **end_to_end,
        "work_ms": round(work_ms, 2),
        "cpu_bound_fps": round(cores * 1000 / work_ms, 1),
        **profiles,
        # streaming: a frame can start once its lookahead of audio has arrived, and is ready one frame's
        # compute later (features of the short recent segment, networks, rasterize, composite)
        "stream_lookahead_s": round(lookahead, 3),
        "stream_latency_s": round(lookahead + compute / 1000, 3),
    }


def _end_to_end(run: Path, speech: np.ndarray, size: int, device: torch.device, work: Path) -> dict[str, Any]:
    """A real ``gstalk render`` (written to a file): frames/s, and the process's CPU time per frame (every
    thread's, encoding included), both over the frames alone (after loading the run and the speech)."""
    import soundfile

    from ..config import RenderConfig
    from ..drive.video import render_video

    audio = work / f"speech_{size}.wav"
    soundfile.write(audio, speech, 16_000)
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON
        config = RenderConfig(run=run, audio=audio, out=work / f"e2e_{size}.mp4", size=size,
                              device=device.type, progress=False, yes=True, overwrite=True)  # fmt: skip
        figures = render_video(config)
    core_use = figures["cpu_seconds"] / figures["seconds"] / threads.available_cores()
    return {
        "frames": figures["frames"],
        "end_to_end_fps": figures["fps"],
        "end_to_end_ms_per_frame": round(1000 / figures["fps"], 1),
        "end_to_end_cpu_ms_per_frame": round(1000 * figures["cpu_seconds"] / figures["frames"], 1),
        # the share of the cores the render kept busy (alone on the machine, below 1 means waiting)
        "end_to_end_core_use": round(core_use, 2),
    }


def stage_profile(driver, speech: np.ndarray, work: Path) -> dict[str, Any]:
    """Render every frame of ``speech`` through ``driver`` stage by stage, then encode them: milliseconds
    per frame of each stage (wall and this thread's CPU), and the rasterizer's own stages (wall)."""
    from ..data.frames import to_uint8
    from ..drive import PoseSource
    from ..media.encode import write_video

    laps, pose = Laps(), PoseSource()
    laps.start()
    speech_in = driver.speech(speech)
    laps.lap("features")
    n = len(speech_in)
    driver.render_frame(speech_in, 0, pose)  # warm-up (compiled code loaded), as `gstalk render` does
    frames = []
    with numba_backend.stage_clock() as rasterizer:
        for k in range(n):
            comp = driver.render_frame(speech_in, k, pose, laps=laps)
            laps.start()
            frames.append(to_uint8(comp.image))
            laps.lap("convert")
    sources = {driver.source(k, pose) for k in range(n)}
    layer_work = _layer_work(driver, sorted(sources)[:20])
    share = len(sources) / n  # frames whose source frame was new
    laps.add("layer_work", layer_work[0] * share * n, layer_work[1] * share * n)
    cpu, start = process_cpu(), time.perf_counter()
    write_video(work / "encode.mp4", frames, driver.fps, speech, 16_000)
    laps.add("encode", time.perf_counter() - start, process_cpu() - cpu)

    def per_frame(seconds: float) -> float:
        return round(1000 * seconds / n, 3)

    return {
        "threads": threads.threads(),
        "stage_ms": {k: {"wall": per_frame(laps.wall[k]), "cpu": per_frame(laps.cpu[k])} for k in laps.wall},
        "rasterizer_wall_ms": {k: per_frame(v) for k, v in rasterizer.items()},
    }


def _layer_work(driver, sources: list[int]) -> tuple[float, float]:
    """Median wall and CPU seconds of producing one source frame's layer from its files."""
    walls, cpus = [], []
    for s in sources:
        laps = Laps()
        laps.start()
        driver.frames.layer(s)
        laps.lap("layer")
        walls.append(laps.wall["layer"])
        cpus.append(laps.cpu["layer"])
    return float(np.median(walls)), float(np.median(cpus))
