"""How well the weight-free lip-sync measure finds a clip's audio–video offset, printed as JSON.

For each clip (its first ``--seconds``), the face is tracked once; the sound is then moved by each of
±3, ±6, ±9, ±12 frames and the offset estimated again. A shift is found when the estimate moves by as
much, within one frame. Two pairs of series are compared: the one ``prepare`` uses (speech-band energy
and jaw opening, detrended: ``face.sync.estimate_offset``) and eval's (broadband energy and inner-lip gap,
``face.sync.lip_sync``'s inputs, searched over the same range).

    python benchmarks/sync_offsets.py --videos ../shared/data/video/*.mp4 --seconds 20

The figures are quoted in docs/architecture.md ("The video as a player shows it").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from gstalk.face.sync import correlations, estimate_offset, jaw_openings, mouth_openings
from gstalk.face.track import track_frames
from gstalk.media import read_paired
from gstalk.media.audio import audio_energy, speech_energy

SHIFTS = (-12, -9, -6, -3, 3, 6, 9, 12)


@dataclass
class Config:
    videos: tuple[Path, ...]
    """Talking-head clips with their sound."""
    seconds: float = 20.0
    """Length of each clip used."""
    search: int = 18
    """Offsets searched either way, frames."""


def track(video: Path, seconds: float):
    paired = read_paired(video, 25, max_seconds=seconds)
    lm, valid = track_frames(paired.frames, 25)
    return lm, valid, paired.audio


def moved(audio: np.ndarray, frames: int) -> np.ndarray:
    n = frames * 640  # the sound later by `frames` at 25 fps, 16 kHz
    return np.concatenate([np.zeros(n, np.float32), audio]) if n >= 0 else audio[-n:]


def clip_figures(video: Path, config: Config) -> dict:
    lm, valid, audio = track(video, config.seconds)
    jaw, gap, n = jaw_openings(lm, valid), mouth_openings(lm, valid), len(lm)

    def ours(shift: int):
        return estimate_offset(speech_energy(moved(audio, shift), n, 25), jaw, config.search)

    def evals(shift: int) -> int:
        return int(np.nanargmax(correlations(audio_energy(moved(audio, shift), n, 25), gap, config.search)))

    base, eval_base = ours(0), evals(0)
    found = sum(abs(ours(s).offset_frames - (base.offset_frames - s)) <= 1 for s in SHIFTS)
    eval_found = sum(abs(evals(s) - (eval_base - s)) <= 1 for s in SHIFTS)
    return {
        "video": video.name,
        "frames": n,
        "offset_frames": base.offset_frames,
        "correlation": round(base.correlation, 3),
        "chance": round(base.chance, 3),
        "above_chance": base.significant,
        "shifts_found": found,
        "shifts_found_eval_pair": eval_found,
        "of": len(SHIFTS),
    }


def main(config: Config) -> dict:
    rows = [clip_figures(v, config) for v in config.videos]
    result = {"benchmark": "sync_offsets", "seconds": config.seconds, "results": rows}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(tyro.cli(Config))
