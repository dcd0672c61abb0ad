"""Rendering speed, side by side in one run, printed as JSON: the torch and compiled (numba) rasterizers
(forward, and forward+backward, 10k Gaussians at 256² and 512²), then the end-to-end render loop at 256²
and 512² (frames/s including H.264 + AAC encoding) with a per-stage profile (features, networks,
rasterize, composite, encode).

    python benchmarks/render_speed.py                  # an untrained 10k-Gaussian model of the demo subject
    python benchmarks/render_speed.py --run RUN        # a trained run
    python benchmarks/render_speed.py --what rasterizer --gaussians 5000 20000 50000

Same as ``gstalk bench``. Run it alone on the machine; results are recorded in docs/benchmarks.md.
Where a compiled-rasterizer frame goes, stage by stage (projection, binning, compositing, backward):
``python benchmarks/rasterizer_stages.py``.
"""

import tyro

from gstalk.bench import run_bench
from gstalk.config import BenchConfig

if __name__ == "__main__":
    run_bench(tyro.cli(BenchConfig))
