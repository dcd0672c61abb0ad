"""Few-shot avatars, InsTaG's protocol (issue 25): train on the first --seconds of a longer clip and
evaluate on its held-out tail (the last 1/11, which prepare keeps out of training whatever --seconds), as
JSON.

For each clip given as NAME=VIDEO: ``gstalk prepare --seconds S``, ``gstalk train`` (``--preset auto``,
which picks ``few`` for such a clip; timed), and ``gstalk evaluate`` on the tail: PSNR, SSIM, mouth PSNR
and LMD of the avatar driven by the tail's own speech, and the same avatar driven by silence (LMD must be
below it), with the rendered-vs-real mouth opening correlation.

The shipped prior was trained on ../shared/data/corpus, which holds these clips' people; with
``--prior-work PRIOR`` (a folder made by ``gstalk prior train``, whose ``work/folds`` keep each fold's
prior) each clip's avatar starts from the fold that never saw its person, so the motion is tested on a
voice the prior never heard. Run it alone on the machine (it records /proc/loadavg before and after):

    python benchmarks/fewshot.py cnn=../shared/data/corpus/cnn_anchor_en_71s.mp4 \
        lieu=../shared/data/corpus/lieu_en_60s.mp4 german=../shared/data/corpus/german_anchor_de_20s.mp4 \
        --work /tmp/fewshot --prior-work PRIOR --out fewshot.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from gstalk.config import EvaluateConfig, PrepareConfig, TrainConfig
from gstalk.eval.evaluate import evaluate
from gstalk.fileio import write_json_atomic
from gstalk.prepare import prepare
from gstalk.train import train

#: clip name in the corpus → its person (the key of figures.json's "folds")
PEOPLE = {"cnn": "cnn_anchor", "lieu": "lieu", "german": "german_anchor"}


def fold_prior(prior_work: Path | None, person: str) -> str:
    """The prior of the fold that held ``person`` out (``builtin`` without ``prior_work``)."""
    if prior_work is None:
        return "builtin"
    folds = json.loads((prior_work / "figures.json").read_text())["folds"]
    if person not in folds:
        raise SystemExit(f"{person} is not a person of the corpus in {prior_work}; pass --person NAME=PERSON")
    return str(prior_work / "work" / "folds" / f"fold{folds[person]}.safetensors")


def one_clip(name: str, video: Path, work: Path, seconds: float, prior: str) -> dict:
    ds, run = work / name / "ds", work / name / "run"  # a run folder must be new: pass a fresh --work
    start = time.perf_counter()
    if not (ds / "manifest.json").is_file():
        prepare(PrepareConfig(video=video, out=ds, seconds=seconds, progress=False))
    prepared = time.perf_counter() - start
    start = time.perf_counter()
    train(TrainConfig(dataset=ds, out=run, prior=prior, progress=False))
    trained = time.perf_counter() - start
    metrics = evaluate(EvaluateConfig(run=run, progress=False))
    full, silent = metrics["full"], metrics["zero_audio"]
    return {
        "video": str(video),
        "train_seconds_of_video": seconds,
        "test_frames": metrics["test_frames"],
        "prior": prior,
        "prepare_seconds": round(prepared, 1),
        "train_seconds": round(trained, 1),
        "psnr": full["psnr"],
        "ssim": full["ssim"],
        "mouth_psnr": full["mouth_psnr"],
        "lmd": full["lmd"],
        "silence": {k: silent[k] for k in ("psnr", "ssim", "mouth_psnr", "lmd")},
        "lmd_below_silence": full["lmd"] < silent["lmd"],
        "opening_correlation": metrics["articulation"]["opening_correlation"],
        "opening_range_ratio": metrics["articulation"]["opening_range_ratio"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("clips", nargs="+", help="NAME=VIDEO, one per clip")
    parser.add_argument("--work", type=Path, required=True, help="folder for the datasets and runs")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of video trained on")
    parser.add_argument("--prior-work", type=Path, default=None, help="a `gstalk prior train` folder")
    parser.add_argument("--person", action="append", default=[], help="NAME=PERSON for clips not in PEOPLE")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    people = dict(PEOPLE, **dict(p.split("=", 1) for p in args.person))
    load = Path("/proc/loadavg")
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "loadavg_before": load.read_text().split()[:3] if load.exists() else None,
        "clips": {},
    }
    for item in args.clips:
        name, sep, video = item.partition("=")
        if not sep:
            parser.error(f"expected NAME=VIDEO, got {item!r}")
        prior = fold_prior(args.prior_work, people.get(name, name))
        result["clips"][name] = one_clip(name, Path(video), args.work, args.seconds, prior)
        print(json.dumps({name: result["clips"][name]}), flush=True)
    result["loadavg_after"] = load.read_text().split()[:3] if load.exists() else None
    result["command"] = "python benchmarks/fewshot.py " + " ".join(args.clips)
    print(json.dumps(result, indent=1))
    if args.out is not None:
        write_json_atomic(args.out, result)


if __name__ == "__main__":
    main()
