"""One-shot avatars, measured (issue 25's one-shot target): an avatar from ONE photo, then MGGTalk's
self-reenactment protocol on the clip the photo came from.

For each clip:

1. its first frame (as a player shows it) is the photo;
2. ``gstalk prepare --image`` and ``gstalk train`` (the photo preset) on it, timed together: photo → avatar;
3. ``gstalk evaluate --reference-video`` against the clip (a dataset ``gstalk prepare`` made of it, so the
   clip is prepared once), on its last 1/11: the avatar at the clip's tracked poses, driven by the clip's
   speech, and by silence, over the clip's real pixels: PSNR, SSIM, head and mouth PSNR, LMD, the opening
   correlation and range ratio.

Targets: PSNR ≥ 28, SSIM ≥ 0.85, LMD below the same avatar driven by silence, opening correlation ≥ 0.5,
photo → avatar ≤ 5 min. Prints JSON (with the date, the hardware and the load average before and after).

    python benchmarks/oneshot.py --clips ../shared/data/video/cnn_anchor_71s_512_25fps.mp4 \\
        --references /work/datasets2/cnn --out /tmp/oneshot-bench
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import shutil
import time
from pathlib import Path

import tyro
from PIL import Image

from gstalk.bench import hardware
from gstalk.config import EvaluateConfig, PrepareConfig, TrainConfig
from gstalk.eval.evaluate import evaluate
from gstalk.media import read_frames
from gstalk.prepare import prepare
from gstalk.train.trainer import train


@dataclasses.dataclass
class Args:
    clips: tuple[Path, ...]
    """Talking clips; the first frame of each is the photo."""
    references: tuple[Path, ...] = ()
    """For each clip, a dataset `gstalk prepare` made of it (default: evaluate prepares the clip itself)."""
    out: Path = Path("/tmp/gstalk-oneshot-bench")
    """Where the photos, datasets, runs and evaluations go (replaced)."""
    iterations: tuple[int, int, int] | None = None
    """Training iterations (default: the photo preset's)."""


def load() -> list[float]:
    return [round(float(v), 2) for v in open("/proc/loadavg").read().split()[:3]]


def first_frame(clip: Path, photo: Path) -> Path:
    for _, rgb in read_frames(clip, 25.0, 0, 1):
        Image.fromarray(rgb).save(photo)
        return photo
    raise SystemExit(f"{clip} has no frame")


def one(args: Args, clip: Path, reference: Path | None) -> dict:
    name = clip.stem
    folder = args.out / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    photo = first_frame(clip, folder / "photo.png")
    start = time.perf_counter()
    dataset = prepare(PrepareConfig(image=photo, out=folder / "dataset", progress=False))
    prepared = time.perf_counter() - start
    run = train(TrainConfig(dataset=dataset, out=folder / "run", iterations=args.iterations, progress=False))
    made = time.perf_counter() - start
    metrics = evaluate(EvaluateConfig(run=run, reference_video=reference or clip, progress=False))
    keep = ("psnr", "ssim", "head_psnr", "mouth_psnr", "lmd", "opening_correlation", "opening_range_ratio")
    speech = {k: metrics["speech"].get(k) for k in keep}
    silence = {k: metrics["silence"].get(k) for k in keep}
    return {
        "clip": str(clip),
        "reference": str(reference or clip),
        "frames": metrics.get("frames"),
        "prepare_s": round(prepared, 1),
        "photo_to_avatar_s": round(made, 1),
        "speech": speech,
        "silence": silence,
        "targets": {
            "psnr_28": speech["psnr"] >= 28,
            "ssim_0.85": speech["ssim"] >= 0.85,
            "lmd_below_silence": speech["lmd"] < silence["lmd"],
            "opening_correlation_0.5": speech["opening_correlation"] >= 0.5,
            "five_minutes": made <= 300,
        },
    }


def main(args: Args) -> None:
    before = load()
    references = list(args.references) + [None] * (len(args.clips) - len(args.references))
    results = [one(args, clip, ref) for clip, ref in zip(args.clips, references)]
    print(json.dumps({
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "hardware": hardware(),
        "load_before": before,
        "load_after": load(),
        "results": results,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main(tyro.cli(Args))
