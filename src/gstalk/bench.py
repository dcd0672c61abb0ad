"""Benchmarks that print JSON: rendering speed of each backend (more land with training and prepare)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .config import BenchConfig, config_to_dict, save_config
from .fileio import write_json_atomic
from .splat import rasterize
from .splat.gsplat_backend import gsplat_available
from .splat.scenes import head_shell, orbit_cameras


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            info["cpu"] = names[0]
    except OSError:
        pass
    return info


def _timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def render_speed(config: BenchConfig) -> dict[str, Any]:
    """Forward and forward+backward milliseconds per frame for every (backend, N, size)."""
    if config.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(config.device)
    rows = []
    for backend in config.backends:
        if backend == "gsplat" and not gsplat_available():
            rows.append({"backend": backend, "skipped": "needs a CUDA GPU and gsplat"})
            continue
        bdevice = torch.device("cuda") if backend == "gsplat" else device
        for n in config.gaussians:
            scene = head_shell(n).to(bdevice)
            for size in config.sizes:
                cams = orbit_cameras(config.camera_batch, size).to(bdevice)
                leaves = [t.clone().requires_grad_() for t in scene.tensors()]

                def forward(leaves=leaves, cams=cams, backend=backend):
                    with torch.no_grad():
                        return rasterize(*leaves, cams, background=1.0, backend=backend)

                def forward_backward(leaves=leaves, cams=cams, backend=backend):
                    out = rasterize(*leaves, cams, background=1.0, backend=backend)
                    out.image.sum().backward()

                frames = config.camera_batch
                fwd = _timed(forward, bdevice, config.repeats) / frames
                row = {
                    "backend": backend,
                    "device": str(bdevice),
                    "gaussians": n,
                    "size": size,
                    "camera_batch": frames,
                    "forward_ms_per_frame": round(1000 * fwd, 3),
                    "forward_fps": round(1 / fwd, 1),
                }
                if config.backward:
                    fb = _timed(forward_backward, bdevice, config.repeats) / frames
                    row["forward_backward_ms_per_frame"] = round(1000 * fb, 3)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    return {
        "benchmark": "render_speed",
        "date": dt.date.today().isoformat(),
        "hardware": hardware(),
        "results": rows,
    }


def pipeline_speed(config: BenchConfig) -> dict[str, Any]:
    """Prepare throughput, training step time and end-to-end render frames/s (audio features →
    deformation → rasterize → composite), on the generated demo subject or a given run."""
    import tempfile

    from .config import PrepareConfig, TrainConfig
    from .demo.subject import make_demo_subject, speech_like_audio
    from .device import pick_device
    from .model.checkpoint import save_model
    from .prepare import prepare
    from .train.trainer import Trainer

    device = pick_device(config.device)
    rows: dict[str, Any] = {"device": str(device)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run = config.run
        if run is None:
            clip = make_demo_subject(work / "subject.mp4", seconds=8.0)
            start = time.perf_counter()
            ds_path = prepare(PrepareConfig(video=clip, out=work / "dataset", size=512, progress=False))
            seconds = time.perf_counter() - start
            rows["prepare"] = {
                "input": "512² generated subject, 8 s",
                "frames": 200,
                "seconds": round(seconds, 1),
                "frames_per_s": round(200 / seconds, 1),
            }
            # one training step of the motion stage (deformation + both renders + backward + Adam)
            trainer = Trainer(
                TrainConfig(
                    dataset=ds_path, out=work / "t", size=256, max_gaussians=10_000, progress=False,
                    device=device.type,
                )
            )  # fmt: skip
            model = trainer.init_model()
            stage = trainer.stages[1]
            opt = trainer.optimizer(stage)
            ids = trainer.ds.train_ids.tolist()
            step = _timed(lambda: trainer.step(stage, ids[len(ids) // 2], opt), device, config.repeats)
            rows["train_step"] = {
                "size": 256,
                "gaussians": len(model.head) + len(model.mouth),
                "ms": round(1000 * step, 1),
            }
            run = work / "run"
            save_model(
                run / "model",
                model,
                {"stage_index": 3, "step": 0, "dataset": str(ds_path), "train_size": 256},
            )
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


def render_profile(run: Path, speech, size: int, device: torch.device, work: Path) -> dict[str, Any]:
    """End to end as ``gstalk render`` does it (frames/s including H.264 + AAC encoding, written to a file),
    then the same frames once more stage by stage: milliseconds per frame of audio features (with the
    audio → motion model), the networks, rasterizing (face and interior in one pass, over the layer),
    composing (the source frame's layer and the conversion to 8 bits) and encoding."""
    import soundfile

    from .config import RenderConfig
    from .data.frames import to_uint8
    from .drive import Driver, PoseSource
    from .drive.stream import lookahead_seconds
    from .drive.video import render_video
    from .media.encode import write_video

    audio = work / f"speech_{size}.wav"
    soundfile.write(audio, speech, 16_000)
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON
        figures = render_video(RenderConfig(run=run, audio=audio, out=work / f"e2e_{size}.mp4", size=size,
                                            device=device.type, progress=False, yes=True))  # fmt: skip
    driver = Driver(run, size=size, device=device)
    pose = PoseSource()
    clock: dict[str, float] = {}
    t = time.perf_counter()
    speech_in = driver.speech(speech)
    features_seconds = time.perf_counter() - t
    n = len(speech_in)
    frames = []
    for k in range(n):
        comp = driver.render_frame(speech_in, k, pose, clock=clock)
        t = time.perf_counter()
        frames.append(to_uint8(comp.image))
        clock["convert"] = clock.get("convert", 0.0) + time.perf_counter() - t
    clock = {
        "features": features_seconds, "networks": clock["networks"], "rasterize": clock["rasterize"],
        "composite": clock["layer"] + clock["convert"],
    }  # fmt: skip
    t = time.perf_counter()
    write_video(work / f"encode_{size}.mp4", frames, driver.fps, speech, 16_000)
    clock["encode"] = time.perf_counter() - t
    return {
        "size": size,
        "gaussians": len(driver.model.head) + len(driver.model.mouth),
        "frames": figures["frames"],
        "end_to_end_fps": figures["fps"],
        "end_to_end_ms_per_frame": round(1000 / figures["fps"], 1),
        "stage_ms_per_frame": {k: round(1000 * v / n, 2) for k, v in clock.items()},
        "stages_sum_ms": round(1000 * sum(clock.values()) / n, 1),
        # streaming: a frame can start once its lookahead of audio has arrived, and is ready one frame's
        # compute later (features of the short recent segment, networks, rasterize, composite)
        "stream_lookahead_s": round(lookahead_seconds(driver), 3),
        "stream_latency_s": round(lookahead_seconds(driver) + (sum(clock.values()) - clock["encode"]) / n, 3),
    }


def speech_speed(config: BenchConfig) -> dict[str, Any]:
    """The speech features' cost: CPU seconds per second of audio, offline (a whole file in batched
    blocks) and streamed (20 ms chunks in real-time order, each block encoded once its window has
    arrived, as ``FrameStream`` does), for each feature kind; streamed, as a share of one core. CPU time is
    the process's (``time.process_time``: every thread), so run it alone."""

    from .config import WhisperConfig
    from .data.manifest import AudioSpec
    from .demo.subject import speech_like_audio

    fps, rate = 25.0, 16_000
    audio = speech_like_audio(config.render_seconds, seed=3).audio
    n = int(len(audio) / rate * fps)
    logmel = AudioSpec.build("logmel")
    rows = []
    for name, spec in (("whisper", AudioSpec.for_whisper(WhisperConfig())), ("logmel", logmel)):
        spec.compute(audio[:rate], 25, fps)  # warm-up: loads the encoder, compiles librosa's kernels
        t = time.process_time()
        spec.compute(audio, n, fps)
        offline = (time.process_time() - t) / (len(audio) / rate)
        t = time.process_time()
        done, start = 0, 0
        for end in range(320, len(audio) + 320, 320):  # 20 ms chunks
            arrived = min(end, len(audio)) / rate
            last = done - 1
            while last + 1 < n and spec.ready_seconds(last + 1, fps) <= arrived:
                last += 1
            if last >= done:
                start = max(0, round((done / fps - spec.history_seconds() - 0.1) * rate))
                spec.compute_range(audio[start:end], start, done, last - done + 1, fps)
                done = last + 1
        streamed = (time.process_time() - t) / (len(audio) / rate)
        rows.append({"features": name, "offline_cpu_s_per_audio_s": round(offline, 4),
                     "streamed_cpu_s_per_audio_s": round(streamed, 4),
                     "streamed_share_of_one_core": round(streamed, 3),
                     "lookahead_s": round(spec.lookahead_seconds(), 3)})  # fmt: skip
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {"benchmark": "speech_speed", "date": dt.date.today().isoformat(), "hardware": hardware(),
            "audio_seconds": round(len(audio) / rate, 1), "results": rows}  # fmt: skip


def run_bench(config: BenchConfig) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if "speech" in config.what:
        result["speech"] = speech_speed(config)
    if "pipeline" in config.what:
        result["pipeline"] = pipeline_speed(config)
    if "rasterizer" in config.what:
        result["rasterizer"] = render_speed(config)
    result["config"] = config_to_dict(config)
    print(json.dumps(result, indent=2))
    if config.out is not None:
        write_json_atomic(config.out, result)
        save_config(config, config.out.parent, name=config.out.stem + ".config.json")
    return result
