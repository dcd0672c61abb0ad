"""Does a pause inside speech close the rendered mouth? (issue 18's pause target, on the rendered video.)

Renders ``--audio`` (speech with digital silence inside it) through a trained run with ``gstalk render``,
tracks the rendered frames with MediaPipe, and compares the mouth opening (inner-lip gap over the
outer-eye-corner distance, ``face.sync.mouth_opening``) inside the silence with the training clip's own
openings (the dataset's tracked landmarks of its training frames). The mouth closes when the median
opening inside the silence, from 0.12 s after it starts, is below the clip's 10th percentile. Prints JSON.

    python benchmarks/pause_render.py --run RUN [--audio SPEECH_WITH_SILENCE.wav]

Run it alone on the machine (it renders at the dataset's size).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np
import tyro

from gstalk.bench import hardware
from gstalk.config import RenderConfig
from gstalk.data import load_dataset
from gstalk.drive.video import render_video
from gstalk.face.sync import mouth_openings
from gstalk.face.track import track_frames
from gstalk.media import read_audio
from gstalk.media.audio import silent_frames
from gstalk.media.video import read_frames


@dataclasses.dataclass
class Args:
    run: Path
    """A trained run."""
    audio: Path = Path("../shared/data/cases/speech_with_2s_digital_silence.wav")
    """Speech with digital silence inside it."""
    settle_frames: int = 3
    """Frames into a silence before the mouth is measured."""


def main(args: Args) -> dict:
    ds = load_dataset(json.loads((args.run / "config.json").read_text())["config"]["dataset"])
    train = ds.train_ids[ds.valid[ds.train_ids]]
    clip = mouth_openings(ds.tracks.landmarks2d[train], np.ones(len(train), bool))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pause.mp4"
        figures = render_video(RenderConfig(run=args.run, audio=args.audio, out=out, progress=False))
        frames = [rgb for _, rgb in read_frames(out, ds.fps)]
    landmarks, valid = track_frames(frames, ds.fps)
    rendered = mouth_openings(landmarks, valid)
    audio = read_audio(args.audio)
    silent = silent_frames(audio, len(rendered), ds.fps)
    settled = silent & np.all([np.roll(silent, s) for s in range(1, args.settle_frames + 1)], axis=0)
    p10 = float(np.nanpercentile(clip, 10))
    pause = float(np.nanmedian(rendered[settled])) if settled.any() else float("nan")
    speech = float(np.nanmedian(rendered[~silent]))
    result = {
        "benchmark": "pause_render",
        "run": str(args.run),
        "audio": str(args.audio),
        "frames": len(rendered),
        "tracked_share": round(float(valid.mean()), 3),
        "silent_frames_measured": int(settled.sum()),
        "pause_opening_median": round(pause, 4),
        "speech_opening_median": round(speech, 4),
        "clip_opening_p10": round(p10, 4),
        "clip_opening_median": round(float(np.nanmedian(clip)), 4),
        "pause_closes": bool(pause < p10),
        "render_fps": figures.get("fps"),
        "hardware": hardware(),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
