"""Detail and speed of trained avatars, per clip, in one run, as JSON (issue 26).

For each run given as NAME=RUN_FOLDER: on its dataset's held-out frames, the render's high-frequency
ratio (Laplacian energy) and 1–3 px band ratio (difference of Gaussians) against the real frames inside
the face box (medians over frames), the Laplacian energy of the error, PSNR, SSIM, mouth PSNR and LMD; the
Gaussian count; the rasterizer on the avatar's frames with one and two threads; and `gstalk render` end to
end at each --sizes (H.264 + AAC included) on the first --render-seconds of the clip's own speech. The
definitions are in `gstalk.bench.detail`. Run it alone on the machine (it records /proc/loadavg before
and after):

    python benchmarks/detail.py cnn=/work/runs/baseline/cnn german=... lieu=... --out detail.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gstalk.bench.detail import detail_benchmark
from gstalk.fileio import write_json_atomic


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", help="NAME=RUN_FOLDER, one per clip")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 256], help="end-to-end render sizes")
    parser.add_argument("--render-seconds", type=float, default=10.0, help="seconds of speech rendered")
    parser.add_argument("--max-frames", type=int, default=None, help="only the first N held-out frames")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    runs = {}
    for item in args.runs:
        name, sep, folder = item.partition("=")
        if not sep:
            parser.error(f"expected NAME=RUN_FOLDER, got {item!r}")
        runs[name] = Path(folder)
    result = detail_benchmark(runs, tuple(args.sizes), args.render_seconds, max_frames=args.max_frames)
    result["command"] = "python benchmarks/detail.py " + " ".join(args.runs)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out is not None:
        write_json_atomic(args.out, result)


if __name__ == "__main__":
    main()
