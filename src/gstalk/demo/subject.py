"""The embedded default subject: a talking clip generated from a public-domain photo, no media shipped.

scikit-image's ``astronaut`` (Eileen Collins, NASA, public domain) is animated: a jaw and lip warp whose
opening follows the envelope of synthesised speech-like audio, blinks, and small head motion. Face
tracking therefore runs on a real face, and the mouth really moves with the sound.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..fileio import atomic_path
from ..media.audio import AUDIO_RATE
from ..media.encode import write_video


@dataclass
class SpeechLike:
    audio: np.ndarray  # (S,) float32 at 16 kHz
    envelope: np.ndarray  # (S,) float32 in [0, 1]: how open the mouth is


def speech_like_audio(seconds: float, seed: int = 0, rate: int = AUDIO_RATE) -> SpeechLike:
    """Voiced syllables (a glottal pulse train through two formant resonances) at ~4 per second,
    separated by pauses, with a slowly wandering pitch. Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    envelope = np.zeros(n, np.float64)
    pos = 0.15
    while pos < seconds - 0.2:
        length = rng.uniform(0.12, 0.3)
        start, stop = int(pos * rate), min(n, int((pos + length) * rate))
        envelope[start:stop] = np.sin(np.linspace(0, np.pi, stop - start)) ** 0.7 * rng.uniform(0.5, 1.0)
        pos += length + (rng.uniform(0.35, 0.8) if rng.random() < 0.15 else rng.uniform(0.03, 0.1))
    f0 = 140 + 25 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 6)) + 10 * np.sin(2 * np.pi * 1.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    source = np.sign(np.sin(phase)) * 0.5 + 0.5 * np.sin(phase)
    voiced = np.zeros(n)
    for formant, bandwidth in ((700, 130), (1200, 120), (2500, 200)):
        b, a = _resonator(formant, bandwidth, rate)
        voiced += _lfilter(b, a, source)
    noise = rng.standard_normal(n) * 0.15
    audio = envelope * (voiced / np.abs(voiced).max() + noise * (envelope < 0.3))
    audio = 0.3 * audio / max(np.abs(audio).max(), 1e-9)
    return SpeechLike(audio.astype(np.float32), envelope.astype(np.float32))


def _resonator(freq: float, bandwidth: float, rate: int):
    r = np.exp(-np.pi * bandwidth / rate)
    theta = 2 * np.pi * freq / rate
    return np.array([1 - r]), np.array([1.0, -2 * r * np.cos(theta), r * r])


def _lfilter(b, a, x):
    from scipy.signal import lfilter

    return lfilter(b, a, x)


def _face_geometry(image: np.ndarray) -> dict:
    from ..face.landmarks import LEFT_EYE, LIPS_INNER, LIPS_OUTER, RIGHT_EYE
    from ..face.track import FaceTracker

    with FaceTracker() as tracker:
        obs = tracker.track(image)
    if obs is None:  # pragma: no cover - the bundled photo always has a face
        raise RuntimeError("no face found in the demo photo")
    p = obs.landmarks[:, :2]
    return {
        # inner lip contour from one mouth corner (78) to the other (308), upper and lower
        "upper": p[[LIPS_INNER[i] for i in (5, 4, 3, 2, 1, 0, 19, 18, 17, 16, 15)]],
        "lower": p[LIPS_INNER[5:16]],
        "outer": p[LIPS_OUTER],
        "eyes": [p[RIGHT_EYE], p[LEFT_EYE]],
        "chin": p[152],
        "mouth": p[[13, 14]].mean(0),
        "face_width": float(np.ptp(p[:, 0])),
    }


def _frames(image: np.ndarray, geo: dict, opening: np.ndarray, fps: float, seed: int):
    """Yield the animated frames (RGB uint8)."""
    rng = np.random.default_rng(seed + 1)
    h, w = image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    mouth_y = float(geo["mouth"][1])
    chin_y = float(geo["chin"][1])
    cx = float(geo["mouth"][0])
    half_w = 0.42 * geo["face_width"]
    # weight of the jaw warp: 0 above the lips' meeting line, 1 from just below it (the lower lip and
    # the jaw move together), fading out below the chin and toward the cheeks
    ramp = np.clip((ys - mouth_y + 1) / 3.0, 0, 1)
    below = np.clip(1 - (ys - chin_y) / (0.6 * (chin_y - mouth_y)), 0, 1)
    side = np.clip(1 - ((xs - cx) / half_w) ** 2, 0, 1)
    jaw_weight = np.minimum(ramp, below) * side
    max_open = 0.35 * (chin_y - mouth_y)
    blink_times = set()
    t_next = rng.uniform(0.5, 2.0)
    n = len(opening)
    while t_next * fps < n:
        start = int(t_next * fps)
        blink_times.update(range(start, start + 4))
        t_next += rng.uniform(2.0, 4.5)
    blink_shape = {0: 0.5, 1: 1.0, 2: 0.7, 3: 0.3}
    lid_colour = image[int(geo["eyes"][0][:, 1].min()) - 6, int(geo["eyes"][0][:, 0].mean())].astype(
        np.float64
    )
    blink_start = {}
    for i in sorted(blink_times):
        blink_start.setdefault(i, i if i - 1 not in blink_times else blink_start[i - 1])
    for i in range(n):
        d = float(opening[i]) * max_open
        frame = cv2.remap(image, xs, ys - d * jaw_weight, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if d > 0.5:  # the revealed mouth interior: dark, upper and lower teeth, the tongue behind them
            upper = geo["upper"]
            lower = geo["lower"].copy()
            arc = np.sin(np.linspace(0, np.pi, len(lower))) ** 0.5
            lower[:, 1] += d * arc
            cv2.fillPoly(
                frame, [np.round(np.concatenate([upper, lower[::-1]])).astype(np.int32)], (60, 18, 24)
            )
            tongue = lower.copy()
            tongue[:, 1] -= min(0.45 * d, 9) * arc
            tongue[:, 0] = geo["mouth"][0] + 0.75 * (tongue[:, 0] - geo["mouth"][0])
            cv2.fillPoly(
                frame, [np.round(np.concatenate([tongue, lower[::-1]])).astype(np.int32)], (165, 70, 78)
            )
            teeth_up = upper.copy()
            teeth_up[:, 1] += min(0.3 * d, 7) * np.sin(np.linspace(0, np.pi, len(upper)))
            cv2.fillPoly(
                frame, [np.round(np.concatenate([upper, teeth_up[::-1]])).astype(np.int32)], (232, 226, 214)
            )
            teeth_low = lower.copy()
            teeth_low[:, 1] -= min(0.15 * d, 4) * arc
            cv2.fillPoly(
                frame, [np.round(np.concatenate([teeth_low, lower[::-1]])).astype(np.int32)], (215, 208, 196)
            )
            for x in np.linspace(upper[2, 0], upper[-3, 0], 7)[1:-1]:  # gaps between the front teeth
                top = float(
                    np.interp(x, upper[:, 0], upper[:, 1])
                    if upper[0, 0] < upper[-1, 0]
                    else np.interp(x, upper[::-1, 0], upper[::-1, 1])
                )
                cv2.line(
                    frame,
                    (round(x), round(top)),
                    (round(x), round(top + min(0.3 * d, 7))),
                    (190, 182, 170),
                    1,
                )
        if i in blink_times:
            amount = blink_shape[i - blink_start[i]]
            for eye in geo["eyes"]:
                mask = np.zeros((h, w), np.uint8)
                cv2.fillPoly(mask, [np.round(eye).astype(np.int32)], 1)
                mask = cv2.dilate(mask, np.ones((3, 3), np.uint8)).astype(bool)
                frame[mask] = (amount * lid_colour + (1 - amount) * frame[mask]).astype(np.uint8)
        t = i / fps
        angle = 1.5 * np.sin(2 * np.pi * 0.23 * t) + 0.8 * np.sin(2 * np.pi * 0.61 * t + 1.0)
        shift = (2.5 * np.sin(2 * np.pi * 0.17 * t), 1.5 * np.sin(2 * np.pi * 0.29 * t + 2.0))
        m = cv2.getRotationMatrix2D((float(geo["mouth"][0]), float(geo["mouth"][1])), angle, 1.0)
        m[:, 2] += shift
        yield cv2.warpAffine(frame, m, (w, h), borderMode=cv2.BORDER_REPLICATE)


def mouth_opening(speech: SpeechLike, fps: float) -> np.ndarray:
    """Per video frame, how open the generated mouth is: the speech envelope, smoothed like a real jaw."""
    hop = AUDIO_RATE / fps
    n = int(len(speech.envelope) / hop)
    per_frame = np.array([speech.envelope[int(i * hop) : int((i + 1) * hop)].mean() for i in range(n)])
    return np.convolve(per_frame, [0.25, 0.5, 0.25], mode="same")


def make_demo_subject(path: str | Path, seconds: float = 20.0, fps: float = 25.0, seed: int = 0) -> Path:
    """Write the talking astronaut clip (H.264 + AAC mp4) to ``path``; returns the path."""
    from skimage.data import astronaut

    image = astronaut()
    speech = speech_like_audio(seconds, seed)
    frames = _frames(image, _face_geometry(image), mouth_opening(speech, fps), fps, seed)
    path = Path(path)
    with atomic_path(path) as tmp:
        write_video(tmp, frames, fps, speech.audio, AUDIO_RATE)
    return path
