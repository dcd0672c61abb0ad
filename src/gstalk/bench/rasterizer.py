"""The rasterizer's speed on a synthetic head scene: forward and forward+backward per backend."""

from __future__ import annotations

import datetime as dt
import json
import statistics
import sys
import time
from typing import Any

import torch

from ..config import BenchConfig
from ..splat import rasterize
from ..splat.gsplat_backend import gsplat_available
from ..splat.scenes import head_shell, orbit_cameras
from . import hardware


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
