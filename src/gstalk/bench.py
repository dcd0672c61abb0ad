"""Benchmarks that print JSON: rendering speed of each backend (more land with training and prepare)."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
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


def run_bench(config: BenchConfig) -> dict[str, Any]:
    result = render_speed(config)
    result["config"] = config_to_dict(config)
    print(json.dumps(result, indent=2))
    if config.out is not None:
        write_json_atomic(config.out, result)
        save_config(config, config.out.parent, name=config.out.stem + ".config.json")
    return result
