"""Two gstalk renders sharing the machine: each one's frames/s against the same render alone, as JSON.

    python benchmarks/concurrent_render.py --run RUN [--audio FILE] [--size 256]

Each render is a separate `gstalk render` process with the default thread settings, as two users would
start them. Run it alone on the machine.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tyro


@dataclasses.dataclass
class Args:
    run: Path
    audio: Path = Path("../shared/data/audio/jfk_11s.flac")
    size: int = 256


def _start(args: Args, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "gstalk", "render", "--run", str(args.run), "--audio", str(args.audio),
           "--out", str(out), "--size", str(args.size), "--no-progress", "--yes"]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _fps(proc: subprocess.Popen) -> float:
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(stderr)
    return float(re.search(r"\(([\d.]+) frames/s", stdout).group(1))


def main(args: Args) -> dict:
    from gstalk.bench import hardware

    with tempfile.TemporaryDirectory() as tmp:
        solo = _fps(_start(args, Path(tmp) / "solo.mp4"))
        time.sleep(1)
        pair = [_start(args, Path(tmp) / f"pair{k}.mp4") for k in range(2)]
        both = [_fps(p) for p in pair]
    result = {
        "benchmark": "concurrent_render", "date": time.strftime("%Y-%m-%d"), "hardware": hardware(),
        "run": str(args.run), "size": args.size, "solo_fps": solo, "pair_fps": both,
        "pair_share_of_solo": [round(f / solo, 2) for f in both],
    }  # fmt: skip
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
