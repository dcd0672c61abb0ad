"""The sync check of every clip: is the speech in step with the mouth, and if it is off by a little, by
how much (``face.sync.estimate_offset`` on the tracked frames).

What the sound is compared with the mouth by:

- **the prior** (``method: prior``, whenever the clip gets Whisper features the shipped or given motion
  prior reads): the inner-lip gap the speaker-independent prior predicts from the sound alone, against
  the tracked inner-lip gap. In sync, the two peak together (the prior was fitted on clips whose offsets
  were corrected); its correlation (about 0.6 on people it never saw) is about twice the energy's, so
  short clips get a clear answer far more often;
- **the energy** (``method: energy``, otherwise, and when the prior's measure gives no clear answer: a
  sound that is not speech the prior knows, such as the generated demo subject's): the speech band's
  energy against the jaw's opening, which lead the sound by about a frame (:data:`MOUTH_LEAD_S`).

The verdicts, and what ``prepare`` does:

- **in sync**: the best offset is within ±0.09 s of in step (below the ITU-R BT.1359 detectability
  threshold of 125 ms sound lag; the energy's natural lead varies between speakers by as much, and many
  public clips have their sound a frame or two late); nothing to do.
- **corrected**: a clear offset (``face.sync.CLEAR_Z`` standard deviations above chance, clearly better
  than every offset within the in-sync band, not at the end of the search) of at most
  ``--max-sync-correction`` seconds: the sound is moved by it, and the note says so.
- **out of sync**: a clear offset larger than that, or at the end of the search: a warning; nothing moved.
- **no match**: on a clip of 20 s or more, no offset is clear: the speech does not follow the mouth
  (dubbed, a voice-over, another person speaking, or out of sync by more than the search): a warning.
- **inconclusive**: the same on a shorter clip, where chance is high, or a best offset hardly better than
  being in sync: a note; the sound is used as it plays.
- **given**: ``--audio-offset`` was passed; it is applied as given, and the estimate is still reported.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ..face.sync import OffsetEstimate, estimate_offset, jaw_openings, mouth_openings
from ..media.audio import TimedAudio, speech_energy

#: how far the mouth leads the sound in a clip that plays in sync, seconds: the best offset on the shared
#: clips is one frame at 25 fps (-1 on cnn, german; -2 lieu; -3 may; 0 trump)
MOUTH_LEAD_S = 0.04
#: best offsets within this of the natural lead are in sync, seconds (the energy measure: its natural lead
#: varies by a frame or two between speakers)
IN_SYNC_S = 0.09
#: the band the motion prior's trainer corrects its corpus within (its measure peaks at zero for clips in
#: sync, within a frame at 25 fps): training wants each clip's offset to the frame. Prepare keeps
#: :data:`IN_SYNC_S` for both measures: a user's clip whose sound is a frame or two late (as several public
#: clips are) is below what a viewer can detect, and is used as it plays
PRIOR_IN_SYNC_S = 0.05
#: a clip at least this long is long enough to say that its speech does not follow the mouth, seconds
MATCH_SECONDS = 20.0
#: a best offset outside the in-sync band must beat the best inside it by this much correlation (or by two
#: standard deviations of chance, when that is more) to be corrected
MARGIN = 0.03


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
    method: str = "energy"
    """What the sound was compared with the mouth by: ``prior`` (its predicted lip gap) or ``energy``."""

    @property
    def warns(self) -> bool:
        return self.verdict in ("out of sync", "no match")

    def as_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "offset_s": None if self.offset_s is None else round(self.offset_s, 3),
            "shift_s": round(self.shift_s, 3),
            "message": self.message,
            "method": self.method,
            "measure": self.estimate.as_dict() if self.estimate is not None else None,
        }


def search_frames(fps: float, max_correction: float) -> int:
    """Offsets searched either way, frames: beyond the largest correction by more than the mouth's natural
    lead and the in-sync band (at least 0.7 s)."""
    return math.ceil((max(max_correction, 0.5) + 0.2) * fps)


def prior_lip_gap(audio: TimedAudio, first: int, stop: int, fps: float, prior: str = "builtin",
                  whisper=None, speech_model=None) -> np.ndarray | None:  # fmt: skip
    """(stop - first,) the lip gap the motion prior ``prior`` (builtin, a file or folder, or none)
    predicts for frames ``first … stop - 1`` from ``audio`` as it plays, through Whisper features made as
    ``whisper`` (a ``config.WhisperConfig``; default: the defaults) says; None with ``prior`` none or
    features the prior does not read. Raises :class:`GstalkError` for a prior that cannot be loaded."""
    if str(prior) == "none":
        return None
    from ..config import WhisperConfig
    from ..speech import build_spec, feature_kind
    from ..speech.prior import load_prior

    model = load_prior(prior)
    spec = build_spec("whisper", whisper or WhisperConfig(), speech_model)
    if model is None or model.check_features(spec) is not None:
        return None
    samples = audio.between(first / fps, stop / fps)
    features = feature_kind(spec, speech_model).compute(samples, stop - first, fps)
    return model.lip_gap(features)


def check_sync(
    audio: TimedAudio,
    landmarks: np.ndarray,
    valid: np.ndarray,
    first: int,
    covered: tuple[int, int],
    fps: float,
    max_correction: float,
    given: float | None = None,
    predicted: np.ndarray | None = None,
    lead_frames: int | None = None,
    in_sync_s: float | None = None,
    fallback: bool = True,
) -> SyncCheck:
    """The sync check of tracked frames ``first … first + T - 1`` (``landmarks`` (T, 478, >=2) pixels,
    ``valid`` (T,) bool) against ``audio`` on the same clock; ``covered`` = (first, stop) frames with sound
    under them. ``given``: the user's ``--audio-offset`` (seconds to delay the sound), applied as is.
    ``predicted``: (T,) the motion prior's lip gap predicted from the sound as it plays (any units; NaN
    where unknown): the sound is then compared with the mouth through it, else through its energy.
    ``lead_frames``: the best offset (frames, positive: the mouth moves after the sound) of a clip in sync
    with this measure (default: 0 with ``predicted``, the mouth's natural lead with the energy);
    ``in_sync_s``: the half-width of the in-sync band, seconds (default :data:`IN_SYNC_S`). When the
    prior's measure is not clear (``OffsetEstimate.significant`` false), the energy's is tried too, and
    its verdict is kept if it is clear (unless ``fallback`` is false)."""
    args = (audio, landmarks, valid, first, covered, fps, max_correction, given)
    check = _check(*args, predicted, lead_frames, in_sync_s)
    if not fallback or predicted is None or check.estimate is None or check.estimate.significant:
        return check
    energy = _check(*args, None, None, in_sync_s)
    return energy if energy.estimate is not None and energy.estimate.significant else check


def _check(audio, landmarks, valid, first, covered, fps, max_correction, given, predicted, lead_frames,
           in_sync_s) -> SyncCheck:  # fmt: skip
    n = len(valid)
    frames = np.arange(first, first + n)
    outside = (frames < covered[0]) | (frames >= covered[1])
    if predicted is not None:
        method, lead = "prior", 0 if lead_frames is None else -lead_frames
        sound = np.asarray(predicted, np.float64).copy()
        mouth = mouth_openings(landmarks, valid)
    else:
        method, lead = "energy", round(MOUTH_LEAD_S * fps) if lead_frames is None else -lead_frames
        sound = speech_energy(audio.between(first / fps, (first + n) / fps), n, fps, audio.rate)
        mouth = jaw_openings(landmarks, valid)
    in_sync_s = IN_SYNC_S if in_sync_s is None else in_sync_s
    sound[outside] = np.nan
    est = estimate_offset(sound, mouth, search_frames(fps, max_correction))
    if not np.isfinite(est.correlation):
        return SyncCheck("not measured", None, given or 0.0, est, "too few frames with a face and sound",
                         method)  # fmt: skip
    offset = (est.offset_frames + lead) / fps
    if given is not None:
        return SyncCheck("given", offset, given, est, f"the sound was moved {given:+.2f} s as asked", method)
    return dataclasses.replace(_verdict(est, offset, fps, max_correction, lead, in_sync_s), method=method)


def _verdict(est: OffsetEstimate, offset: float, fps: float, max_correction: float, lead: int,
             in_sync_s: float = IN_SYNC_S) -> SyncCheck:  # fmt: skip
    figures = (f"correlation {est.correlation:.2f} at best, {est.chance:.2f} by chance"
               + (f", {est.z:.1f} standard deviations above it" if np.isfinite(est.z) else ""))  # fmt: skip
    if not np.isfinite(est.chance):
        return SyncCheck("inconclusive", offset, 0.0, est,
                         f"the clip is too short to check its sync ({est.frames} frames with a face and "
                         "sound); the sound is used as it plays")  # fmt: skip
    if not est.significant:
        if est.frames / fps >= MATCH_SECONDS:
            return SyncCheck("no match", offset, 0.0, est,
                             f"the speech does not follow the mouth clearly ({figures}): is the sound "
                             "dubbed, a voice-over, another person, or out of sync by more than "
                             f"{search_frames(fps, max_correction) / fps:.1f} s? The model "
                             "learns lip motion from this pairing")  # fmt: skip
        return SyncCheck("inconclusive", offset, 0.0, est,
                         f"the sync check is inconclusive on this clip ({figures}); the sound is used as "
                         "it plays")  # fmt: skip
    early_or_late = f"{abs(offset):.2f} s {'early' if offset > 0 else 'late'}"
    if abs(offset) <= in_sync_s + 1e-9:
        return SyncCheck("in sync", offset, 0.0, est, "")
    band = math.floor(in_sync_s * fps + 1e-9)
    in_sync = est.best_within(-lead, band)
    if est.correlation - in_sync < max(MARGIN, 2 * est.chance_std):
        return SyncCheck("inconclusive", offset, 0.0, est,
                         f"the sound may come {early_or_late} ({figures}), but being in sync matches "
                         f"almost as well (correlation {in_sync:.2f}); the sound is used as it plays. If "
                         "you know the offset, pass --audio-offset SECONDS")  # fmt: skip
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
