"""Audio features through the production path (``speech.build_spec`` and ``speech.feature_kind``, as
prepare, render and streaming call them): alignment to frames, loudness normalisation, and the real
HuBERT / wav2vec 2.0 loading code exercised with tiny randomly initialised models saved to disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gstalk.errors import GstalkError
from gstalk.speech import build_spec, feature_kind
from gstalk.speech.kind import frame_windows
from gstalk.speech.logmel import log_mel
from gstalk.speech.loudness import normalise_loudness


def features(audio, n_video, fps, kind="logmel", model_path=None):
    """(n_video, W, C) features of ``audio`` as a dataset prepared with ``kind`` would hold them."""
    spec = build_spec(kind, speech_model=model_path)
    return feature_kind(spec, model_path).compute(audio, n_video, fps), spec


def test_windows_are_centred_on_each_video_frame():
    frames = np.arange(100, dtype=np.float32)[:, None]  # feature m carries the value m, at 100 Hz
    win = frame_windows(frames, 100.0, n_video=10, fps=25, window=16)
    assert win.shape == (10, 16, 1)
    # video frame 5 is at 0.2 s = feature 20: the window covers 12..27
    assert win[5, :, 0].tolist() == list(range(12, 28))
    assert win[0, :, 0].tolist() == [0] * 8 + list(range(8))  # edge frames repeat at the start


def test_an_onset_lands_on_the_right_frame():
    audio = np.zeros(16000 * 2, np.float32)
    audio[16000:] = np.sin(2 * np.pi * 300 * np.arange(16000) / 16000)  # sound starts at 1.0 s = frame 25
    feats = features(audio, n_video=50, fps=25)[0].astype(np.float32)
    centre = feats[:, 7:9].mean((1, 2))  # the middle of each window
    onset = int(np.argmax(np.diff(centre))) + 1
    assert onset in (25, 26)


def test_loudness_is_normalised():
    rng = np.random.default_rng(0)
    speech = rng.standard_normal(16000).astype(np.float32) * 0.1
    quiet, loud = normalise_loudness(0.01 * speech), normalise_loudness(3 * speech)
    assert np.allclose(quiet, loud, rtol=1e-4, atol=1e-6)
    a = features(0.02 * speech, 25, 25)[0]
    b = features(speech, 25, 25)[0]
    assert np.allclose(a.astype(np.float32), b.astype(np.float32), atol=0.05)


@pytest.fixture(scope="module", params=["hubert", "wav2vec2"])
def tiny_speech_model(request, tmp_path_factory) -> tuple[str, Path]:
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(0)
    common = dict(
        hidden_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(16, 16, 16),
        conv_stride=(5, 4, 16),
        conv_kernel=(10, 4, 16),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    if request.param == "hubert":
        model = transformers.HubertModel(transformers.HubertConfig(**common))
    else:
        model = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**common))
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path)
    return request.param, path


def test_speech_model_features_from_a_local_folder(tiny_speech_model):
    kind, path = tiny_speech_model
    rng = np.random.default_rng(1)
    audio = rng.standard_normal(16000 * 3).astype(np.float32) * 0.1
    feats, spec = features(audio, n_video=75, fps=25, kind=kind, model_path=path)
    assert spec.features == kind and spec.feature_rate_hz == 50.0  # stride 5 * 4 * 16 = 320 samples
    assert feats.shape == (75, 8, 24)  # 160 ms of 20 ms frames, hidden size 24
    assert np.isfinite(feats.astype(np.float32)).all()
    # the same audio gives the same features; different audio does not
    again = features(audio, 75, 25, kind=kind, model_path=path)[0]
    other = features(audio[::-1].copy(), 75, 25, kind=kind, model_path=path)[0]
    assert np.array_equal(feats, again) and not np.array_equal(feats, other)
    # a dataset made with this model needs its folder to compute features for new audio
    with pytest.raises(GstalkError, match="pass --speech-model"):
        feature_kind(spec)


def test_speech_model_errors_name_the_fix(tmp_path: Path):
    with pytest.raises(GstalkError, match="needs --speech-model"):
        features(np.zeros(16000, np.float32), 25, 25, kind="hubert")
    with pytest.raises(GstalkError, match=r"config.json missing"):
        features(np.zeros(16000, np.float32), 25, 25, kind="hubert", model_path=tmp_path)


def _tone_mix(seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.2 * np.sin(2 * np.pi * 120 * t) + 0.1 * np.sin(2 * np.pi * 1500 * t)).astype(np.float32)


def test_augmentation_changes_speed_and_band_as_drawn():
    from gstalk.media.augment import Augmentation, apply, random_augmentation

    audio = _tone_mix()
    rng = np.random.default_rng(0)
    faster = apply(audio, Augmentation(speed=1.1), rng)
    assert abs(len(faster) - len(audio) / 1.1) < 20
    no_bass = apply(audio, Augmentation(highpass_hz=400), rng)
    spectrum = np.abs(np.fft.rfft(no_bass))
    freqs = np.fft.rfftfreq(len(no_bass), 1 / 16000)
    assert spectrum[np.argmin(np.abs(freqs - 120))] < 0.05 * spectrum[np.argmin(np.abs(freqs - 1500))]
    noisy = apply(audio, Augmentation(snr_db=10.0, noise="pink"), rng)
    snr = 10 * np.log10(np.mean(audio**2) / np.mean((noisy - audio) ** 2))
    assert abs(snr - 10) < 0.5
    wet = apply(audio, Augmentation(rt60=0.5), rng)
    assert len(wet) == len(audio) and not np.allclose(wet, audio)
    assert random_augmentation(np.random.default_rng(3)) == random_augmentation(np.random.default_rng(3))


def test_vocal_tract_warp_moves_formants_up():
    t = np.arange(16000) / 16000
    vowel = np.sin(2 * np.pi * 800 * t).astype(np.float32)
    base, warped = log_mel(vowel), log_mel(vowel, warp=1.15)
    assert np.argmax(warped.mean(0)) > np.argmax(base.mean(0))


def test_utterance_normalisation_removes_the_channel():
    """The same speech through another microphone (a fixed spectral tilt and gain) gives the same
    features once each channel's utterance mean and variance are removed."""
    from gstalk.data import AudioSpec

    rng = np.random.default_rng(1)
    speech = (rng.standard_normal(32000) * np.repeat(rng.random(200), 160)).astype(np.float32)
    kind = feature_kind(AudioSpec("logmel", 100.0, 16, 80, normalisation="utterance"))
    a = kind.finish(log_mel(speech))
    b = kind.finish(log_mel(speech) + np.linspace(-2, 1, 80)[None] + 0.7)
    assert np.allclose(a, b, atol=1e-4)
    assert kind.silence().shape == (16, 80) and not kind.silence().any()
