"""Rendering speed, side by side in one run, printed as JSON: the torch and compiled (numba) rasterizers
(forward, and forward+backward, 10k Gaussians at 256² and 512²), then `gstalk render` end to end at 256²
and 512² (frames/s including H.264 + AAC encoding) with a per-stage profile (layer, networks, rasterize,
convert, encode: wall and CPU time per frame, with one thread and with every core; see
``gstalk.bench.pipeline``). ``--what train`` profiles a training step of each stage part by part and
estimates the preset's training time (``gstalk.bench.training``).

    python benchmarks/render_speed.py                  # an untrained 10k-Gaussian model of the demo subject
    python benchmarks/render_speed.py --run RUN        # a trained run
    python benchmarks/render_speed.py --what pipeline --run RUN --render-seconds 10     # target (a)
    python benchmarks/render_speed.py --what train --run RUN --train-steps 30          # target (b)
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
