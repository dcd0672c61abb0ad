"""Decoding by timestamps (variable frame rate), audio resampling, muxed encoding, and bad files."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile

from gstalk.errors import GstalkError
from gstalk.media import probe_video, read_audio, read_frames
from gstalk.media.audio import is_silent
from gstalk.media.encode import write_video


def write_vfr(path: Path, times_ms: list[int]) -> None:
    """A lossless video whose frame k is solid grey level 20 * k, shown from times_ms[k]."""
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("ffv1", rate=25)
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv444p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for k, t in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 20 * k, np.uint8), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_variable_frame_rate_is_resampled_by_timestamp(tmp_path):
    # irregular source frames; output at 25 fps (every 40 ms) shows whatever is on screen at k * 40 ms
    times = [0, 30, 50, 120, 130, 200, 290]
    path = tmp_path / "vfr.mkv"
    write_vfr(path, times)
    got = [(k, int(f[0, 0, 0]) // 20) for k, f in read_frames(path, fps=25)]
    expected_source = []
    for k in range(len(got)):
        t = k * 40
        expected_source.append(max(i for i, s in enumerate(times) if s <= t + 1e-6))
    assert [k for k, _ in got] == list(range(len(got)))
    assert [s for _, s in got] == expected_source
    assert len(got) >= 8  # 0..280 ms at least


def test_constant_rate_resampling_counts(tmp_path):
    path = tmp_path / "c.mp4"
    frames = (np.full((32, 32, 3), 10 * i, np.uint8) for i in range(50))  # 2 s at 25 fps
    write_video(path, frames, 25, np.zeros(32000, np.float32) + 0.01, 16000)
    assert sum(1 for _ in read_frames(path, 25)) == 50
    assert sum(1 for _ in read_frames(path, 50)) == 100
    assert sum(1 for _ in read_frames(path, 10)) == 20
    info = probe_video(path)
    assert info.has_audio and info.audio_rate == 16000 and info.frames_at(25) == 50


def test_audio_is_resampled_to_16k_mono(tmp_path):
    rate = 44100
    t = np.arange(int(1.5 * rate)) / rate
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 440 * t)], 1)
    soundfile.write(tmp_path / "a.wav", stereo, rate)
    audio = read_audio(tmp_path / "a.wav")
    assert audio.dtype == np.float32
    assert abs(audio.size - 1.5 * 16000) < 200
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * 16000 / audio.size - 440) < 2
    assert not is_silent(audio)
    assert is_silent(np.zeros(16000, np.float32))


def test_written_video_carries_its_audio(tmp_path):
    tone = (0.3 * np.sin(2 * np.pi * 300 * np.arange(32000) / 16000)).astype(np.float32)
    path = tmp_path / "muxed.mp4"
    n = write_video(path, (np.zeros((48, 64, 3), np.uint8) for _ in range(50)), 25, tone, 16000)
    assert n == 50
    back = read_audio(path)
    assert abs(back.size - 32000) < 2048  # AAC pads up to one frame of 1024 samples at each end
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.audio[0].codec_context.name == "aac"


def test_bad_files_get_clear_errors(tmp_path):
    with pytest.raises(GstalkError, match="no such file"):
        probe_video(tmp_path / "missing.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video")
    with pytest.raises(GstalkError, match="not a readable video"):
        probe_video(text)
    with pytest.raises(GstalkError, match="no such audio file"):
        read_audio(tmp_path / "missing.wav")
    silent_video = tmp_path / "novoice.mp4"
    write_video(silent_video, (np.zeros((32, 32, 3), np.uint8) for _ in range(5)), 25, None)
    with pytest.raises(GstalkError, match="no audio track"):
        read_audio(silent_video)
    broken = tmp_path / "broken.wav"  # a float WAV with NaN and infinite samples
    samples = np.sin(np.arange(16000) / 10).astype(np.float32)
    samples[100:110], samples[200], samples[300] = np.nan, np.inf, -np.inf
    soundfile.write(broken, samples, 16000, subtype="FLOAT")
    with pytest.raises(GstalkError, match="12 samples that are not numbers"):
        read_audio(broken)
    long = tmp_path / "long.wav"
    soundfile.write(long, np.zeros(16000 * 3, np.float32), 16000)
    with pytest.raises(GstalkError, match="longer than the limit"):
        read_audio(long, max_seconds=2)


def test_truncated_video_is_reported(tmp_path):
    path = tmp_path / "full.mp4"
    rng = np.random.default_rng(0)
    write_video(
        path,
        (rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(60)),
        25,
        np.zeros(16000, np.float32),
    )
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(GstalkError, match=r"corrupt|truncated|not a readable"):
        probe_video(cut)
        list(read_frames(cut, 25))


def test_muxed_audio_starts_with_the_video(tmp_path):
    """A click written at 0.5 s is read back at 0.5 s: no encoder priming delay slips in."""
    audio = np.zeros(32000, np.float32)
    audio[8000:8080] = np.hanning(80) * np.sin(np.arange(80) * 1.3)
    path = tmp_path / "click.mp4"
    write_video(path, (np.zeros((32, 32, 3), np.uint8) for _ in range(50)), 25, audio, 16000)
    back = read_audio(path)
    lag = np.argmax(np.correlate(back[:16000], audio[:16000], mode="full")) - (16000 - 1)
    assert abs(lag) <= 16  # within 1 ms
