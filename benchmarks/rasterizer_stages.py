"""Where one frame of the compiled (numba) rasterizer goes, stage by stage, printed as JSON.

The scene is the synthetic head (``head_shell``, default 10 000 Gaussians) plus, by default, a 1 000-Gaussian
mouth interior drawn behind it in one pass (``groups``), as ``gstalk render`` draws a cpu-preset model.

Rendering (no gradients; ``rasterize`` as the render loop calls it, over a background image):
    total, and within it project (compiled projection), bin (pixel boxes, draw order, tile lists),
    forward (tile compositing straight to the image over the background); "other" is the rest
    (input checks, conversions).
Training (forward + backward of ``rasterize``, as a training step calls it):
    total, and within it bin, forward (compositing, keeping the sums the backward needs), backward (tile
    gradients), gather (summing them per Gaussian), project (the compiled projection and its
    backward); "torch" is the rest: input checks, autograd's bookkeeping and the stand-in loss
    (the sum of the image and alpha) and its backward.

Medians over ``--repeats`` runs after a warm-up. Run it alone on the machine:

    python benchmarks/rasterizer_stages.py                     # 512², 10k + 1k Gaussians, all cores
    python benchmarks/rasterizer_stages.py --size 256 --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from gstalk.splat import numba_backend, rasterize, threads
from gstalk.splat.scenes import GaussianScene, head_shell, orbit_cameras


def scene_with_mouth(n_head: int, n_mouth: int) -> tuple[GaussianScene, torch.Tensor | None]:
    """The head shell and, behind its lower front, a small shell standing in for the mouth interior."""
    head = head_shell(n_head)
    if n_mouth == 0:
        return head, None
    mouth = head_shell(n_mouth, seed=1, radii=(0.025, 0.012, 0.02))
    mouth.means = mouth.means + torch.tensor([0.0, 0.04, -0.06])
    both = GaussianScene(*(torch.cat([a, b]) for a, b in zip(head.tensors(), mouth.tensors())))
    groups = torch.cat([torch.zeros(n_head, dtype=torch.int32), torch.ones(n_mouth, dtype=torch.int32)])
    return both, groups


def timed_stages(fn, repeats: int) -> dict[str, float]:
    """Median milliseconds of ``fn()`` in total and per backend stage, after one warm-up."""
    fn()
    runs: list[dict[str, float]] = []
    for _ in range(repeats):
        with numba_backend.stage_clock() as clock:
            start = time.perf_counter()
            fn()
            total = time.perf_counter() - start
        runs.append({"total": total, **clock})
    names = runs[0].keys()
    return {name: round(1000 * statistics.median(r.get(name, 0.0) for r in runs), 3) for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=512, help="square image size in pixels")
    parser.add_argument("--gaussians", type=int, default=10_000, help="Gaussians of the head")
    parser.add_argument("--mouth", type=int, default=1_000, help="Gaussians of the mouth interior (0: none)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="worker threads (default: every core)")
    args = parser.parse_args()
    threads.configure(args.threads)
    scene, groups = scene_with_mouth(args.gaussians, args.mouth)
    cams = orbit_cameras(1, args.size)
    background = torch.rand(args.size, args.size, 3, generator=torch.Generator().manual_seed(0))
    leaves = [t.clone().requires_grad_() for t in scene.tensors()]

    def render():
        with torch.no_grad():
            rasterize(*scene.tensors(), cams, background=background, backend="numba", groups=groups)

    def train_step():
        for leaf in leaves:
            leaf.grad = None
        out = rasterize(*leaves, cams, background=background, backend="numba")
        (out.image.sum() + out.alpha.sum()).backward()

    render_ms = timed_stages(render, args.repeats)
    render_ms["other"] = round(render_ms["total"] - sum(v for k, v in render_ms.items() if k != "total"), 3)
    train_ms = timed_stages(train_step, args.repeats)
    train_ms["torch"] = round(train_ms["total"] - sum(v for k, v in train_ms.items() if k != "total"), 3)
    result = {
        "benchmark": "rasterizer_stages",
        "size": args.size,
        "gaussians": args.gaussians + args.mouth,
        "threads": threads.threads(),
        "render_ms": render_ms,
        "train_step_ms": train_ms,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
