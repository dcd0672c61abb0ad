"""The README's few-shot picture, from the generated subject (no footage): a 12 s talking clip made by
``gstalk.demo.make_demo_subject``, prepared with ``--seconds 5``, trained with ``--preset auto`` (which
picks ``few``) at 256², then its held-out tail rendered from the tail's own speech. Writes a strip:
the real tail frames on top, the avatar's below.

    python benchmarks/fewshot_picture.py --work /tmp/fewshot-picture --out docs/fewshot.jpg
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from gstalk.config import PrepareConfig, TrainConfig
from gstalk.data.dataset import load_dataset
from gstalk.demo import make_demo_subject
from gstalk.drive import Driver, PoseSource
from gstalk.media import read_audio
from gstalk.prepare import prepare
from gstalk.train import train


def label(image: np.ndarray, text: str) -> np.ndarray:
    out = image.copy()
    cv2.putText(out, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--frames", type=int, default=5, help="tail frames shown")
    args = parser.parse_args()
    clip = args.work / "subject.mp4"
    if not clip.is_file():
        args.work.mkdir(parents=True, exist_ok=True)
        make_demo_subject(clip, seconds=12.0, seed=11)
    ds = args.work / "ds"
    if not (ds / "manifest.json").is_file():
        prepare(PrepareConfig(video=clip, out=ds, size=256, seconds=args.seconds, progress=False))
    run = args.work / "run"
    start = time.perf_counter()
    if not (run / "model").is_dir():
        train(TrainConfig(dataset=ds, out=run, size=256, progress=False))
    print(f"trained in {time.perf_counter() - start:.0f} s")
    data = load_dataset(ds)
    tail = data.test_ids
    driver = Driver(run, size=256)
    audio = read_audio(data.audio_path)
    speech = driver.speech(audio)
    picks = tail[np.linspace(0, len(tail) - 1, args.frames).round().astype(int)]
    real, rendered = [], []
    for k in picks:
        comp = driver.render_frame(speech, int(k), PoseSource("replay"), source=int(k))
        image = (np.clip(comp.image.detach().cpu().numpy(), 0, 1) * 255).round().astype(np.uint8)
        rendered.append(label(image, f"avatar, frame {k}"))
        real.append(label(data.image(int(k)), f"real, frame {k}"))
    sheet = np.concatenate([np.concatenate(real, 1), np.concatenate(rendered, 1)], 0)
    cv2.imwrite(str(args.out), sheet[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
