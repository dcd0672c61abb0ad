"""``gstalk bench``: speed as JSON. The rasterizer on a synthetic head (``bench.rasterizer``), the render
pipeline end to end and stage by stage (``bench.pipeline``), a training step stage by stage
(``bench.training``), and the speech features' CPU cost (``bench.speech``). Timings are medians; stage
profiles give this thread's CPU time with one thread (the work, which other jobs on the machine barely
change) and wall-clock time with every core."""

from __future__ import annotations

import json
import os
import platform
import sys
from typing import Any

import torch

from ..config import BenchConfig, config_to_dict, save_config
from ..fileio import write_json_atomic


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


def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Run the benchmarks ``config.what`` names; print the JSON (and write it to ``config.out``)."""
    import tempfile

    from .pipeline import pipeline_speed
    from .rasterizer import render_speed
    from .speech import speech_speed
    from .training import train_profile

    result: dict[str, Any] = {}
    if "speech" in config.what:
        result["speech"] = speech_speed(config)
    with tempfile.TemporaryDirectory() as tmp:
        subject: dict[str, Any] = {}  # the generated subject, prepared once for pipeline and train
        if "pipeline" in config.what:
            result["pipeline"] = pipeline_speed(config, subject, tmp)
        if "train" in config.what:
            result["train"] = train_profile(config, subject, tmp)
    if "rasterizer" in config.what:
        result["rasterizer"] = render_speed(config)
    result["config"] = config_to_dict(config)
    print(json.dumps(result, indent=2))
    if config.out is not None:
        write_json_atomic(config.out, result)
        save_config(config, config.out.parent, name=config.out.stem + ".config.json")
    return result


__all__ = ["hardware", "run_bench"]
