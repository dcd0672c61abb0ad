"""The feature kinds by name: :func:`feature_kind` gives the one a dataset's ``AudioSpec`` names (after
checking that new audio can be turned into it), :func:`build_spec` the spec of a new dataset's features."""

from __future__ import annotations

from pathlib import Path

from ..data.manifest import AudioSpec
from ..errors import GstalkError
from .kind import FeatureKind, window_frames

#: Audio feature kinds that can be computed for new audio (a dataset may carry others, e.g. in tests).
COMPUTABLE_FEATURES = ("whisper", "logmel", "hubert", "wav2vec2")


def check_computable(spec: AudioSpec, speech_model: Path | None = None) -> None:
    """Raise a :class:`GstalkError` naming the fix when features of ``spec``'s kind cannot be computed for
    new audio (an unknown kind, or a model folder that is needed and not given)."""
    if spec.features not in COMPUTABLE_FEATURES:
        raise GstalkError(
            f"this dataset carries {spec.features!r} audio features, which new audio cannot be turned into",
            "prepare the dataset with whisper, logmel, hubert or wav2vec2 features",
        )
    if spec.features in ("hubert", "wav2vec2") and speech_model is None:
        raise GstalkError(
            f"this dataset's audio features come from a {spec.features} model",
            "pass --speech-model with the same model folder that prepared it",
        )
    folder = spec.features == "whisper" and spec.whisper is not None and spec.whisper.from_folder
    if folder and speech_model is None:
        raise GstalkError(
            f"this dataset's audio features come from the Whisper model in folder {spec.whisper.model}",
            "pass --speech-model with the same folder that prepared it",
        )


def feature_kind(spec: AudioSpec, speech_model: str | Path | None = None, device: str = "cpu") -> FeatureKind:
    """The :class:`FeatureKind` that computes ``spec``'s features for new audio (``speech_model``: the
    folder of the model, when the kind needs one). Raises :class:`GstalkError` as
    :func:`check_computable`."""
    speech_model = Path(speech_model) if speech_model is not None else None
    check_computable(spec, speech_model)
    if spec.features == "whisper":
        from .whisper import WhisperKind

        return WhisperKind(spec, speech_model, device)
    if spec.features == "logmel":
        from .logmel import LogMelKind

        return LogMelKind(spec, speech_model, device)
    from .folder import FolderKind

    return FolderKind(spec, speech_model, device)


def silence_features(spec: AudioSpec, speech_model: str | Path | None = None, device: str = "cpu"):
    """(window, dim) float32 features of silence for ``spec``, or None when they cannot be computed here
    (a kind that needs a model folder not given, or a kind new audio cannot be turned into)."""
    try:
        return feature_kind(spec, speech_model, device).silence()
    except GstalkError:
        return None


def build_spec(
    kind: str,
    whisper=None,
    speech_model: Path | None = None,
    normalisation: str = "none",
    deltas: bool = False,
    device: str = "cpu",
    window_ms: float = 160.0,
) -> AudioSpec:
    """The spec of a new dataset's features: ``whisper`` (with ``whisper``, a ``config.WhisperConfig``),
    ``logmel`` (80 bands at 100 Hz in windows of ``window_ms``), or ``hubert`` / ``wav2vec2`` (the model in
    ``speech_model``). Raises :class:`GstalkError` for an unknown kind, missing weights, or options the
    kind does not take."""
    if kind == "whisper":
        if normalisation != "none" or deltas:
            raise GstalkError("whisper features take no --audio-normalisation or --audio-deltas",
                              "leave them at their defaults")  # fmt: skip
        from ..config import WhisperConfig
        from .whisper import whisper_spec

        return whisper_spec(whisper or WhisperConfig(), speech_model, device)
    if kind == "logmel":
        from .logmel import MEL_BANDS, MEL_HOP

        rate, dim = 16_000 / MEL_HOP, MEL_BANDS
    elif kind in ("hubert", "wav2vec2"):
        if speech_model is None:
            raise GstalkError(f"--audio-features {kind} needs --speech-model PATH", "or use whisper")
        from .folder import speech_model as load_model

        model = load_model(speech_model, device)
        rate, dim = model.rate_hz, model.dim
    else:
        raise GstalkError(f"unknown audio feature kind {kind!r}", "use whisper, logmel, hubert, wav2vec2")
    window = window_frames(window_ms, rate)
    dim *= 2 if deltas else 1
    return AudioSpec(kind, float(rate), window, dim, normalisation=normalisation, deltas=deltas)


__all__ = ["COMPUTABLE_FEATURES", "build_spec", "check_computable", "feature_kind", "silence_features"]
