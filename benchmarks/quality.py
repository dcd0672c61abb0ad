"""Ablation of the lip-sync design in one run: train and evaluate each variant on the same clip with the
same preset and iteration budget, print JSON and a table.

Variants:
- ``no_mesh``: the design before mesh binding: Gaussians on the canonical face, moved only by the
  deformation networks from audio and expression (today's networks: the fixed cross-attention and the
  expression colour);
- ``mesh``: Gaussians bound to the face mesh, which the audio → motion model drives; no residual;
- ``mesh_residual``: the same, refined by the residual deformation networks.

    python benchmarks/quality.py --dataset DATASET --out DIR [--variants mesh mesh_residual]
        [--iterations 1500 4000 800] [--cross-audio FILE ...]

Run it alone on the machine: training and evaluation use every core.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import tyro

from gstalk.bench import hardware
from gstalk.config import EvaluateConfig, ModelConfig, TrainConfig
from gstalk.eval.evaluate import evaluate
from gstalk.train import train
from gstalk.train.checkpoint import latest_checkpoint

VARIANTS = {
    "no_mesh": ModelConfig(mesh_driven=False),
    "mesh": ModelConfig(residual=False),
    "mesh_residual": ModelConfig(residual=True),
}


@dataclasses.dataclass
class Args:
    dataset: Path
    out: Path
    variants: tuple[str, ...] = tuple(VARIANTS)
    preset: str = "cpu"
    size: int | None = None
    iterations: tuple[int, int, int] | None = None
    eval_size: int | None = 512
    """Evaluate every variant at this size (compare presets that train at different sizes)."""
    cross_audio: tuple[Path, ...] = tuple(sorted(Path("../shared/data/audio").glob("*")))
    cross_seconds: float = 10.0


def main(args: Args) -> dict:
    rows = []
    for name in args.variants:
        run = args.out / name
        start = time.perf_counter()
        if not (run / "model").is_dir():
            train(TrainConfig(
                dataset=args.dataset, out=run, preset=args.preset, size=args.size, iterations=args.iterations,
                model=VARIANTS[name], resume=latest_checkpoint(run) is not None, progress=False,
            ))  # fmt: skip
        trained = time.perf_counter() - start
        m = evaluate(EvaluateConfig(run=run, size=args.eval_size, cross_audio=args.cross_audio,
                                    cross_seconds=args.cross_seconds, progress=False))  # fmt: skip
        art = m["articulation"]
        cross = {
            c["audio"]: {"correlation": c["correlation"], "range_ratio": c["opening_range_ratio"],
                         "seam_share": c["seam_share"]}
            for c in m["cross_audio"]
        }  # fmt: skip
        rows.append({
            "variant": name,
            "train_minutes": round(trained / 60, 1),
            "psnr": m["full"]["psnr"], "ssim": m["full"]["ssim"], "mouth_psnr": m["full"]["mouth_psnr"],
            "lmd": m["full"]["lmd"],
            "zero_audio_mouth_psnr": m.get("zero_audio", {}).get("mouth_psnr"),
            "opening_correlation": art["opening_correlation"],
            "opening_range_ratio": art["opening_range_ratio"],
            "lip_vertex_error_mm": art["lip_vertex_error_mm"], "seam_share": art["seam_share"],
            "cross_audio": cross,
        })  # fmt: skip
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    result = {"benchmark": "quality", "date": time.strftime("%Y-%m-%d"), "hardware": hardware(),
              "dataset": str(args.dataset), "preset": args.preset, "size": args.size,
              "iterations": args.iterations, "eval_size": args.eval_size,
              "results": rows}  # fmt: skip
    print(json.dumps(result, indent=2))
    head = (
        "| variant | PSNR | mouth PSNR (zero audio) | LMD | opening corr | range ratio | lip err mm | seam |"
    )
    print(f"\n{head} cross-audio corr |\n" + "|---" * 9 + "|", file=sys.stderr)
    for r in rows:
        cross = ", ".join(f"{v['correlation']}" for v in r["cross_audio"].values())
        print(
            f"| {r['variant']} | {r['psnr']} | {r['mouth_psnr']} ({r['zero_audio_mouth_psnr']}) | "
            f"{r['lmd']} | "
            f"{r['opening_correlation']} | {r['opening_range_ratio']} | {r['lip_vertex_error_mm']} | "
            f"{r['seam_share']} | {cross} |",
            file=sys.stderr,
        )
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
