"""Kill `gstalk prepare` and `gstalk train` with SIGKILL at random moments, resume each time, and check the
result: a benchmark of crash safety, printed as JSON.

    python benchmarks/kill_resume.py --out /tmp/kills [--kills 20] [--seed 0]

For prepare: the generated subject (6 s at 128²) is prepared with a kill at a random moment, then resumed
with the same command until it finishes; the dataset must pass `gstalk check` and match, file for file,
a dataset prepared without interruption. For train: a small run (64², 600 Gaussians) is killed at a random
moment, resumed with --resume until it finishes; the final model must load, be finite, and log.csv must
hold every step once. Each kill is one trial; the JSON counts the trials that ended in a valid result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import tyro

ENV = {**os.environ, "GSTALK_THREADS": "2"}


@dataclasses.dataclass
class Args:
    out: Path
    kills: int = 20
    seed: int = 0


def _gstalk(*args: str) -> list[str]:
    return [sys.executable, "-m", "gstalk", *args]


def _run_killed(cmd: list[str], after: float) -> bool:
    """Run ``cmd``, SIGKILL it after ``after`` seconds; True when it finished before the kill."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        proc.wait(timeout=after)
        return proc.returncode == 0
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return False


def _digest(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix != ".json":  # JSON holds timings
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def prepare_trials(args: Args, clip: Path, rng: random.Random) -> dict:
    reference = args.out / "reference"
    prep = ["prepare", "--video", str(clip), "--size", "128", "--no-progress"]
    start = time.perf_counter()
    subprocess.run(_gstalk(*prep, "--out", str(reference)), env=ENV, check=True, capture_output=True)
    full = time.perf_counter() - start
    want = _digest(reference)
    ok = 0
    for trial in range(args.kills):
        out = args.out / f"prepare_{trial}"
        finished = _run_killed(_gstalk(*prep, "--out", str(out)), rng.uniform(0.5, full))
        resumes = 0
        while not finished:
            resumes += 1
            finished = _run_killed(_gstalk(*prep, "--out", str(out)), 10 * full)
        check = subprocess.run(_gstalk("check", "--dataset", str(out)), env=ENV, capture_output=True)
        same = _digest(out) == want
        ok += check.returncode == 0 and same
        print(json.dumps({"prepare_trial": trial, "valid": check.returncode == 0, "identical": same}),
              file=sys.stderr, flush=True)  # fmt: skip
        shutil.rmtree(out)
    return {"trials": args.kills, "valid_and_identical": ok, "uninterrupted_seconds": round(full, 1)}


def train_trials(args: Args, dataset: Path, rng: random.Random) -> dict:
    from gstalk.model.checkpoint import load_model
    from gstalk.train.trainer import read_log

    base = ["train", "--dataset", str(dataset), "--size", "64", "--max-gaussians", "600",
            "--iterations", "150", "150", "30", "--checkpoint-every", "10", "--audio-motion.steps", "100",
            "--audio-motion.augmented-copies", "1", "--log-every", "10", "--no-progress"]  # fmt: skip
    iterations = {"static": 150, "motion": 150, "fusion": 30}
    expected = {(stage, step) for stage, n in iterations.items() for step in [*range(0, n, 10), n - 1]}
    start = time.perf_counter()
    subprocess.run(_gstalk(*base, "--out", str(args.out / "train_reference")), env=ENV, check=True,
                   capture_output=True)  # fmt: skip
    full = time.perf_counter() - start
    ok = 0
    for trial in range(args.kills):
        out = args.out / f"train_{trial}"
        finished = _run_killed(_gstalk(*base, "--out", str(out)), rng.uniform(1.0, full))
        while not finished:
            finished = _run_killed(_gstalk(*base, "--out", str(out), "--resume"), 10 * full)
        try:
            model, _ = load_model(out / "model")
            finite = all(bool(p.isfinite().all()) for p in model.parameters())
            steps = {(r["stage"], int(r["step"])) for r in read_log(out / "log.csv")}
            complete = steps == expected  # every logged step present once, none lost to a kill
        except Exception as err:  # any failure to read the result is a failed trial
            print(f"trial {trial}: {err}", file=sys.stderr)
            finite = complete = False
        ok += finite and complete
        print(json.dumps({"train_trial": trial, "finite": finite, "log_complete": complete}),
              file=sys.stderr, flush=True)  # fmt: skip
        shutil.rmtree(out)
    return {"trials": args.kills, "valid": ok, "uninterrupted_seconds": round(full, 1)}


def main(args: Args) -> dict:
    from gstalk.bench import hardware
    from gstalk.demo import make_demo_subject

    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    clip = make_demo_subject(args.out / "subject.mp4", seconds=6.0, seed=3)
    result = {
        "benchmark": "kill_resume",
        "date": time.strftime("%Y-%m-%d"),
        "hardware": hardware(),
        "prepare": prepare_trials(args, clip, rng),
        "train": train_trials(args, args.out / "reference", rng),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
