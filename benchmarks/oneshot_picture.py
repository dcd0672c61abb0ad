"""The README's one-shot picture, from a public-domain photo (no footage): scikit-image's ``astronaut``
(Eileen Collins, NASA) as the photo, ``gstalk prepare --image``, ``gstalk train`` (``--preset auto``, which
picks ``photo``), then frames of the avatar driven by speech with ``--pose idle``. Writes a strip: the
photo, then the avatar at a few moments of the speech.

    python benchmarks/oneshot_picture.py --work /tmp/oneshot-picture --out docs/oneshot.jpg \\
        [--audio ../shared/data/audio/english_commentary_60s.wav]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from gstalk.config import PrepareConfig, TrainConfig
from gstalk.demo import speech_like_audio
from gstalk.drive import Driver, PoseSource
from gstalk.media import read_audio
from gstalk.prepare import prepare
from gstalk.train import train


def label(image: np.ndarray, text: str) -> np.ndarray:
    out = np.ascontiguousarray(image)
    cv2.putText(out, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--audio", type=Path, default=None, help="speech (default: generated)")
    parser.add_argument("--times", type=float, nargs="+", default=[1.0, 3.2, 3.8, 5.8], help="seconds shown")
    args = parser.parse_args()
    from skimage.data import astronaut

    args.work.mkdir(parents=True, exist_ok=True)
    photo = args.work / "astronaut.png"
    cv2.imwrite(str(photo), astronaut()[..., ::-1])
    ds, run = args.work / "ds", args.work / "run"
    start = time.perf_counter()
    if not (ds / "manifest.json").is_file():
        prepare(PrepareConfig(image=photo, out=ds, size=256, progress=False))
    if not (run / "model").is_dir():
        train(TrainConfig(dataset=ds, out=run, size=256, progress=False))
    print(f"photo to avatar in {time.perf_counter() - start:.0f} s")
    audio = read_audio(args.audio) if args.audio else speech_like_audio(4.0, seed=5).audio.astype(np.float32)
    driver = Driver(run, size=256)
    speech = driver.speech(audio[: int(16_000 * (max(args.times) + 0.5))])
    tiles = [label(cv2.resize(astronaut(), (256, 256), interpolation=cv2.INTER_AREA), "the photo")]
    for t in args.times:
        k = round(t * driver.fps)
        comp = driver.render_frame(speech, k, PoseSource("idle"))
        image = (np.clip(comp.image.detach().cpu().numpy(), 0, 1) * 255).round().astype(np.uint8)
        tiles.append(label(image, f"avatar, {t:.1f} s"))
    cv2.imwrite(str(args.out), np.concatenate(tiles, 1)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
