"""The sync check of every clip: is the speech in step with the mouth, and if it is off by a little, by
how much (the lip-sync measure of ``face.sync``, on the tracked frames).

The verdicts, and what ``prepare`` does:

- **in sync**: the best offset is within ±0.09 s of the mouth's natural lead (below the ITU-R BT.1359
  detectability thresholds of 45 ms sound lead and 125 ms sound lag); nothing to do.
- **corrected**: a clear offset (above chance, not at the end of the search) of at most
  ``--max-sync-correction`` seconds: the sound is moved by it, and the note says so.
- **out of sync**: a clear offset larger than that, or at the end of the search: a warning; nothing moved.
- **no match**: on a clip of 20 s or more, no offset beats chance: the speech does not follow the mouth
  (dubbed, a voice-over, another person speaking, or out of sync by more than the search): a warning.
- **inconclusive**: the same on a shorter clip, where chance is high: a note.
- **given**: ``--audio-offset`` was passed; it is applied as given, and the estimate is still reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..face.sync import OffsetEstimate, estimate_offset, jaw_openings
from ..media.audio import TimedAudio, speech_energy

#: how far the mouth leads the sound in a clip that plays in sync, seconds: the best offset on the shared
#: clips is one frame at 25 fps (-1 on cnn, german; -2 lieu; -3 may; 0 trump)
MOUTH_LEAD_S = 0.04
#: best offsets within this of the natural lead are in sync, seconds
IN_SYNC_S = 0.09
#: a clip at least this long is long enough to say that its speech does not follow the mouth, seconds
MATCH_SECONDS = 20.0


@dataclass(frozen=True)
class SyncCheck:
    """What the sync check found and did."""

    verdict: str
    """in sync, corrected, out of sync, no match, inconclusive, given, or not measured."""
    offset_s: float | None
    """The sound's offset against the picture, seconds: positive when the sound comes early (it should be
    delayed by this much), negative when late; None when not measured."""
    shift_s: float
    """How much later the sound was placed (the correction, or ``--audio-offset``), seconds."""
    estimate: OffsetEstimate | None
    message: str
    """The sentence the user reads (empty when in sync)."""

    @property
    def warns(self) -> bool:
        return self.verdict in ("out of sync", "no match")

    def as_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "offset_s": None if self.offset_s is None else round(self.offset_s, 3),
            "shift_s": round(self.shift_s, 3),
            "message": self.message,
            "measure": self.estimate.as_dict() if self.estimate is not None else None,
        }


def search_frames(fps: float, max_correction: float) -> int:
    """Offsets searched either way, frames: beyond the largest correction by more than the mouth's natural
    lead and the in-sync band (at least 0.7 s)."""
    return math.ceil((max(max_correction, 0.5) + 0.2) * fps)


def check_sync(
    audio: TimedAudio,
    landmarks: np.ndarray,
    valid: np.ndarray,
    first: int,
    covered: tuple[int, int],
    fps: float,
    max_correction: float,
    given: float | None = None,
) -> SyncCheck:
    """The sync check of tracked frames ``first … first + T - 1`` (``landmarks`` (T, 478, >=2) pixels,
    ``valid`` (T,) bool) against ``audio`` on the same clock; ``covered`` = (first, stop) frames with sound
    under them. ``given``: the user's ``--audio-offset`` (seconds to delay the sound), applied as is."""
    n = len(valid)
    energy = speech_energy(audio.between(first / fps, (first + n) / fps), n, fps, audio.rate)
    frames = np.arange(first, first + n)
    energy[(frames < covered[0]) | (frames >= covered[1])] = np.nan
    est = estimate_offset(energy, jaw_openings(landmarks, valid), search_frames(fps, max_correction))
    if not np.isfinite(est.correlation):
        return SyncCheck("not measured", None, given or 0.0, est, "too few frames with a face and sound")
    offset = (est.offset_frames + round(MOUTH_LEAD_S * fps)) / fps
    if given is not None:
        return SyncCheck("given", offset, given, est, f"the sound was moved {given:+.2f} s as asked")
    return _verdict(est, offset, fps, max_correction)


def _verdict(est: OffsetEstimate, offset: float, fps: float, max_correction: float) -> SyncCheck:
    figures = f"correlation {est.correlation:.2f} at best, {est.chance:.2f} by chance"
    if not np.isfinite(est.chance):
        return SyncCheck("inconclusive", offset, 0.0, est,
                         f"the clip is too short to check its sync ({est.frames} frames with a face and "
                         "sound); the sound is used as it plays")  # fmt: skip
    if not est.significant:
        if est.frames / fps >= MATCH_SECONDS:
            return SyncCheck("no match", offset, 0.0, est,
                             f"the speech does not follow the mouth ({figures}): is the sound dubbed, a "
                             "voice-over, another person, or out of sync by more than "
                             f"{search_frames(fps, max_correction) / fps:.1f} s? The model "
                             "learns lip motion from this pairing")  # fmt: skip
        return SyncCheck("inconclusive", offset, 0.0, est,
                         f"the sync check is inconclusive on this clip ({figures}); the sound is used as "
                         "it plays")  # fmt: skip
    early_or_late = f"{abs(offset):.2f} s {'early' if offset > 0 else 'late'}"
    if abs(offset) <= IN_SYNC_S + 1e-9:
        return SyncCheck("in sync", offset, 0.0, est, "")
    if est.at_edge or abs(offset) > max_correction + 1e-9:
        return SyncCheck("out of sync", offset, 0.0, est,
                         f"the clip looks out of sync: the sound comes {early_or_late}"
                         f"{' or more' if est.at_edge else ''} ({figures}); it was not moved (more than "
                         f"--max-sync-correction {max_correction:g} s). If you know the offset, pass "
                         "--audio-offset SECONDS (positive delays the sound)")  # fmt: skip
    return SyncCheck("corrected", offset, offset, est,
                     f"the sound came {early_or_late} against the mouth ({figures}); it was moved "
                     f"{offset:+.2f} s to match (--max-sync-correction 0 turns this off)")  # fmt: skip


def sync_caption(sync: dict) -> str:
    """A short line for the contact sheet from ``SyncCheck.as_dict()``."""
    if sync.get("offset_s") is None:
        return f"sync: {sync['verdict']}"
    text = f"audio-video offset {sync['offset_s']:+.2f} s ({sync['verdict']}"
    if sync.get("shift_s"):
        text += f", sound moved {sync['shift_s']:+.2f} s"
    r = (sync.get("measure") or {}).get("correlation")
    return text + (f"; r = {r:.2f})" if r is not None else ")")
