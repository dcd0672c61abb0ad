"""``prepare`` on the inputs that used to give wrong data silently: phone rotation, non-square pixels, sound
shorter than the picture, streams that start apart, a clip out of sync, and a small face.

The shared cases (../shared/data/cases, each a copy of the shared May clip with one property changed) are
checked against the May clip itself; the generated ones (PyAV, from the demo clip) cover the rest of the
kind and run everywhere.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from gstalk.cli import main
from gstalk.config import PrepareConfig
from gstalk.data import load_dataset
from gstalk.errors import GstalkError
from gstalk.media import decode_audio, read_audio, read_frames
from gstalk.prepare import prepare

from .avclips import stored_for, write_av
from .conftest import shared_file

FPS = 25


def _prepare(video: Path, out: Path, **kw) -> Path:
    return prepare(PrepareConfig(video=video, out=out, size=kw.pop("size", 64), progress=False, **kw))


def _summary(ds: Path) -> dict:
    return json.loads((ds / "summary.json").read_text())


def _aspect(ds: Path) -> float:
    """Median face width over height in the dataset's frames: outer eye corners against brow-to-chin."""
    lm = load_dataset(ds).tracks.landmarks2d
    width = np.linalg.norm(lm[:, 33] - lm[:, 263], axis=1)
    height = np.linalg.norm(lm[:, 10] - lm[:, 152], axis=1)
    return float(np.median(width / height))


def _upright(ds: Path) -> bool:
    """Eyes above the nose above the mouth above the chin, and the head's roll under 20°."""
    lm = load_dataset(ds).tracks.landmarks2d
    y = np.median(lm[..., 1], axis=0)
    roll = np.abs(lm[:, 33, 1] - lm[:, 263, 1]) / np.linalg.norm(lm[:, 33] - lm[:, 263], axis=1)
    return bool(y[159] < y[1] < y[13] < y[152] and np.median(roll) < np.sin(np.radians(20)))


def _lag_frames(a: np.ndarray, b: np.ndarray) -> float:
    """How many frames (at 25 fps) ``a`` lags ``b``, by cross-correlation of their first 3 s."""
    n = min(3 * 16000, a.size, b.size)
    a, b = a[:n].astype(np.float64), b[:n].astype(np.float64)
    corr = np.correlate(a, b[1000 : n - 1000], mode="valid")
    return (int(np.argmax(corr)) - 1000) / 640


@pytest.fixture(scope="module")
def may(tmp_path_factory) -> Path:
    video = shared_file("data", "video", "may_5s_512_25fps.mp4")
    return _prepare(video, tmp_path_factory.mktemp("may") / "ds")


# --- the shared cases ---------------------------------------------------------------------------------
@pytest.mark.shared_data
def test_phone_clip_with_a_rotation_tag_is_prepared_upright(tmp_path: Path, may: Path):
    ds = _prepare(shared_file("data", "cases", "rot90_phone.mp4"), tmp_path / "rot")
    assert _upright(ds) and _upright(may)
    same = load_dataset(may).tracks.landmarks2d
    assert np.median(np.abs(load_dataset(ds).tracks.landmarks2d - same)) < 1.0  # px at 64²: the same face
    assert any("display matrix" in n for n in _summary(ds)["notes"])


@pytest.mark.shared_data
def test_anamorphic_clip_keeps_the_face_shape(tmp_path: Path, may: Path):
    ds = _prepare(shared_file("data", "cases", "anamorphic_641x479.mp4"), tmp_path / "ana")
    assert abs(_aspect(ds) / _aspect(may) - 1) < 0.02
    assert _summary(ds)["source"]["shown_size"] == [479, 479]


@pytest.mark.shared_data
def test_sound_shorter_than_the_picture_is_refused_or_trimmed(tmp_path: Path, may: Path):
    video = shared_file("data", "cases", "audio_2s_of_5s.mp4")
    with pytest.raises(GstalkError, match=r"only 2\.0 s of the 5\.0 s of video .* has sound under it"):
        _prepare(video, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    ds = _prepare(video, tmp_path / "short", min_seconds=1.0)
    summary = _summary(ds)
    assert load_dataset(ds).n_frames == 50 and summary["coverage"]["frames_kept"] == 50
    assert any("50 of 125 kept" in w for w in summary["warnings"])
    lag = _lag_frames(read_audio(ds / "audio.wav"), read_audio(may / "audio.wav"))
    assert abs(lag) < 1


@pytest.mark.shared_data
def test_sound_that_starts_late_stays_with_its_frames(tmp_path: Path, may: Path):
    ds = _prepare(shared_file("data", "cases", "audio_starts_0.5s_in_sync.mp4"), tmp_path / "late")
    summary = _summary(ds)
    first = summary["coverage"]["first_frame"]
    assert first == 12 and load_dataset(ds).n_frames == 113  # the sound starts at 0.478 s
    # dataset frame 0 is the clip's frame 12, and the sound under it is the May clip's at 12 / 25 s
    assert (
        np.abs(load_dataset(ds).tracks.landmarks2d[0] - load_dataset(may).tracks.landmarks2d[first]).mean()
        < 1
    )
    original = read_audio(may / "audio.wav")[first * 640 :]
    assert abs(_lag_frames(read_audio(ds / "audio.wav"), original)) < 1
    assert summary["sync"]["verdict"] == "in sync" and summary["sync"]["shift_s"] == 0


# --- generated: the rest of the kind -------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(demo_clip: Path) -> tuple[list[np.ndarray], np.ndarray]:
    frames = [f for _, f in read_frames(demo_clip, FPS)]
    return frames, read_audio(demo_clip)


def test_turned_mirrored_clip_with_late_sound_written_first(tmp_path: Path, demo, demo_dataset: Path):
    """A phone clip turned 270° and mirrored, its sound stream first and starting 0.3 s late: prepared
    upright, the same face as the plain clip, the frames without sound dropped, the sound in step."""
    frames, audio = demo
    stored = [stored_for(cv2.resize(f, (128, 128)), 270, True, False) for f in frames]
    video = write_av(tmp_path / "phone.mp4", stored, FPS, audio[round(0.3 * 16000) :],
                     audio_start=0.3, audio_first=True, turn=(270, True, False))  # fmt: skip
    ds = _prepare(video, tmp_path / "ds", size=128)
    summary = _summary(ds)
    assert _upright(ds)
    first = summary["coverage"]["first_frame"]
    # the sound starts at 0.3 s, frame 7.5; the AAC encoder's priming samples, which this muxer leaves in
    # after an empty edit, are placed up to 64 ms before that, as a player places them
    assert first == math.ceil((decode_audio(video).start - 0.5 / FPS) * FPS) and 6 <= first <= 8
    plain = load_dataset(demo_dataset).tracks.landmarks2d  # the demo clip prepared at 128²
    assert np.median(np.abs(load_dataset(ds).tracks.landmarks2d - plain[first:])) < 1.5
    lag = _lag_frames(read_audio(ds / "audio.wav"), audio[first * 640 :])
    assert abs(lag) < 1 and summary["sync"]["verdict"] == "in sync"


def test_out_of_sync_clip_is_corrected(tmp_path: Path, demo):
    """The sound 0.24 s early against the picture (a badly exported clip): prepare finds it and delays the
    sound by as much, within a frame; with --max-sync-correction 0 it only warns."""
    frames, audio = demo
    early = audio[6 * 640 :]  # the sound of frame 6 plays with frame 0
    video = write_av(tmp_path / "early.mp4", [cv2.resize(f, (128, 128)) for f in frames], FPS, early)
    ds = _prepare(video, tmp_path / "ds", size=64)
    sync = _summary(ds)["sync"]
    assert sync["verdict"] == "corrected" and abs(sync["shift_s"] - 6 / FPS) <= 1 / FPS + 1e-6
    assert (
        abs(_lag_frames(read_audio(ds / "audio.wav"), audio[_summary(ds)["coverage"]["first_frame"] * 640 :]))
        <= 1
    )
    warned = _summary(_prepare(video, tmp_path / "ds0", size=64, max_sync_correction=0.0))
    assert warned["sync"]["verdict"] == "out of sync" and any("out of sync" in w for w in warned["warnings"])


def test_small_face_is_reported_as_enlarged(tmp_path: Path, demo):
    """The demo face in a corner of a 320×240 frame at non-square pixels (SAR 4:3, stored 240×240), its
    video stream starting 0.2 s after its sound: the crop is enlarged more than 2× to 512², and prepare
    says renders will be soft."""
    frames, audio = demo
    canvas = []
    for f in frames:
        img = np.full((240, 320, 3), 40, np.uint8)
        img[10:170, 10:170] = cv2.resize(f, (160, 160), interpolation=cv2.INTER_AREA)
        canvas.append(cv2.resize(img, (240, 240), interpolation=cv2.INTER_AREA))  # stored squeezed
    before = np.zeros(round(0.2 * 16000), np.float32)  # sound before the first frame: left out
    video = write_av(tmp_path / "small.mp4", canvas, FPS, np.r_[before, audio], sar=Fraction(4, 3),
                     video_start=0.2)  # fmt: skip
    ds = _prepare(video, tmp_path / "ds", size=512)
    summary = _summary(ds)
    assert summary["source"]["shown_size"] == [320, 240]
    assert summary["coverage"]["frames_kept"] == 100 and summary["sync"]["verdict"] == "in sync"
    assert summary["face_upscale"] > 2 and any("renders will be soft" in w for w in summary["warnings"])
    assert summary["face_upscale"] == pytest.approx(512 / summary["crop"]["side"], rel=1e-3)


def test_check_reports_the_sync_coverage_and_scale(capsys, demo_dataset: Path):
    """`gstalk check` says what prepare found: the offset and verdict, and the crop's scale."""
    assert main(["check", "--dataset", str(demo_dataset)]) == 0
    out = capsys.readouterr().out
    sync = _summary(demo_dataset)["sync"]
    assert (
        "is sound" in out and f"sync: audio–video offset {sync['offset_s']:+.2f} s, {sync['verdict']}" in out
    )
    assert "face crop" in out
    assert any("face crop is" in n for n in _summary(demo_dataset)["notes"])


@pytest.mark.shared_data
def test_digital_silence_is_read_as_silence():
    """The speech with 2 s of digital zeros (3 s to 5 s): the reader keeps them at their place, so the
    features there are those of silence (whether the mouth then closes is the render's concern)."""
    from gstalk.media.audio import speech_energy

    audio = read_audio(shared_file("data", "cases", "speech_with_2s_digital_silence.wav"))
    assert np.abs(audio[3 * 16000 + 160 : 5 * 16000 - 160]).max() <= 2 / 32768  # 16-bit zeros
    assert np.abs(audio[: 3 * 16000]).max() > 0.05 and np.abs(audio[5 * 16000 :]).max() > 0.05
    energy = speech_energy(audio, len(audio) // 640, FPS)
    assert (energy[76:124] == energy.min()).all()  # floored: 50 dB below the loudest frame
