"""Speech features from a HuBERT or wav2vec 2.0 model in a local folder (``transformers``
``save_pretrained`` layout; never downloaded): the last hidden layer at the model's own rate (50 Hz for
the standard models), each video frame taking the window centred on it."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import GstalkError
from ..media.audio import AUDIO_RATE
from .kind import WindowedKind


class SpeechModel:
    """A HuBERT or wav2vec 2.0 model from a local folder (``save_pretrained`` layout), on CPU or CUDA."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        path = Path(path)
        if not (path / "config.json").is_file():
            raise GstalkError(
                f"no speech model at {path} (config.json missing)",
                "pass a folder saved with transformers' save_pretrained (e.g. a local copy of "
                "facebook/hubert-large-ls960-ft); gstalk never downloads models",
            )
        try:
            import transformers
        except ImportError as err:
            raise GstalkError("transformers is not installed", "pip install -e '.[speech]'") from err
        import torch

        try:
            self.model = (
                transformers.AutoModel.from_pretrained(str(path), local_files_only=True).eval().to(device)
            )
        except (OSError, ValueError) as err:
            raise GstalkError(
                f"could not load the speech model at {path}: {err}", "check the folder"
            ) from err
        self.kind = self.model.config.model_type
        self.device = device
        self._torch = torch
        self.stride = int(np.prod(self.model.config.conv_stride))

    @property
    def rate_hz(self) -> float:
        return AUDIO_RATE / self.stride

    @property
    def dim(self) -> int:
        """Channels of the last hidden layer."""
        return int(self.model.config.hidden_size)

    def __call__(self, audio: np.ndarray, chunk_seconds: float = 20.0) -> np.ndarray:
        """(M, C) float32 last-layer features of 16 kHz mono ``audio`` at ``rate_hz``; long audio runs in
        chunks to bound memory."""
        torch = self._torch
        audio = (audio - audio.mean()) / (audio.std() + 1e-7)  # the processors' zero-mean unit-variance input
        chunk = int(chunk_seconds * AUDIO_RATE) // self.stride * self.stride
        outs = []
        with torch.inference_mode():
            for start in range(0, audio.size, chunk):
                piece = audio[start : start + chunk]
                if piece.size < self.stride * 2:
                    piece = np.pad(piece, (0, self.stride * 2 - piece.size))
                x = torch.from_numpy(np.ascontiguousarray(piece, dtype=np.float32))[None].to(self.device)
                outs.append(self.model(x).last_hidden_state[0].float().cpu().numpy())
        feats = np.concatenate(outs)
        expected = int(np.ceil(audio.size / self.stride))
        if feats.shape[0] < expected:
            feats = np.pad(feats, ((0, expected - feats.shape[0]), (0, 0)), mode="edge")
        return feats[:expected]


@lru_cache(maxsize=2)
def speech_model(path: str | Path, device: str = "cpu") -> SpeechModel:
    """The HuBERT / wav2vec 2.0 model in ``path``, loaded once per process."""
    return SpeechModel(path, device)


class FolderKind(WindowedKind):
    """``hubert`` / ``wav2vec2``: the last hidden layer of the model in ``speech_model``, loudness-normalised
    first. Raises :class:`GstalkError` when the folder's model gives other channels or another rate than
    the spec's."""

    def model(self) -> SpeechModel:
        if self.speech_model is None:
            raise GstalkError(
                f"this dataset's audio features come from a {self.spec.features} model",
                "pass --speech-model with the same model folder that prepared it",
            )
        return speech_model(self.speech_model, self.device)

    def frames(self, audio: np.ndarray, warp: float = 1.0) -> np.ndarray:
        model = self.model()
        frames = model(np.asarray(audio, np.float32))
        channels = self.spec.dim // 2 if self.spec.deltas else self.spec.dim
        if frames.shape[1] != channels or abs(model.rate_hz - self.spec.feature_rate_hz) > 1e-6:
            raise GstalkError(
                f"the speech model gives {frames.shape[1]} channels at {model.rate_hz:g} Hz; the dataset was "
                f"prepared with {channels} at {self.spec.feature_rate_hz:g} Hz",
                "pass the same --speech-model that prepared the dataset",
            )
        return frames
