"""The embedded default subject and the end-to-end demo."""

from .run import run_demo
from .subject import make_demo_subject, speech_like_audio

__all__ = ["make_demo_subject", "run_demo", "speech_like_audio"]
