"""The video as a player shows it: every turn and mirror of the display matrix, square pixels, and frames
and sound on one timeline whatever the streams' start times and order (generated with PyAV)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from gstalk.errors import GstalkError
from gstalk.media import coverage, decode_audio, probe_video, read_audio, read_frames, read_paired
from gstalk.media.audio import TimedAudio
from gstalk.media.display import _turn_of

from .avclips import pattern, stored_for, write_av

TURNS = [(d, h, v) for d in (0, 90, 180, 270) for h in (False, True) for v in (False, True)]


@pytest.mark.parametrize("turn", TURNS, ids=lambda t: f"{t[0]}{'h' if t[1] else ''}{'v' if t[2] else ''}")
def test_every_turn_and_mirror_is_shown_upright(tmp_path: Path, turn):
    upright = pattern()
    stored = stored_for(upright, *turn)
    path = write_av(tmp_path / "t.mp4", [stored] * 3, 25, None, turn=turn)
    info = probe_video(path)
    assert (info.width, info.height) == (64, 48)
    assert (info.stored_width, info.stored_height) == stored.shape[1::-1]
    frames = [f for _, f in read_frames(path, 25)]
    assert len(frames) == 3 and frames[0].shape == upright.shape
    assert np.abs(frames[1].astype(int) - upright).mean() < 4  # H.264 at crf 12
    assert info.display.mirrored == (turn[1] != turn[2])


def test_display_matrix_follows_ffmpeg_for_odd_angles():
    """fftools rotates by other angles within the frame; a degenerate matrix shows the frame as stored."""
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    one = 1 << 16
    matrix = np.array([c * one, -s * one, 0, s * one, c * one, 0, 0, 0, 1 << 30]).astype(np.int32)
    display = _turn_of(matrix, Fraction(1))  # av_display_rotation_set(30): 30° anticlockwise
    assert display.angle == pytest.approx(330) and not display.transpose
    img = np.zeros((41, 41, 3), np.uint8)
    img[20, 30] = 255
    turned = display.turn(img)
    assert turned.shape == img.shape and turned[20, 20].sum() == 0
    y, x = np.unravel_index(np.argmax(turned[..., 0]), turned.shape[:2])
    assert (y, x) == pytest.approx(
        (20 - 10 * np.sin(np.radians(30)), 20 + 10 * np.cos(np.radians(30))), abs=1
    )
    assert _turn_of(np.zeros(9, np.int32), Fraction(1)).is_identity


def test_non_square_pixels_are_shown_square(tmp_path: Path):
    """A disc stored squeezed (SAR 3:4, 64 × 48 stored, 48 × 48 shown) comes back round."""
    yy, xx = np.mgrid[:48, :64]
    disc = ((((xx - 32) * 0.75) ** 2 + (yy - 24) ** 2) < 15**2).astype(np.uint8) * 255
    stored = np.repeat(disc[..., None], 3, axis=2)
    path = write_av(tmp_path / "a.mp4", [stored] * 2, 25, None, sar=Fraction(3, 4))
    info = probe_video(path)
    assert (info.width, info.height) == (48, 48) and info.display.sar == Fraction(3, 4)
    rgb = next(read_frames(path, 25))[1]
    assert rgb.shape == (48, 48, 3)
    ys, xs = np.nonzero(rgb[..., 0] > 128)
    width, height = np.ptp(xs) + 1, np.ptp(ys) + 1
    assert abs(width / height - 1) < 0.07  # 30 px across: one pixel is 3 %


def _clicks(n_frames: int, fps: float, at: list[int], rate: int = 16_000) -> np.ndarray:
    """Sound with a click at the start of each frame in ``at`` (frame 0 at sample 0)."""
    audio = np.zeros(round(n_frames / fps * rate), np.float32)
    for k in at:
        i = round(k / fps * rate)
        audio[i : i + 40] = 0.6 * np.hanning(40)
    return audio


def _flash_frames(n: int, flashes: list[int]) -> list[np.ndarray]:
    return [np.full((32, 32, 3), 250 if k in flashes else 20, np.uint8) for k in range(n)]


def _click_times(audio: np.ndarray, rate: int = 16_000) -> np.ndarray:
    loud = np.abs(audio) > 0.3
    starts = np.flatnonzero(loud & ~np.r_[False, loud[:-1]])
    return starts / rate


@pytest.mark.parametrize(
    "audio_start,video_start,audio_first",
    [(0.0, 0.0, False), (0.0, 0.0, True), (0.5, 0.0, False), (0.5, 0.0, True), (0.0, 0.3, False),
     (0.0, 0.3, True), (0.24, 0.12, True)],
)  # fmt: skip
def test_frames_and_sound_share_one_timeline(tmp_path: Path, audio_start, video_start, audio_first):
    """A click made with flash frames 10 and 30 is heard at their instants, whichever stream starts first
    or is written first: read_audio's sample 0 is the first shown frame (silence where the sound starts
    later, the sound before that frame left out)."""
    fps, n = 25, 50
    sound = _clicks(n, fps, [10, 30])
    path = write_av(tmp_path / "s.mp4", _flash_frames(n, [10, 30]), fps, sound,
                    audio_start=audio_start, video_start=video_start, audio_first=audio_first)  # fmt: skip
    shown = [k for k, f in read_frames(path, fps) if f.mean() > 128]
    assert shown == [10, 30]
    timed = decode_audio(path)
    assert abs(timed.start - (audio_start - video_start)) < 0.07  # AAC priming may precede the sound
    heard = _click_times(read_audio(path))
    expected = np.array([10, 30]) / fps + audio_start - video_start
    assert len(heard) == 2 and np.abs(heard - expected).max() < 0.5 / fps
    silent = audio_start - video_start
    if silent > 0:
        assert np.abs(read_audio(path)[: round(0.9 * silent * 16000)]).max() < 1e-3


@pytest.mark.parametrize("audio_seconds", [1.2, 2.0, 2.6])
def test_coverage_keeps_the_frames_with_sound(tmp_path: Path, audio_seconds):
    """Sound shorter than the picture drops the frames past its end; longer keeps every frame."""
    fps, n = 25, 50
    sound = _clicks(round(audio_seconds * fps), fps, [5])  # at 0.2 s of the sound: 0.4 s, frame 10
    path = write_av(tmp_path / "c.mp4", _flash_frames(n, [10]), fps, sound, audio_start=0.2)
    paired = read_paired(path, fps)
    cover = paired.coverage
    assert cover.total == n
    # the sound starts at 0.2 s, frame 5; the AAC encoder's 1024 priming samples, which this muxer leaves
    # in (no edit list trims them after an empty edit), are placed 64 ms before that, as players place them
    assert 3 <= cover.first <= 5
    assert cover.stop == min(n, round((0.2 + audio_seconds) * fps))
    assert len(paired.frames) == cover.kept and paired.audio.size == round(cover.kept / fps * 16000)
    flash = 10 - cover.first
    assert paired.frames[flash].mean() > 128 and paired.frames[flash - 1].mean() < 128
    assert abs(_click_times(paired.audio)[0] - flash / fps) < 0.5 / fps
    assert (cover.kept < n) == ("dropped" in cover.describe())


def test_coverage_is_exact_on_the_frame_grid():
    fps = 25.0
    audio = TimedAudio(np.zeros(16000, np.float32), start=0.48)  # 0.48 s to 1.48 s
    c = coverage(audio, 100, fps)
    assert (c.first, c.stop, c.kept) == (12, 37, 25)
    early = coverage(TimedAudio(np.zeros(16000 * 10, np.float32), start=-1.0), 100, fps)
    assert (early.first, early.stop) == (0, 100) and early.complete
    none = coverage(TimedAudio(np.zeros(160, np.float32), start=5.0), 100, fps)
    assert none.kept == 0


def test_a_gap_in_the_sound_stays_a_gap(tmp_path: Path):
    """Timestamps that jump 0.4 s are silence there, not sound pulled early."""
    fps, n = 25, 50
    sound = _clicks(40, fps, [5, 30])  # clicks at 0.2 s and 1.2 s of the sound's own samples
    path = write_av(tmp_path / "g.mp4", _flash_frames(n, []), fps, sound, audio_gap=(1.024, 0.4))
    heard = _click_times(read_audio(path))
    assert np.abs(heard - [0.2, 1.6]).max() < 0.5 / fps


def test_audio_files_and_cover_pictures_start_at_their_first_sample(tmp_path: Path):
    """An audio file has no picture to align to; an mp3-like file's cover picture is not its video."""
    import soundfile

    sound = _clicks(25, 25, [5])
    soundfile.write(tmp_path / "a.wav", sound, 16000)
    assert decode_audio(tmp_path / "a.wav").start == 0
    assert np.abs(_click_times(read_audio(tmp_path / "a.wav")) - 0.2).max() < 1e-3
    with pytest.raises(GstalkError, match="has no audio track"):
        read_paired(write_av(tmp_path / "mute.mp4", _flash_frames(5, []), 25, None), 25)
