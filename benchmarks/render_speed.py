"""Rendering speed of each backend: forward and forward+backward ms per frame, printed as JSON.

    python benchmarks/render_speed.py                       # N in {5k, 20k, 50k}, 256² and 512²
    python benchmarks/render_speed.py --camera-batch 8      # cameras batched per call (GPU)

Same as ``gstalk bench --what rasterizer``; results are recorded in docs/benchmarks.md.
"""

import tyro

from gstalk.bench import run_bench
from gstalk.config import BenchConfig

if __name__ == "__main__":
    run_bench(tyro.cli(BenchConfig, default=BenchConfig(what=("rasterizer",))))
