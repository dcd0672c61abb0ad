"""The embedded default subject and the end-to-end demo."""

from .subject import make_demo_subject, speech_like_audio

__all__ = ["make_demo_subject", "speech_like_audio"]
