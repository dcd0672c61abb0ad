"""``gstalk bench --what speech``: the CPU cost of the speech features (Whisper's encoder and log-mel),
offline and streamed as ``drive.stream.FrameStream`` computes them."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from typing import Any

from ..config import BenchConfig
from . import hardware


def speech_speed(config: BenchConfig) -> dict[str, Any]:
    """The speech features' cost: CPU seconds per second of audio, offline (a whole file in batched
    blocks) and streamed (20 ms chunks in real-time order, each block encoded once its window has
    arrived, as ``FrameStream`` does), for each feature kind; streamed, as a share of one core. CPU time is
    the process's (``time.process_time``: every thread), so run it alone."""
    from ..config import WhisperConfig
    from ..demo.subject import speech_like_audio
    from ..speech import build_spec, feature_kind

    fps, rate = 25.0, 16_000
    audio = speech_like_audio(config.render_seconds, seed=3).audio
    n = int(len(audio) / rate * fps)
    rows = []
    for name in ("whisper", "logmel"):
        kind = feature_kind(build_spec(name, WhisperConfig()))
        kind.compute(audio[:rate], 25, fps)  # warm-up: loads the encoder, compiles librosa's kernels
        t = time.process_time()
        kind.compute(audio, n, fps)
        offline = (time.process_time() - t) / (len(audio) / rate)
        t = time.process_time()
        done, start = 0, 0
        for end in range(320, len(audio) + 320, 320):  # 20 ms chunks
            arrived = min(end, len(audio)) / rate
            last = done - 1
            while last + 1 < n and kind.ready_seconds(last + 1, fps) <= arrived:
                last += 1
            if last >= done:
                start = max(0, round((done / fps - kind.history_seconds() - 0.1) * rate))
                kind.compute_range(audio[start:end], start, done, last - done + 1, fps)
                done = last + 1
        streamed = (time.process_time() - t) / (len(audio) / rate)
        rows.append({"features": name, "offline_cpu_s_per_audio_s": round(offline, 4),
                     "streamed_cpu_s_per_audio_s": round(streamed, 4),
                     "streamed_share_of_one_core": round(streamed, 3),
                     "lookahead_s": round(kind.lookahead_seconds(), 3)})  # fmt: skip
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {"benchmark": "speech_speed", "date": dt.date.today().isoformat(), "hardware": hardware(),
            "audio_seconds": round(len(audio) / rate, 1), "results": rows}  # fmt: skip


__all__ = ["speech_speed"]
