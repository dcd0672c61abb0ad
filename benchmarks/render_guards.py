"""What `gstalk render` spends before it refuses, and how its memory grows with the audio's length
(issue 27, "guards before work"), printed as JSON.

    python benchmarks/render_guards.py --run RUN [--src SRC] [--lengths 60 300] [--size 256]

Each case is one `gstalk render` process of the checkout ``--src`` (default: this one) under
``/usr/bin/time -v``: its wall time, peak resident memory and exit status.

- ``refused_for_yes``: 5 minutes of speech with ``--confirm-minutes 0.5``, so the time estimate asks for
  ``--yes`` (issue 27: 88 s and 2.3 GB before the question);
- ``refused_silent``: 2 hours of digital silence (a FLAC file) with ``--max-audio-seconds 8000`` (issue
  27: 4.5 GB before "is silent");
- ``refused_too_long``: the same file at the default limit (refused from its header);
- ``render_<seconds>s``: a whole render of ``--lengths`` seconds of speech (``--yes``), to see whether
  peak memory grows with the length.

Target: peak memory of every refused render ≤ 500 MB. Run it alone (under the shared CPU lock).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import tyro

RATE = 16_000


@dataclasses.dataclass
class Args:
    run: Path
    src: Path = Path(__file__).resolve().parents[1] / "src"
    """The gstalk source to measure (e.g. another checkout's src/, to compare)."""
    lengths: tuple[float, ...] = (60.0, 300.0)
    size: int = 256
    audio: Path = Path("../shared/data/audio/english_commentary_60s.wav")
    """Speech to tile (a generated speech-like signal when the file is absent)."""


def _speech(path: Path) -> np.ndarray:
    if path.is_file():
        import librosa

        return librosa.load(str(path), sr=RATE, mono=True)[0].astype(np.float32)
    from gstalk.demo import speech_like_audio

    return speech_like_audio(60.0, seed=1).audio.astype(np.float32)


def _write(path: Path, chunks, codec: str = "pcm_s16le", fmt: str = "s16") -> Path:
    """Mono 16 kHz audio from chunks of float32, written as it comes (a 2-hour file is never held)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=RATE, layout="mono")
        pts = 0
        for chunk in chunks:
            if fmt == "s16":
                data = (np.clip(chunk, -1, 1) * 32767).astype(np.int16)[None]
            else:
                data = chunk.astype(np.float32)[None]
            frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
            frame.sample_rate, frame.pts = RATE, pts
            pts += chunk.size
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _tiled(speech: np.ndarray, seconds: float, chunk: int = RATE * 10):
    n = int(seconds * RATE)
    for start in range(0, n, chunk):
        idx = (np.arange(start, min(start + chunk, n))) % speech.size
        yield speech[idx]


def _measure(args: Args, *options: str) -> dict:
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "gstalk", "render", "--run", str(args.run),
           "--size", str(args.size), "--no-progress", *options]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(args.src)}
    )
    seconds = time.perf_counter() - start
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    said = [line for line in proc.stderr.splitlines() if line.startswith("gstalk")]
    return {"exit": proc.returncode, "seconds": round(seconds, 1),
            "peak_rss_mb": round(int(peak.group(1)) / 1024) if peak else None, "said": said[:3]}  # fmt: skip


def main(args: Args) -> dict:
    from gstalk.bench import hardware

    speech = _speech(args.audio)
    result = {"benchmark": "render_guards", "date": time.strftime("%Y-%m-%d"), "hardware": hardware(),
              "run": str(args.run), "src": str(args.src), "size": args.size,
              "loadavg_before": Path("/proc/loadavg").read_text().strip(), "cases": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        five = _write(tmp / "five_minutes.wav", _tiled(speech, 300.0))
        silent = _write(tmp / "two_hours_silent.flac", (np.zeros(RATE * 60, np.float32) for _ in range(120)),
                        codec="flac")  # fmt: skip
        cases = {
            "refused_for_yes": ("--audio", five, "--out", tmp / "a.mp4", "--confirm-minutes", "0.5"),
            "refused_silent": ("--audio", silent, "--out", tmp / "b.mp4", "--max-audio-seconds", "8000"),
            "refused_too_long": ("--audio", silent, "--out", tmp / "c.mp4"),
        }
        for seconds in args.lengths:
            audio = _write(tmp / f"speech_{seconds:g}.wav", _tiled(speech, seconds))
            cases[f"render_{seconds:g}s"] = ("--audio", audio, "--out", tmp / f"r{seconds:g}.mp4", "--yes")
        for name, options in cases.items():
            result["cases"][name] = _measure(args, *map(str, options))
            print(json.dumps({name: result["cases"][name]}), file=sys.stderr, flush=True)
    refused = [c["peak_rss_mb"] for n, c in result["cases"].items() if n.startswith("refused")]
    result["refused_peak_rss_mb_max"] = max(refused)
    result["met"] = max(refused) <= 500
    result["loadavg_after"] = Path("/proc/loadavg").read_text().strip()
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
