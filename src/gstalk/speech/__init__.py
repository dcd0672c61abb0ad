"""Speech → motion: the feature kinds (Whisper's encoder through CTranslate2, log-mel, a speech-model
folder), each owning its windows, lookahead, history, silence and streaming margin; the lower face's
motion basis and the audio → motion network; and the speaker-independent motion prior."""

from .features import COMPUTABLE_FEATURES, build_spec, check_computable, feature_kind, silence_features
from .kind import FeatureKind

__all__ = [
    "COMPUTABLE_FEATURES",
    "FeatureKind",
    "build_spec",
    "check_computable",
    "feature_kind",
    "silence_features",
]
